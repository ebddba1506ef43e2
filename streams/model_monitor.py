"""Per-model monitoring: metrics, drift, outliers and latency for every
version of one model, with warm-up, alert cooldowns and retrain requests.

The faust pipeline owns all I/O: its stage 2 (``driftline.streams.stage2``) calls a
:class:`ModelMonitor` per model with decoded batches and publishes what comes
back. Nothing here touches Kafka, and every method takes the caller's clock
(``now``, epoch seconds), so behaviour is reproducible.

* A :class:`VersionMonitor` per model version keeps cumulative and rolling
  metrics (:mod:`driftline.streams.metrics`), per-feature data-drift tests and the
  prediction-drift test (:mod:`driftline.streams.drift`, reference: the version's
  registry profile, or the stream's own past), the concept-drift detector on
  the error stream, outlier and latency windows. Each alert kind is one
  check class in :mod:`driftline.streams.checks` (``data_drift.py``,
  ``concept_drift.py``, ...); the version does the per-batch work they share
  once, then runs each.
* **Warm-up**: a version's first ``policy.warmup`` predictions are not fed to
  data-drift and outlier tests, and its first ``policy.warmup`` joined pairs
  not to concept drift; latency and metric-threshold alerts wait for a
  rolling window (``policy.window``) wholly after the warm-up. A ``promoted``
  model event (:meth:`ModelMonitor.on_promoted`) restarts the warm-up of
  that version, so a promotion does not itself raise alerts.
* **Cooldown** (:mod:`driftline.streams.checks.dispatch`, like retrain
  requests): at most one alert per (model, version, kind, subject) per
  ``policy.cooldown_s``.
* **Retrain requests**: an alert whose kind is in ``policy.retrain_on``
  produces a :class:`~driftline.events.RetrainRequest` (reason ``drift`` for
  ``*_drift`` kinds, else ``metric``), at most one per model per
  ``policy.retrain_cooldown_s``.
* **State**: :meth:`ModelMonitor.to_state` is JSON (:mod:`driftline.streams.state`),
  no pickle; :meth:`ModelMonitor.from_state` continues identically.

Examples
--------
>>> from driftline.events import Prediction, LabeledRecord
>>> from driftline.policy import MonitorPolicy
>>> mon = ModelMonitor("churn", MonitorPolicy(warmup=10), profile_for=lambda version: None)
>>> preds = [Prediction(f"e{i}", "churn", 1, 0.0, {"x": float(i % 7)}, i % 2, latency_ms=5.0) for i in range(50)]
>>> mon.observe_predictions(preds, now=1.0).alerts
[]
>>> joined = [LabeledRecord(p.event_id, "churn", 1, p.features, p.prediction, 1, 0.0, 2.0) for p in preds]
>>> out = mon.observe_joined(joined, now=2.0)
>>> snap = mon.snapshots(now=3.0)[0]
>>> snap.cumulative["accuracy"], snap.stats["joined"], snap.stats["latency_p95_ms"]
(0.5, 50, 5.0)
>>> ModelMonitor.from_state(mon.to_state(), MonitorPolicy(warmup=10), lambda v: None).snapshots(3.0)[0].cumulative \
== snap.cumulative
True
"""

from __future__ import annotations

import operator
from typing import Any, Callable, Sequence

import numpy as np

from driftline.errors import DriftlineError
from driftline.events import LabeledRecord, MetricsSnapshot, Prediction
from driftline.policy import MonitorPolicy

from . import state as state_codec
from .checks import JOINED_CHECKS, PREDICTION_CHECKS
from .checks.base import Check, Finding, JoinedBatch, PredictionBatch
from .checks.base import finite_or_none as _finite
from .checks.dispatch import AlertDispatch, MonitorOutput
from .checks.features import Feature, is_number, new_feature
from .checks.outliers import MISSING
from .drift import per_test_alpha
from .estimation import make_estimation
from .labels import canonical_probabilities, canonical_probability_key, class_key
from .latency import RollingQuantiles, Throughput
from .metrics import ClassificationMetrics, RegressionMetrics
from .observations import JoinedColumns, PredictionColumns
from .probabilities import ProbaBatch
from .rolling import RollingClassification, RollingRegression

