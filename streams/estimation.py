"""Estimated performance before labels arrive, and its check against reality.

* :class:`CBPE` (confidence-based performance estimation, as in NannyML):
  with calibrated probabilities, the expected confusion matrix of a window of
  predictions is known without their labels. Estimated accuracy, precision,
  recall, F1 (binary: the positive class; multiclass: macro) and ROC AUC over
  the last ``window`` predictions, each with a 95 % interval from the window
  size (binomial standard error).
* :class:`DLE` (direct loss estimation): a model of the absolute error,
  trained with the version, gives estimated MAE and RMSE of a window.
* :class:`EstimationGap`: on joined pairs, estimated minus realized accuracy
  (or MAE) over the same rows, per completed window: a series that tells
  whether estimation can be trusted for this model.

The assumption: the calibration learnt at training time still holds, i.e.
``P(y | x)`` is unchanged (covariate shift is fine, concept drift is not
seen). Every class vectorises a batch with NumPy; state is JSON.

References
----------
NannyML, "Confidence-based Performance Estimation" and "Direct Loss
Estimation", https://nannyml.readthedocs.io/en/stable/how_it_works/performance_estimation.html

Examples
--------
>>> import numpy as np
>>> cbpe = CBPE(["0", "1"], window=4)
>>> cbpe.update(np.array([[0.1, 0.9], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7]]), np.array([1, 0, 1, 1]))
>>> est = cbpe.get()
>>> est["accuracy"], est["n"]
(0.75, 4)
>>> gap = EstimationGap(window=2)
>>> gap.update(np.array([0.9, 0.8]), np.array([1.0, 0.0]))
>>> [round(v, 3) for v in gap.get()["windows"]]
[0.35]
"""

from __future__ import annotations

import itertools
import logging
import operator
from typing import Any

import numpy as np

from .labels import canonical_probabilities, class_key, sort_classes
from .observations import JoinedColumns, PredictionColumns
from .ring import RingBuffer

__all__ = ["CBPE", "DLE", "EstimationGap", "Ring", "VersionEstimation", "make_estimation"]

_log = logging.getLogger(__name__)
_Z = 1.96
_MAX_GAP_POINTS = 100


class Ring(RingBuffer):
    """A fixed-size ring of rows (the last ``size`` rows of a stream), with
    its own state format.

    >>> r = Ring(3, 1); r.extend(np.array([[1.0], [2.0], [3.0], [4.0]])); r.values().ravel().tolist()
    [2.0, 3.0, 4.0]
    """

    def __init__(self, size: int, width: int):
        super().__init__(size, "float64", int(width))

    def to_state(self) -> dict:
        return {"size": self.size, "width": self.width, "rows": self.values().tolist()}

    @classmethod
    def from_state(cls, state: dict) -> "Ring":
        self = cls(state["size"], state["width"])
        if state["rows"]:
            self.extend(np.asarray(state["rows"], dtype=float))
        return self


def _interval(value: float, n: float) -> list[float] | None:
    if n <= 0 or value != value:
        return None
    half = _Z * float(np.sqrt(max(value * (1.0 - value), 0.0) / n))
    return [max(0.0, value - half), min(1.0, value + half)]


def _weighted_auc(score: np.ndarray, weight: np.ndarray) -> float | None:
    """ROC AUC when row i is positive with probability ``weight[i]``."""
    order = np.argsort(-score, kind="stable")
    w = weight[order]
    tps = np.concatenate([[0.0], np.cumsum(w)])
    fps = np.concatenate([[0.0], np.cumsum(1.0 - w)])
    if tps[-1] <= 0 or fps[-1] <= 0:
        return None
    return float(np.trapezoid(tps / tps[-1], fps / fps[-1]))


