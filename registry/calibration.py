"""Performance-estimation maps kept with a model version.

A classifier gets a **calibration map** of its probabilities (Platt scaling
or isotonic regression per class, one-vs-rest), fitted on rows the model was
not fitted on (the holdout), with its expected calibration error (ECE,
cross-fitted on two halves of those rows) recorded. A regressor gets a
**direct loss estimator** (DLE, as in NannyML): a small
``HistGradientBoostingRegressor`` of the model's absolute error from its
inputs and prediction, fitted on the holdout.

Both are stored as a JSON object in the version's profile (key
``estimation``): the calibration map as plain numbers (thresholds as arrays),
the DLE as a skops file (base64) that passes the same audit and checksum as
every artifact (:mod:`driftline.registry.artifacts`). The payload's SHA-256 (canonical
JSON) is recorded in the version's tags (``estimation_sha256``);
:func:`verify` refuses a payload that does not match it. Nothing is
unpickled.

Examples
--------
>>> import numpy as np
>>> from sklearn.linear_model import LogisticRegression
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(400, 2)); y = (X[:, 0] + rng.normal(size=400) > 0).astype(int)
>>> model = LogisticRegression().fit(X[:200], y[:200])
>>> payload = fit_estimation(model, X[200:], y[200:], task="classification")
>>> payload["kind"], payload["method"], payload["classes"], 0 <= payload["ece"] < 0.2
('calibration', 'sigmoid', ['0', '1'], True)
>>> cal = load(payload, payload_sha256(payload))
>>> cal.calibrate(np.array([[0.5, 0.5], [0.1, 0.9]])).shape
(2, 2)
>>> payload["maps"]["1"]["a"] = 0.0
>>> load(payload, cal.sha256)
Traceback (most recent call last):
...
driftline.registry.errors.ArtifactIntegrityError: estimation map checksum mismatch: ...
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any, Sequence

import numpy as np

from . import artifacts
from .errors import ArtifactError, ArtifactIntegrityError

__all__ = ["fit_estimation", "load", "payload_sha256", "ClassCalibration", "LossEstimator", "expected_calibration_error",
           "TAG", "ISOTONIC_MIN_ROWS"]

#: Version tag holding the payload's SHA-256.
TAG = "estimation_sha256"
#: Isotonic regression needs many rows; below this, Platt scaling is used.
ISOTONIC_MIN_ROWS = 1000
_MIN_ROWS = 20
_EPS = 1e-6


def class_text(value: Any) -> str:
    """A class label as the event contract spells it (``True`` -> ``"true"``, ``1.0`` -> ``"1"``)."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def payload_sha256(payload: dict) -> str:
    """SHA-256 of the canonical JSON of ``payload``."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def expected_calibration_error(p_true_class: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """ECE of top-label confidences: the bin-weighted gap between mean
    confidence and accuracy, over ``bins`` equal-width bins.

    >>> round(expected_calibration_error(np.array([0.9, 0.9, 0.6, 0.6]), np.array([1, 1, 1, 0])), 3)
    0.1
    """
    conf = np.asarray(p_true_class, dtype=float)
    hit = np.asarray(correct, dtype=float)
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    total = 0.0
    for b in np.unique(idx):
        sel = idx == b
        total += sel.sum() * abs(conf[sel].mean() - hit[sel].mean())
    return float(total / max(1, conf.size))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def _fit_map(p: np.ndarray, hit: np.ndarray, method: str) -> dict:
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, hit)
        return {"x": [float(v) for v in iso.X_thresholds_], "y": [float(v) for v in iso.y_thresholds_]}
    from sklearn.linear_model import LogisticRegression

    if hit.min() == hit.max():  # a class absent from these rows: keep its probability
        return {"a": 1.0, "b": 0.0}
    lr = LogisticRegression(C=1e4).fit(_logit(p)[:, None], hit)
    return {"a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}


class ClassCalibration:
    """A loaded calibration map: raw class probabilities -> calibrated ones.

    Rows of :meth:`calibrate` follow :attr:`classes` (class text); each
    class's one-vs-rest map is applied and rows renormalised (binary: only
    the second class is mapped, the first is its complement).
    """

    def __init__(self, payload: dict, sha256: str):
        self.sha256 = sha256
        self.classes: list[str] = [str(c) for c in payload["classes"]]
        self.method: str = payload["method"]
        self.ece = float(payload["ece"])
        maps = payload["maps"]
        self._maps = [maps.get(c) for c in self.classes]
        for c, m in zip(self.classes, self._maps):
            ok = m is not None and (("a" in m and "b" in m) if self.method == "sigmoid" else
                                    (len(m.get("x", ())) == len(m.get("y", ())) >= 1))
            if not ok:
                raise ArtifactError(f"estimation map: class {c!r} has no valid {self.method} map")
        self._arrays = [(np.asarray(m["x"], float), np.asarray(m["y"], float)) if self.method == "isotonic"
                        else (float(m["a"]), float(m["b"])) for m in self._maps]

    def _apply(self, j: int, p: np.ndarray) -> np.ndarray:
        u, v = self._arrays[j]
        if self.method == "isotonic":
            return np.interp(p, u, v)
        return 1.0 / (1.0 + np.exp(-(u * _logit(p) + v)))

    def calibrate_positive(self, p: np.ndarray) -> np.ndarray:
        """Binary: the calibrated probability of the second class from its raw one."""
        return self._apply(1, np.asarray(p, dtype=float))

    def calibrate(self, proba: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (``n x len(classes)``; NaN rows stay NaN)."""
        proba = np.asarray(proba, dtype=float)
        if len(self.classes) == 2:
            pos = self._apply(1, proba[:, 1])
            return np.column_stack([1.0 - pos, pos])
        out = np.column_stack([self._apply(j, proba[:, j]) for j in range(len(self.classes))])
        total = out.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, out / total, 1.0 / len(self.classes))