__all__ = ["ModelMonitor", "VersionMonitor", "MonitorOutput", "STATE_FORMAT"]

STATE_FORMAT = 1
_OTHER = "<other>"
_MAX_CLASSES = 1000

# Format 1 keeps these counters (the version's and its checks') in one list,
# in this order, under "counts".
_COUNTS = ("predictions", "joined", "expired", "warm_predictions", "warm_joined", "latency_unchecked",
           "joined_unchecked", "latency_post")
# Format 1's key order (kept, so a saved state is written back byte for byte).
_STATE_KEYS = ("model", "version", "chunk", "profile", "pending_predictions", "pending_joined", "pending_since",
               "positive_label", "task", "pred_kind", "counts", "last_seen", "features", "feature_order",
               "pred_test", "metrics", "rolling", "concept", "latency", "label_delay", "outlier_rate", "hst",
               "pred_counts", "pred_values", "throughput", "estimation")


def _cat_key(v: Any) -> str:
    return MISSING if v is None else class_key(v)


def _normalise_profile(profile: dict | None) -> dict | None:
    """Canonical category keys (``"True"`` -> ``"true"``) in a registry profile."""
    if not profile:
        return None
    out = dict(profile)
    for section in ("features",):
        feats = {}
        for name, spec in (profile.get(section) or {}).items():
            if isinstance(spec, dict) and spec.get("frequencies"):
                spec = dict(spec)
                spec["frequencies"] = {canonical_probability_key(str(k)): v for k, v in spec["frequencies"].items()}
            feats[name] = spec
        out[section] = feats
    pred = profile.get("prediction")
    if isinstance(pred, dict) and pred.get("frequencies"):
        pred = dict(pred)
        pred["frequencies"] = {canonical_probability_key(str(k)): v for k, v in pred["frequencies"].items()}
        out["prediction"] = pred
    return out


def _prediction_kind(first_batch: Sequence[Any]) -> str:
    """Numbers that are not all integral mean a regression model."""
    numeric = any(type(v) is float and not v.is_integer() for v in first_batch)
    return "numeric" if numeric else "categorical"