class CBPE:
    """Confidence-based performance estimation over a rolling window.

    Parameters
    ----------
    classes
        Class texts, in the order of the probability columns.
    window
        Predictions kept (the monitor's ``policy.window``).
    positive
        Index of the positive class for binary metrics (default: the last).

    Examples
    --------
    >>> import numpy as np
    >>> c = CBPE(["a", "b", "c"], window=10)
    >>> c.update(np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1]]), np.array([0, 1]))
    >>> round(c.get()["accuracy"], 3), round(c.get()["recall"], 3)
    (0.75, 0.558)
    """

    def __init__(self, classes: list[str], window: int, positive: int | None = None):
        self.classes = list(classes)
        k = len(self.classes)
        self.positive = k - 1 if positive is None else int(positive)
        # columns: calibrated probabilities (k), predicted class index (1), raw score of each class (k);
        # binary: only the second class's probability and score (the first is the complement)
        self.width = 1 if k == 2 else k
        self.ring = Ring(window, 2 * self.width + 1)

    def update(self, calibrated: np.ndarray, predicted: np.ndarray, raw: np.ndarray | None = None) -> None:
        """Add rows: calibrated probabilities (``n x k``), predicted class
        index (rows with -1 or NaN probabilities are skipped), raw scores
        (for ROC AUC ordering; default: ``calibrated``). Binary: the
        probability columns may hold the second class only (``n x 1``)."""
        raw = calibrated if raw is None else raw
        if self.width == 1 and calibrated.shape[1] == 2:
            calibrated, raw = calibrated[:, 1:], raw[:, 1:]
        ok = (predicted >= 0) & np.isfinite(calibrated).all(axis=1)
        if ok.all():
            self.ring.extend(np.column_stack([calibrated, predicted, raw]))
        elif ok.any():
            self.ring.extend(np.column_stack([calibrated[ok], predicted[ok], raw[ok]]))

    def get(self) -> dict[str, Any]:
        """Estimated metrics, their intervals (``<metric>_ci``) and ``n``."""
        rows = self.ring.values()
        n = len(rows)
        out: dict[str, Any] = {"n": n}
        if n == 0:
            return out
        k, w = len(self.classes), self.width
        P, c, raw = rows[:, :w], rows[:, w].astype(int), rows[:, w + 1:]
        if w == 1:
            P, raw = np.column_stack([1.0 - P[:, 0], P[:, 0]]), np.column_stack([1.0 - raw[:, 0], raw[:, 0]])
        onehot = np.zeros((n, k))
        onehot[np.arange(n), c] = 1.0
        tp = (P * onehot).sum(axis=0)
        pred_pos = onehot.sum(axis=0)
        actual_pos = P.sum(axis=0)
        acc = float(tp.sum() / n)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(pred_pos > 0, tp / pred_pos, np.nan)
            recall = np.where(actual_pos > 0, tp / actual_pos, np.nan)
            f1 = np.where(pred_pos + actual_pos > 0, 2 * tp / (pred_pos + actual_pos), np.nan)
        if k == 2:
            j = self.positive
            prec, rec, f = float(precision[j]), float(recall[j]), float(f1[j])
            auc = _weighted_auc(raw[:, j], P[:, j])
            n_prec, n_rec = pred_pos[j], actual_pos[j]
        else:
            prec, rec, f = (float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
                            for v in (precision, recall, f1))
            aucs = [a for a in (_weighted_auc(raw[:, j], P[:, j]) for j in range(k)) if a is not None]
            auc = float(np.mean(aucs)) if aucs else None
            n_prec = n_rec = n / k
        out.update(accuracy=acc, precision=prec, recall=rec, f1=f, roc_auc=auc)
        out.update(accuracy_ci=_interval(acc, n), precision_ci=_interval(prec, n_prec),
                   recall_ci=_interval(rec, n_rec), f1_ci=_interval(f, min(n_prec, n_rec)),
                   roc_auc_ci=None if auc is None else _interval(auc, n))
        return {key: (None if isinstance(v, float) and v != v else v) for key, v in out.items()}

    def to_state(self) -> dict:
        return {"classes": self.classes, "positive": self.positive, "ring": self.ring.to_state()}

    @classmethod
    def from_state(cls, state: dict) -> "CBPE":
        self = cls(state["classes"], state["ring"]["size"], state["positive"])
        self.ring = Ring.from_state(state["ring"])
        return self