class LossEstimator:
    """A loaded direct loss estimator: features (+ prediction) -> expected |error|."""

    def __init__(self, payload: dict, sha256: str):
        self.sha256 = sha256
        self.features: list[str] = [str(f) for f in payload["features"]]
        self.holdout_mae = float(payload["holdout_mae"])
        data = base64.b64decode(payload["model"].encode("ascii"), validate=True)
        self.model = artifacts.loads(data, payload["model_sha256"], payload["trusted"])

    def predict(self, X: np.ndarray, prediction: np.ndarray) -> np.ndarray:
        """Estimated absolute error per row (never negative)."""
        rows = np.column_stack([np.asarray(X, dtype=float), np.asarray(prediction, dtype=float)])
        return np.maximum(self.model.predict(rows), 0.0)


def _numeric_frame(X: Any) -> tuple[np.ndarray, list[str]]:
    columns = [str(c) for c in getattr(X, "columns", range(np.shape(X)[1]))]
    return np.asarray(X, dtype=float), columns


def fit_estimation(estimator: Any, X: Any, y: Sequence[Any], task: str, seed: int = 0) -> dict | None:
    """The estimation payload for a fitted ``estimator`` from held-out rows
    ``X, y`` (never the rows it was fitted on), or ``None`` when it cannot
    be built (too few rows, no ``predict_proba``, non-numeric inputs for DLE).

    ``task``: ``classification`` (calibration map) or ``regression`` (DLE).
    """
    y = np.asarray(y)
    if len(y) < _MIN_ROWS:
        return None
    if task == "classification":
        if not callable(getattr(estimator, "predict_proba", None)):
            return None
        proba = np.asarray(estimator.predict_proba(X), dtype=float)
        classes = [class_text(c) for c in estimator.classes_]
        labels = np.array([class_text(v) for v in y])
        method = "isotonic" if len(y) >= ISOTONIC_MIN_ROWS else "sigmoid"
        mapped = [1] if len(classes) == 2 else list(range(len(classes)))
        # ECE cross-fitted: maps fitted on one half are checked on the other.
        rng = np.random.default_rng(seed)
        half = rng.permutation(len(y)) < len(y) // 2
        conf, hits = [], []
        for fit_rows in (half, ~half):
            maps = {classes[j]: _fit_map(proba[fit_rows, j], (labels[fit_rows] == classes[j]).astype(float), method)
                    for j in mapped}
            maps.update({c: {"a": 1.0, "b": 0.0} if method == "sigmoid" else {"x": [0.0, 1.0], "y": [0.0, 1.0]}
                         for c in classes if c not in maps})
            cal = ClassCalibration({"classes": classes, "method": method, "ece": 0.0, "maps": maps}, "")
            calibrated = cal.calibrate(proba[~fit_rows])
            top = calibrated.argmax(axis=1)
            conf.append(calibrated[np.arange(len(top)), top])
            hits.append(np.array(classes)[top] == labels[~fit_rows])
        ece = expected_calibration_error(np.concatenate(conf), np.concatenate(hits))
        maps = {classes[j]: _fit_map(proba[:, j], (labels == classes[j]).astype(float), method) for j in mapped}
        maps.update({c: {"a": 1.0, "b": 0.0} if method == "sigmoid" else {"x": [0.0, 1.0], "y": [0.0, 1.0]}
                     for c in classes if c not in maps})
        return {"kind": "calibration", "method": method, "classes": classes, "maps": maps,
                "ece": round(ece, 6), "rows": int(len(y))}
    if task != "regression":
        raise ValueError(f"task must be classification or regression (got {task!r})")
    try:
        rows, columns = _numeric_frame(X)
    except (TypeError, ValueError):
        return None  # categorical inputs: no DLE (the monitor estimates nothing)
    from sklearn.ensemble import HistGradientBoostingRegressor

    prediction = np.asarray(estimator.predict(X), dtype=float)
    error = np.abs(y.astype(float) - prediction)
    # small: the skops file of each tree costs kilobytes, and it lives in the profile
    dle = HistGradientBoostingRegressor(max_iter=50, max_leaf_nodes=8, min_samples_leaf=20, random_state=seed)
    dle.fit(np.column_stack([rows, prediction]), error)
    data, trusted = artifacts.dumps_checked(dle)
    return {"kind": "dle", "features": columns, "holdout_mae": float(error.mean()),
            "model": base64.b64encode(data).decode("ascii"), "model_sha256": artifacts.sha256(data),
            "trusted": trusted, "rows": int(len(y))}