class VersionMonitor:
    """Everything watched for one model version.

    The version keeps what its snapshots report (counters, metrics, the
    latency, label-delay and prediction distributions, its features) and
    does the per-batch work its checks share; each alert kind is one check
    (:mod:`driftline.streams.checks`), run in turn on every batch.

    Parameters
    ----------
    model, version
        Which model version.
    policy
        The model's monitor policy.
    profile
        The version's reference profile from the registry (see
        ``driftline.registry.profile.build_profile``), or ``None``.
    positive_label
        Positive class for binary metrics (``None``: the rule in
        :mod:`driftline.streams.metrics`).
    chunk
        Events are buffered and processed (vectorised) in chunks of at least
        this many, or when the oldest buffered event waited ``max_delay_s``
        (1 s) by the caller's clock; :meth:`flush` processes what is buffered.
    """

    def __init__(self, model: str, version: int, policy: MonitorPolicy, profile: dict | None = None,
                 positive_label: str | None = None, chunk: int = 64):
        self.model = model
        self.chunk = int(chunk)
        # buffered column blocks (see driftline.streams.observations) and their event counts
        self.pending_predictions: list[PredictionColumns] = []
        self.pending_joined: list[JoinedColumns] = []
        self.n_pending_predictions = self.n_pending_joined = 0
        self.pending_since = self.pending_joined_since = 0.0
        self.max_delay_s = 1.0
        self.version = version
        self.policy = policy
        self.profile = _normalise_profile(profile)
        self.positive_label = positive_label
        self.task: str | None = None if policy.task == "auto" else policy.task
        self.pred_kind: str | None = None if policy.task == "auto" else \
            ("numeric" if policy.task == "regression" else "categorical")
        self.predictions = 0
        self.joined = 0
        self.expired = 0
        self.warm_predictions = policy.warmup  # prediction count at which warm-up ends
        self.warm_joined = policy.warmup
        self.features: dict[str, Feature] = {}
        self.metrics: ClassificationMetrics | RegressionMetrics | None = None
        self.rolling: RollingClassification | RollingRegression | None = None
        self.latency = RollingQuantiles(policy.window)
        self.label_delay = RollingQuantiles(policy.window)
        self.pred_counts: dict[str, int] = {}
        self.pred_values = RollingQuantiles(policy.window)
        self.throughput = Throughput()
        self.last_seen = 0.0
        self.estimation = make_estimation(self.profile, policy, positive_label, self.label)
        self.saved_estimation: dict | None = None  # windows from a saved state, until resume_estimation
        self.checks: dict[str, Check] = {cls.kind: cls(policy) for cls in PREDICTION_CHECKS + JOINED_CHECKS}

    # -- helpers -----------------------------------------------------------
    @property
    def label(self) -> str:
        """``"<model> v<version>"``, as messages name the version."""
        return f"{self.model} v{self.version}"

    @property
    def pred_test(self) -> Any:
        """The prediction-drift test (``None`` before the first prediction)."""
        return self.checks["prediction_drift"].test

    @property
    def reference_size(self) -> int:
        params = self.policy.data_drift.params
        return int(params.get("reference_size", 4 * self.policy.drift_window))

    def _n_tests(self) -> int:
        return max(1, len(self.features) + (1 if self.policy.prediction_drift else 0))

    def alpha(self) -> float:
        """Per-test level from the false-alarm budget (see :mod:`driftline.streams.drift`)."""
        return per_test_alpha(self.policy.expected_run_length, self._n_tests(), self.policy.drift_window)

    def _feature_profile(self, name: str) -> dict | None:
        if not self.profile:
            return None
        spec = (self.profile.get("features") or {}).get(name)
        return spec if isinstance(spec, dict) else None

    def restart_warmup(self) -> None:
        """Start a warm-up at the current position (call :meth:`flush` first)."""
        self.warm_predictions = self.predictions + self.policy.warmup
        self.warm_joined = self.joined + self.policy.warmup
        for check in self.checks.values():
            check.restart_warmup()

    def _run_checks(self, watches: str, batch: PredictionBatch | JoinedBatch, now: float) -> list[Finding]:
        return [f for check in self.checks.values() if check.watches == watches for f in check.observe(batch, now)]

    # -- buffering -----------------------------------------------------------------
    def observe_predictions(self, preds: PredictionColumns | Sequence[Prediction], now: float) -> list[Finding]:
        """Buffer predictions of this version; process them once a chunk is full."""
        if not isinstance(preds, PredictionColumns):
            preds = PredictionColumns.from_events(preds)
        if not self.pending_predictions:
            self.pending_since = now
        self.pending_predictions.append(preds)
        self.n_pending_predictions += len(preds)
        self.last_seen = now
        if self.n_pending_predictions >= self.chunk or now - self.pending_since >= self.max_delay_s:
            return self.flush(now)
        return []

    def observe_joined(self, records: JoinedColumns | Sequence[LabeledRecord], now: float) -> list[Finding]:
        """Buffer joined pairs of this version; process them once a chunk is full."""
        if not isinstance(records, JoinedColumns):
            records = JoinedColumns.from_events(records)
        if not self.pending_joined:
            self.pending_joined_since = now
        self.pending_joined.append(records)
        self.n_pending_joined += len(records)
        self.last_seen = now
        if self.n_pending_joined >= self.chunk or now - self.pending_joined_since >= self.max_delay_s:
            return self.flush(now)
        return []

    def flush(self, now: float) -> list[Finding]:
        """Process everything buffered."""
        findings: list[Finding] = []
        if self.pending_predictions:
            parts, self.pending_predictions, self.n_pending_predictions = self.pending_predictions, [], 0
            findings += self._process_predictions(PredictionColumns.concat(parts), now)
        if self.pending_joined:
            parts, self.pending_joined, self.n_pending_joined = self.pending_joined, [], 0
            findings += self._process_joined(JoinedColumns.concat(parts), now)
        return findings

    # -- predictions -------------------------------------------------------------
    def _count_predictions(self, raw: list[Any]) -> np.ndarray | list[str]:
        """The predictions as numbers (NaN: not a number) or class keys, added
        to the distribution snapshots report."""
        if self.pred_kind == "numeric":
            values = np.array([v if is_number(v) else np.nan for v in raw], dtype=np.float64)
            self.pred_values.update(values[np.isfinite(values)])
            return values
        keys = list(map(class_key, raw))
        counts = self.pred_counts
        for v in keys:
            if v in counts:
                counts[v] += 1
            elif len(counts) < _MAX_CLASSES:
                counts[v] = 1
            else:  # bounded state even for a mis-detected regression model
                counts[_OTHER] = counts.get(_OTHER, 0) + 1
        return keys

    def _feature_columns(self, preds: PredictionColumns, skip: int) -> dict[str, np.ndarray | list[str]]:
        """Per feature in the batch (sorted by name) the values after the
        warm-up; new features are added, missing values counted (warm-up included)."""
        given = preds.features
        for name in sorted(name for name in given if name not in self.features):
            # alpha() counts the features added so far: each new test gets the level of its time
            self.features[name] = new_feature(_first_value(given[name]), self._feature_profile(name), self.policy,
                                              self.reference_size, self.alpha())
        columns: dict[str, np.ndarray | list[str]] = {}
        for name in sorted(given):
            feat = self.features[name]
            col = given[name]
            if feat.kind == "numeric":
                if isinstance(col, np.ndarray):
                    arr = col
                else:
                    try:
                        arr = np.array(col, dtype=np.float64)
                    except (TypeError, ValueError):
                        arr = np.array([float(v) if is_number(v) or type(v) is bool else np.nan for v in col])
                feat.missing += int(np.isnan(arr).sum())
                columns[name] = arr[skip:]
            else:
                if isinstance(col, np.ndarray):  # floats in a categorical feature (NaN: missing)
                    col = [None if v != v else v for v in col.tolist()]
                feat.missing += sum(1 for v in col if v is None)
                columns[name] = [_cat_key(v) for v in col[skip:]]
        return columns

    def _process_predictions(self, preds: PredictionColumns, now: float) -> list[Finding]:
        n = len(preds)
        if n == 0:
            return []
        start = self.predictions
        self.predictions += n
        self.last_seen = now
        self.throughput.update(n, now)
        # Events before the end of warm-up feed counters only.
        skip = min(n, max(0, self.warm_predictions - start))
        raw = preds.predictions
        if self.pred_kind is None:
            self.pred_kind = _prediction_kind(raw)
        predicted = self._count_predictions(raw)
        columns = self._feature_columns(preds, skip)
        has_latency = ~np.isnan(preds.latency_ms)
        latencies = preds.latency_ms[has_latency]
        if latencies.size:
            self.latency.update(latencies)
        if self.estimation is not None:
            self.estimation.observe_predictions(preds, raw)
        batch = PredictionBatch(
            self.label, preds, skip=skip, alpha=self.alpha(), features=self.features, columns=columns,
            reference_ready=frozenset(name for name in columns if self.features[name].test.ready),
            pred_kind=self.pred_kind, predicted=predicted, latencies=latencies,
            tested_latencies=int(has_latency[skip:].sum()), latency_window=self.latency,
            reference_size=self.reference_size, after_warmup=self.predictions - self.warm_predictions,
            estimation=self.estimation, profile=self.profile)
        return self._run_checks("predictions", batch, now)

    # -- joined pairs --------------------------------------------------------------
    def _decide_task(self, records: JoinedColumns) -> None:
        if self.task is not None:
            return
        for values in (records.labels, records.predictions):
            for v in values:
                if type(v) is float and not v.is_integer():
                    self.task = "regression"
                    return
        self.task = "regression" if self.pred_kind == "numeric" else "classification"

    def _init_metrics(self) -> None:
        w = self.policy.window
        if self.task == "regression":
            self.metrics, self.rolling = RegressionMetrics(), RollingRegression(w)
        else:
            self.metrics = ClassificationMetrics(self.positive_label)
            self.rolling = RollingClassification(w, self.positive_label)

    def _update_metrics(self, records: JoinedColumns) -> np.ndarray:
        """Cumulative and rolling metrics; the error stream (0/1 misclassified,
        or the absolute error of pairs with numeric label and prediction)."""
        if self.task == "regression":
            y = np.array([float(v) if is_number(v) else np.nan for v in records.labels])
            yp = np.array([float(v) if is_number(v) else np.nan for v in records.predictions])
            ok = np.isfinite(y) & np.isfinite(yp)
            y, yp = y[ok], yp[ok]
            self.metrics.update(y, yp)
            self.rolling.update(y, yp)
            return np.abs(y - yp)
        yk = list(map(class_key, records.labels))
        pk = list(map(class_key, records.predictions))
        probs = records.probabilities
        batch = ProbaBatch(yk, canonical_probabilities(probs)) if any(probs) else None
        self.metrics.update(yk, pk, batch)
        self.rolling.update(yk, pk, batch)
        return np.fromiter(map(operator.ne, yk, pk), dtype=np.float64, count=len(records))

    def _process_joined(self, records: JoinedColumns, now: float) -> list[Finding]:
        n = len(records)
        if n == 0:
            return []
        if self.metrics is None:
            self._decide_task(records)
            self._init_metrics()
        start = self.joined
        self.joined += n
        self.last_seen = now
        self.label_delay.update(records.label_timestamps - records.prediction_timestamps)
        errors = self._update_metrics(records)
        if self.estimation is not None:
            self.estimation.observe_joined(records, None if self.task == "regression" else 1.0 - errors)
        skip = min(errors.size, max(0, self.warm_joined - start))
        batch = JoinedBatch(self.label, records, self.task, errors, skip=skip,
                            after_warmup=self.joined - self.warm_joined, metrics=self.metrics, rolling=self.rolling)
        return self._run_checks("joined", batch, now)

    # -- snapshot -------------------------------------------------------------------
    def snapshot(self, now: float) -> MetricsSnapshot:
        if self.metrics is not None:
            cumulative = {k: _finite(v) for k, v in self.metrics.get().items()}
            rolling = {k: _finite(v) for k, v in self.rolling.get().items()}
        else:
            cumulative, rolling = {}, {}
        p50, p95, p99 = self.latency.percentiles([50, 95, 99])
        delay = self.label_delay.percentiles([50])[0]
        if self.pred_kind == "numeric":
            q = self.pred_values.percentiles([5, 50, 95])
            dist = {"p05": q[0], "p50": q[1], "p95": q[2]}
        else:
            total = sum(self.pred_counts.values())
            dist = {k: v / total for k, v in sorted(self.pred_counts.items())} if total else {}
        settled = self.joined + self.expired
        outlier_rate = self.checks["outliers"].rate
        stats = {
            "joined": self.joined,
            "predictions": self.predictions,
            "expired": self.expired,
            "label_coverage": (self.joined / settled) if settled else None,
            "label_delay_p50_s": delay,
            "latency_p50_ms": p50,
            "latency_p95_ms": p95,
            "latency_p99_ms": p99,
            "throughput_eps": self.throughput.mark(now),
            "prediction_distribution": dist,
            "outliers": outlier_rate.outliers,
            "outlier_rate": outlier_rate.rate(),
            "task": self.task,
            "drift": {name: {"kind": f.kind, **_test_stats(f.test), "missing": f.missing,
                             "outliers": f.outliers,
                             # the tested window's histogram (reports draw it next to the reference)
                             "window": getattr(f.test, "last_histogram", None)}
                      for name, f in sorted(self.features.items())},
            "prediction_drift": None if self.pred_test is None else _test_stats(self.pred_test),
            "last_seen": self.last_seen,
        }
        if self.estimation is not None:
            stats.update(self.estimation.get())
        return MetricsSnapshot(self.model, self.version, now, cumulative, rolling, stats)

    # -- state --------------------------------------------------------------------
    def to_state(self) -> dict:
        flat = {
            "model": self.model, "version": self.version, "chunk": self.chunk,
            # the estimation map (up to a few 100 kB) is not state: it is read from the registry again
            "profile": None if self.profile is None else {k: v for k, v in self.profile.items() if k != "estimation"},
            "pending_predictions": [e.to_dict() for part in self.pending_predictions
                                    for e in part.to_events(self.model)],
            "pending_joined": [e.to_dict() for part in self.pending_joined for e in part.to_events(self.model)],
            "pending_since": [self.pending_since, self.pending_joined_since],
            "positive_label": self.positive_label, "task": self.task, "pred_kind": self.pred_kind,
            "predictions": self.predictions, "joined": self.joined, "expired": self.expired,
            "warm_predictions": self.warm_predictions, "warm_joined": self.warm_joined,
            "last_seen": self.last_seen,
            "features": {name: f.to_state() for name, f in self.features.items()},
            "feature_order": list(self.features),
            "metrics": None if self.metrics is None else self.metrics.to_state(),
            "rolling": None if self.rolling is None else self.rolling.to_state(),
            "latency": self.latency.to_state(), "label_delay": self.label_delay.to_state(),
            "pred_counts": [list(self.pred_counts), list(self.pred_counts.values())],
            "pred_values": self.pred_values.to_state(), "throughput": self.throughput.to_state(),
            "estimation": None if self.estimation is None else
            {"sha256": self.estimation.sha256, "state": self.estimation.to_state()},
        }
        for check in self.checks.values():
            flat.update(check.to_state())
        flat["counts"] = [flat.pop(name) for name in _COUNTS]
        return {key: flat[key] for key in _STATE_KEYS}

    @classmethod
    def from_state(cls, data: dict, policy: MonitorPolicy) -> "VersionMonitor":
        if len(data["counts"]) != len(_COUNTS):
            raise ValueError(f"{len(data['counts'])} counts, not {len(_COUNTS)}")
        data = dict(data, **dict(zip(_COUNTS, data["counts"])))
        self = cls(data["model"], int(data["version"]), policy, None, data["positive_label"], int(data["chunk"]))
        self.profile = data["profile"]
        pending = [Prediction.from_dict(e) for e in data["pending_predictions"]]
        self.pending_predictions = [PredictionColumns.from_events(pending)] if pending else []
        self.n_pending_predictions = len(pending)
        pending = [LabeledRecord.from_dict(e) for e in data["pending_joined"]]
        self.pending_joined = [JoinedColumns.from_events(pending)] if pending else []
        self.n_pending_joined = len(pending)
        self.pending_since, self.pending_joined_since = (float(t) for t in data["pending_since"])
        self.task, self.pred_kind = data["task"], data["pred_kind"]
        (self.predictions, self.joined, self.expired, self.warm_predictions,
         self.warm_joined) = (int(data[name]) for name in _COUNTS[:5])
        self.last_seen = float(data["last_seen"])
        self.features = {name: Feature.from_state(data["features"][name], policy) for name in data["feature_order"]}
        if data["metrics"] is not None:
            if self.task == "regression":
                self.metrics = RegressionMetrics.from_state(data["metrics"])
                self.rolling = RollingRegression.from_state(data["rolling"])
            else:
                self.metrics = ClassificationMetrics.from_state(data["metrics"])
                self.rolling = RollingClassification.from_state(data["rolling"])
        self.latency = RollingQuantiles.from_state(data["latency"])
        self.label_delay = RollingQuantiles.from_state(data["label_delay"])
        keys, vals = data["pred_counts"]
        self.pred_counts = dict(zip(keys, (int(v) for v in vals)))
        self.pred_values = RollingQuantiles.from_state(data["pred_values"])
        self.throughput = Throughput.from_state(data["throughput"])
        self.checks = {kind: type(check).from_state(data, policy) for kind, check in self.checks.items()}
        self.saved_estimation = data.get("estimation")  # restored by ModelMonitor.from_state
        return self

    def resume_estimation(self, profile: dict | None) -> None:
        """After :meth:`from_state`: the estimation map from the registry's
        ``profile``; its saved windows continue if it is the same map."""
        saved, self.saved_estimation = self.saved_estimation, None
        payload = (profile or {}).get("estimation")
        if payload is None:
            return
        self.profile = dict(self.profile or {}, estimation=payload)
        self.estimation = make_estimation(self.profile, self.policy, self.positive_label, self.label)
        if self.estimation is not None and saved and saved.get("sha256") == self.estimation.sha256:
            self.estimation.restore(saved["state"])