class DLE:
    """Direct loss estimation over a rolling window: the mean of a
    trained model's estimate of each row's absolute error.

    Parameters
    ----------
    window
        Predictions kept.

    Examples
    --------
    >>> import numpy as np
    >>> d = DLE(window=3); d.update(np.array([1.0, 2.0, 3.0, 5.0]))
    >>> d.get()["mae"], d.get()["n"]
    (3.3333333333333335, 3)
    """

    def __init__(self, window: int):
        self.ring = Ring(window, 1)

    def update(self, abs_error: np.ndarray) -> None:
        """Add the estimated absolute errors of a batch (NaN skipped)."""
        abs_error = np.asarray(abs_error, dtype=float)
        self.ring.extend(abs_error[np.isfinite(abs_error)])

    def get(self) -> dict[str, Any]:
        """``mae``, ``rmse`` (root mean squared estimated error: a lower
        bound of the true RMSE) with intervals from the spread of the
        estimates, and ``n``."""
        e = self.ring.values().ravel()
        n = e.size
        if n == 0:
            return {"n": 0}
        mae = float(e.mean())
        half = _Z * float(e.std()) / np.sqrt(n)
        return {"n": n, "mae": mae, "mae_ci": [max(0.0, mae - half), mae + half],
                "rmse": float(np.sqrt(np.mean(e * e)))}

    def to_state(self) -> dict:
        return {"ring": self.ring.to_state()}

    @classmethod
    def from_state(cls, state: dict) -> "DLE":
        self = cls(state["ring"]["size"])
        self.ring = Ring.from_state(state["ring"])
        return self


class EstimationGap:
    """Estimated minus realized value over the same joined rows, per window.

    ``update(estimated, realized)``: per-row estimates (probability the
    prediction is right, or estimated absolute error) and realized values
    (1/0 correct, or absolute error). Every ``window`` rows a point
    (estimated mean - realized mean) joins the series (last 100 kept);
    ``current`` is the gap over the rows of the window in progress.

    Examples
    --------
    >>> import numpy as np
    >>> g = EstimationGap(window=2); g.update(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.0, 0.0]))
    >>> g.get()
    {'windows': [0.0], 'current': 1.0, 'last': 0.0, 'mean_abs': 0.0}
    """

    def __init__(self, window: int):
        self.window = int(window)
        self.est_sum = self.real_sum = 0.0
        self.count = 0
        self.windows: list[float] = []

    def update(self, estimated: np.ndarray, realized: np.ndarray) -> None:
        ok = np.isfinite(estimated) & np.isfinite(realized)
        estimated, realized = np.asarray(estimated, float)[ok], np.asarray(realized, float)[ok]
        i = 0
        while i < estimated.size:
            take = min(self.window - self.count, estimated.size - i)
            self.est_sum += float(estimated[i:i + take].sum())
            self.real_sum += float(realized[i:i + take].sum())
            self.count += take
            i += take
            if self.count == self.window:
                self.windows.append((self.est_sum - self.real_sum) / self.window)
                del self.windows[:-_MAX_GAP_POINTS]
                self.est_sum = self.real_sum = 0.0
                self.count = 0

    def get(self) -> dict[str, Any]:
        return {"windows": list(self.windows),
                "current": (self.est_sum - self.real_sum) / self.count if self.count else None,
                "last": self.windows[-1] if self.windows else None,
                "mean_abs": float(np.mean(np.abs(self.windows))) if self.windows else None}

    def to_state(self) -> dict:
        return {"window": self.window, "sums": [self.est_sum, self.real_sum, self.count], "windows": self.windows}

    @classmethod
    def from_state(cls, state: dict) -> "EstimationGap":
        self = cls(state["window"])
        self.est_sum, self.real_sum, count = state["sums"]
        self.count = int(count)
        self.windows = [float(v) for v in state["windows"]]
        return self