def load(payload: Any, expected_sha256: str | None) -> ClassCalibration | LossEstimator:
    """Check ``payload`` against the SHA-256 recorded with the version and
    build it; raises :class:`ArtifactIntegrityError` on a mismatch (or a
    missing checksum) and :class:`ArtifactError` on a malformed payload."""
    if not isinstance(payload, dict):
        raise ArtifactError(f"estimation map must be a JSON object (got {type(payload).__name__})")
    if not expected_sha256:
        raise ArtifactIntegrityError("estimation map has no recorded checksum and is not loaded")
    try:
        actual = payload_sha256(payload)
    except (TypeError, ValueError) as error:
        raise ArtifactError(f"estimation map is not canonical JSON ({error})") from None
    if actual != expected_sha256:
        raise ArtifactIntegrityError(f"estimation map checksum mismatch: expected sha256 {expected_sha256}, "
                                     f"found {actual}; the map was changed and is not loaded")
    try:
        if payload.get("kind") == "calibration":
            return ClassCalibration(payload, actual)
        if payload.get("kind") == "dle":
            return LossEstimator(payload, actual)
    except (KeyError, TypeError, ValueError) as error:
        raise ArtifactError(f"estimation map is malformed ({type(error).__name__}: {error})") from None
    raise ArtifactError(f"estimation map has unknown kind {payload.get('kind')!r}")