def _test_stats(test: Any) -> dict:
    """A drift test's last statistic, its threshold (the critical value at the
    test's level) and p-value, and the test's name (ks, psi, chi2 or a River
    detector's)."""
    return {"test": getattr(test, "method", None) or getattr(test, "name", None),
            "statistic": getattr(test, "last_statistic", None), "threshold": getattr(test, "last_threshold", None),
            "p_value": getattr(test, "last_p_value", None)}


class ModelMonitor:
    """All monitoring of one model (see the module docstring).

    Parameters
    ----------
    model
        The model's name.
    policy
        Its monitor policy (``Policy.monitor``).
    profile_for
        ``version -> profile dict | None``: the registry's reference profile
        of a version (called once, when the version first appears).
    positive_label
        Positive class for binary metrics, as event text (``None``: the
        greater class, see :mod:`driftline.streams.metrics`).
    max_versions
        Versions kept; the least recently active beyond this are dropped
        (bounded state).
    chunk
        Events per version buffered before vectorised processing (single-
        event calls stay cheap). Buffered events are part of the state;
        :meth:`snapshots` and :meth:`flush` process them first, and alerts a
        snapshot's flush finds come out of the next ``observe_*``/``flush``.
    """

    def __init__(self, model: str, policy: MonitorPolicy, profile_for: Callable[[int], dict | None],
                 positive_label: Any = None, max_versions: int = 3, chunk: int = 64):
        self.model = model
        self.chunk = int(chunk)
        self.deferred: list[tuple[int, Finding]] = []  # found while taking snapshots; out with the next call
        self.policy = policy
        self.profile_for = profile_for
        self.positive_label = None if positive_label is None else class_key(positive_label)
        self.max_versions = max_versions
        self.versions: dict[int, VersionMonitor] = {}
        self.dispatch = AlertDispatch(model, policy)

    # -- versions ---------------------------------------------------------------
    def version(self, version: int, now: float) -> VersionMonitor:
        vm = self.versions.get(version)
        if vm is None:
            try:
                profile = self.profile_for(version)
            except (DriftlineError, OSError):  # registry unreachable or refusing: fall back to self-reference
                profile = None
            vm = self.versions[version] = VersionMonitor(self.model, version, self.policy, profile,
                                                         self.positive_label, self.chunk)
            vm.last_seen = now
            self._evict()
        return vm

    def _evict(self) -> None:
        while len(self.versions) > self.max_versions:
            oldest = min(self.versions.values(), key=lambda v: (v.last_seen, v.version))
            del self.versions[oldest.version]
            self.dispatch.forget_version(oldest.version)

    def on_promoted(self, version: int, now: float) -> None:
        """A ``promoted`` model event: the version starts (or restarts) its warm-up."""
        vm = self.version(version, now)
        self.deferred.extend((version, f) for f in vm.flush(now))
        vm.restart_warmup()
        vm.last_seen = now

    # -- observation ---------------------------------------------------------------
    def observe_predictions(self, predictions: PredictionColumns | Sequence[Prediction], now: float) -> MonitorOutput:
        """Data and prediction drift, outliers, latency and throughput."""
        if not isinstance(predictions, PredictionColumns):
            predictions = PredictionColumns.from_events(_of_model(predictions, self.model))
        findings: list[tuple[int, Finding]] = []
        for version, group in predictions.by_version().items():
            vm = self.version(version, now)
            findings.extend((version, f) for f in vm.observe_predictions(group, now))
        return self._emit(findings, now)

    def observe_joined(self, records: JoinedColumns | Sequence[LabeledRecord], now: float) -> MonitorOutput:
        """Metrics, concept drift and metric thresholds."""
        if not isinstance(records, JoinedColumns):
            records = JoinedColumns.from_events(_of_model(records, self.model))
        findings: list[tuple[int, Finding]] = []
        for version, group in records.by_version().items():
            vm = self.version(version, now)
            findings.extend((version, f) for f in vm.observe_joined(group, now))
        return self._emit(findings, now)

    def observe_expired(self, model_version: int, count: int, now: float) -> None:
        """Predictions whose label never came (label coverage)."""
        if count > 0:
            self.version(model_version, now).expired += int(count)

    def snapshots(self, now: float) -> list[MetricsSnapshot]:
        """One metrics snapshot per kept version (buffered events included)."""
        for v in sorted(self.versions):
            self.deferred.extend((v, f) for f in self.versions[v].flush(now))
        return [self.versions[v].snapshot(now) for v in sorted(self.versions)]

    def flush(self, now: float) -> MonitorOutput:
        """Process every buffered event; alerts and requests they raise."""
        findings: list[tuple[int, Finding]] = []
        for v in sorted(self.versions):
            findings.extend((v, f) for f in self.versions[v].flush(now))
        return self._emit(findings, now)

    def _emit(self, findings: list[tuple[int, Finding]], now: float) -> MonitorOutput:
        if self.deferred:
            findings = self.deferred + findings
            self.deferred = []
        return self.dispatch.emit(findings, now)

    # -- state ---------------------------------------------------------------------
    def to_state(self) -> bytes:
        """Serialise to JSON bytes (no pickle; see :mod:`driftline.streams.state`)."""
        return state_codec.dumps({
            "format": STATE_FORMAT, "model": self.model, "positive_label": self.positive_label,
            "max_versions": self.max_versions, "chunk": self.chunk,
            "deferred": [[v, f.kind, f.subject, f.detector, f.value, f.threshold, f.message]
                         for v, f in self.deferred],
            "versions": [vm.to_state() for vm in self.versions.values()],
            **self.dispatch.to_state(),
        })

    @classmethod
    def from_state(cls, data: bytes, policy: MonitorPolicy,
                   profile_for: Callable[[int], dict | None]) -> "ModelMonitor":
        """Rebuild from :meth:`to_state` output; raises ``StateError`` on bad data."""
        raw = state_codec.loads(data)
        if not isinstance(raw, dict) or raw.get("format") != STATE_FORMAT:
            raise state_codec.StateError(f"state: unknown monitor state format {raw.get('format') if isinstance(raw, dict) else raw!r}")
        try:
            self = cls(raw["model"], policy, profile_for, None, int(raw["max_versions"]), int(raw["chunk"]))
            self.deferred = [(int(v), Finding(*rest)) for v, *rest in raw["deferred"]]
            self.positive_label = raw["positive_label"]
            for vs in raw["versions"]:
                vm = VersionMonitor.from_state(vs, policy)
                self.versions[vm.version] = vm
                if vm.saved_estimation is not None:
                    vm.resume_estimation(profile_for(vm.version))
            self.dispatch = AlertDispatch.from_state(raw, self.model, policy)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise state_codec.StateError(f"state: malformed monitor state ({type(error).__name__}: {error})") from None
        return self


def _of_model(events: Sequence[Any], model: str) -> Sequence[Any]:
    """``events``, each checked to be of ``model``."""
    for e in events:
        if e.model != model:
            raise ValueError(f"event {e.event_id!r} is for model {e.model!r}, not {model!r}")
    return events


def _first_value(column: np.ndarray | list) -> Any:
    """A feature column's first value that is not missing (None: none is)."""
    if isinstance(column, np.ndarray):
        present = column[~np.isnan(column)]
        return float(present[0]) if present.size else None
    return next((v for v in column if v is not None), None)