def _prediction_index(classes: list[str]) -> dict:
    """Prediction value -> class column, for texts and the JSON numbers and
    booleans that spell them (``1`` and ``1.0`` for ``"1"``, ``True`` for ``"true"``)."""
    index: dict = {}
    for i, c in enumerate(classes):
        if c in ("true", "false"):
            index[c == "true"] = i
        else:
            try:
                number = float(c)
            except ValueError:
                number = None
            if number is not None and number.is_integer() and str(int(number)) == c:
                index[int(number)] = i
    # Texts last: a text key never collides with a number (and True == 1 only if "1" is a class, not "true").
    index.update({c: i for i, c in enumerate(classes)})
    return index


def _float_or_nan(v: Any) -> float:
    return float(v) if (type(v) is int or type(v) is float) else float("nan")


class VersionEstimation:
    """Estimation for one model version, built from the ``estimation`` map of
    its registry profile (checked by the registry against the checksum
    recorded with the version; see :mod:`driftline.registry.calibration`).

    Parameters
    ----------
    payload
        The profile's ``estimation`` object.
    window
        Rolling window (predictions) and gap window (joined pairs).
    positive_label
        Class text of the positive class (``None``: the greater class).
    """

    def __init__(self, payload: dict, window: int, positive_label: str | None = None):
        from driftline.registry.calibration import ClassCalibration, load, payload_sha256

        self.payload = payload
        self.window = int(window)
        self.positive_label = positive_label
        self.model = load(payload, payload_sha256(payload))
        self.sha256 = self.model.sha256
        self.classification = isinstance(self.model, ClassCalibration)
        if self.classification:
            classes = self.model.classes
            pos = positive_label if positive_label in classes else sort_classes(classes)[-1]
            self.index = _prediction_index(classes)
            # True == 1 in a dict: booleans go the slow way when classes are numbers
            self._numeric_classes = any(type(key) is int for key in self.index)
            self._getter = operator.itemgetter(*classes)
            self._positive_getter = operator.itemgetter(classes[1]) if len(classes) == 2 else None
            self.estimator: CBPE | DLE = CBPE(classes, window, classes.index(pos))
        else:
            self.estimator = DLE(window)
        self.gap = EstimationGap(window)
        self.unchecked = 0

    # per-row estimates -----------------------------------------------------------
    def _class_rows(self, predictions: list, probabilities: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        classes = self.model.classes
        n = len(probabilities)
        try:  # canonical keys, every dict has every class (the usual case): C-level extraction
            if self._positive_getter is not None:
                raw = np.fromiter(map(self._positive_getter, probabilities), dtype=float, count=n)[:, None]
            else:
                raw = np.array(list(map(self._getter, probabilities)), dtype=float)
        except (KeyError, TypeError, ValueError):
            probs = canonical_probabilities(probabilities)
            nan_row = [float("nan")] * len(classes)
            raw = np.array([[p.get(c, 0.0) for c in classes] if p else nan_row for p in probs], dtype=float)
            if self._positive_getter is not None:
                raw = raw[:, 1:]
        index = self.index
        try:
            if self._numeric_classes and bool in set(map(type, predictions)):
                raise TypeError("booleans")
            predicted = np.fromiter(map(index.get, predictions, itertools.repeat(-1)), dtype=np.int64,
                                    count=len(predictions))
        except TypeError:  # a boolean, or an unhashable prediction (a list): by its text
            predicted = np.fromiter((index.get(class_key(v), -1) if type(v) in (str, int, float, bool) else -1
                                     for v in predictions), dtype=np.int64, count=len(predictions))
        calibrated = self.model.calibrate_positive(raw[:, 0])[:, None] if raw.shape[1] == 1 else \
            self.model.calibrate(raw)
        return calibrated, predicted, raw

    def _abs_errors(self, features: list, predictions: list) -> np.ndarray:
        names = self.model.features
        X = np.array([[_float_or_nan(f.get(n)) for n in names] for f in features], dtype=float)
        yp = np.array([_float_or_nan(v) for v in predictions], dtype=float)
        out = np.full(len(yp), np.nan)
        ok = np.isfinite(yp)
        if ok.any():
            out[ok] = self.model.predict(X[ok], yp[ok])
        return out

    # stream ---------------------------------------------------------------------
    def observe_predictions(self, preds: "PredictionColumns | list", values: list | None = None) -> None:
        """A batch of predictions (:class:`~driftline.streams.observations.PredictionColumns`,
        or :class:`~driftline.events.Prediction` records); ``values``: their
        ``prediction`` fields, if the caller has them."""
        if not isinstance(preds, PredictionColumns):
            preds = PredictionColumns.from_events(preds)
        values = preds.predictions if values is None else values
        if self.classification:
            calibrated, predicted, raw = self._class_rows(values, preds.probabilities)
            self.estimator.update(calibrated, predicted, raw)
        else:
            self.estimator.update(self._abs_errors(preds.feature_rows(), values))
        self.unchecked += len(preds)

    def observe_joined(self, records: "JoinedColumns | list", correct: np.ndarray | None = None) -> None:
        """A batch of joined pairs (:class:`~driftline.streams.observations.JoinedColumns`,
        or :class:`~driftline.events.LabeledRecord` records): the gap series.
        ``correct``: 1/0 per record if the caller has it (classification)."""
        if not isinstance(records, JoinedColumns):
            records = JoinedColumns.from_events(records)
        values = records.predictions
        n = len(records)
        if self.classification:
            calibrated, predicted, _ = self._class_rows(values, records.probabilities)
            known = predicted >= 0
            est = np.full(n, np.nan)
            if calibrated.shape[1] == 1:  # binary: the second class's probability only
                calibrated = np.column_stack([1.0 - calibrated[:, 0], calibrated[:, 0]])
            est[known] = calibrated[np.flatnonzero(known), predicted[known]]
            realized = correct if correct is not None else np.fromiter(
                (class_key(y) == class_key(p) for y, p in zip(records.labels, values)), dtype=float, count=n)
        else:
            est = self._abs_errors(records.feature_rows(), values)
            realized = np.array([abs(_float_or_nan(y) - _float_or_nan(p)) for y, p in zip(records.labels, values)])
        self.gap.update(est, realized)

    def check(self, thresholds: dict[str, float]) -> list[tuple[str, float, float, int]]:
        """``(metric, estimate, limit, n)`` for each threshold crossed, once
        the window is full, at most every ``window // 20`` predictions."""
        if not thresholds or self.unchecked < max(1, self.window // 20):
            return []
        self.unchecked = 0
        est = self.estimator.get()
        if est["n"] < self.window:
            return []
        out = []
        for metric, limit in thresholds.items():
            value = est.get(metric)
            if value is None:
                continue
            lower_is_better = metric in ("mae", "rmse")
            if (value > limit) if lower_is_better else (value < limit):
                out.append((metric, float(value), float(limit), int(est["n"])))
        return out

    def get(self) -> dict[str, Any]:
        """The ``estimated`` and ``estimation_gap`` parts of a snapshot's stats."""
        est = self.estimator.get()
        est["method"] = "cbpe" if self.classification else "dle"
        if self.classification:
            est["ece"] = self.model.ece
        gap = self.gap.get()
        gap["metric"] = "accuracy" if self.classification else "mae"
        return {"estimated": est, "estimation_gap": gap}

    def to_state(self) -> dict:
        return {"estimator": self.estimator.to_state(), "gap": self.gap.to_state(), "unchecked": self.unchecked}

    def restore(self, state: dict) -> None:
        self.estimator = (CBPE if self.classification else DLE).from_state(state["estimator"])
        self.gap = EstimationGap.from_state(state["gap"])
        self.unchecked = int(state["unchecked"])


def make_estimation(profile: dict | None, policy: Any, positive_label: str | None,
                    what: str) -> VersionEstimation | None:
    """The :class:`VersionEstimation` of a version whose profile has an
    estimation map, else ``None``; a map that cannot be loaded is logged
    (naming the version and why) and estimation is off for that version."""
    payload = (profile or {}).get("estimation")
    if not isinstance(payload, dict):
        return None
    from driftline.registry.errors import ArtifactError

    try:
        return VersionEstimation(payload, policy.window, positive_label)
    except ArtifactError as error:
        _log.error("no performance estimation for %s: %s", what, error)
        return None
