"""Per-model monitoring: metrics, drift, outliers and latency for every
version of one model, with warm-up, alert cooldowns and retrain requests.

The faust pipeline (``driftline.streams.app``) owns all I/O; it calls a
:class:`ModelMonitor` per model with decoded batches and publishes what comes
back. Nothing here touches Kafka, and every method takes the caller's clock
(``now``, epoch seconds), so behaviour is reproducible.

* A :class:`VersionMonitor` per model version keeps cumulative and rolling
  metrics (:mod:`driftline.streams.metrics`), per-feature data-drift tests and the
  prediction-drift test (:mod:`driftline.streams.drift`, reference: the version's
  registry profile, or the stream's own past), the concept-drift detector on
  the error stream, outlier and latency windows.
* **Warm-up**: a version's first ``policy.warmup`` predictions are not fed to
  data-drift and outlier tests, and its first ``policy.warmup`` joined pairs
  not to concept drift; latency and metric-threshold alerts wait for a
  rolling window (``policy.window``) wholly after the warm-up. A ``promoted``
  model event (:meth:`ModelMonitor.on_promoted`) restarts the warm-up of
  that version, so a promotion does not itself raise alerts.
* **Cooldown**: at most one alert per (model, version, kind, subject) per
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

import math
import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from driftline.events import Alert, LabeledRecord, MetricsSnapshot, Prediction, RetrainRequest, new_id
from driftline.policy import LOWER_IS_BETTER, MonitorPolicy

from . import state as state_codec
from .drift import (
    CategoricalDriftTest,
    ConceptDriftDetector,
    NumericDriftTest,
    RiverFeatureDetector,
    make_feature_test,
    per_test_alpha,
)
from .estimation import make_estimation
from .latency import RollingQuantiles, Throughput
from .metrics import (
    ClassificationMetrics,
    ProbaBatch,
    RegressionMetrics,
    RollingClassification,
    RollingRegression,
    _canonical_prob_key,
    canonical_probabilities,
    class_key,
)
from .outliers import HSTOutliers, OutlierRate, RangeOutliers

__all__ = ["ModelMonitor", "VersionMonitor", "MonitorOutput", "STATE_FORMAT"]

STATE_FORMAT = 1
_MISSING = "<null>"
_OTHER = "<other>"
_MAX_CLASSES = 1000
_MAX_OUTLIER_CATEGORIES = 50


@dataclass
class MonitorOutput:
    """What one call produced: alerts and retrain requests to publish."""

    alerts: list[Alert] = field(default_factory=list)
    retrain_requests: list[RetrainRequest] = field(default_factory=list)

    def extend(self, other: "MonitorOutput") -> None:
        self.alerts.extend(other.alerts)
        self.retrain_requests.extend(other.retrain_requests)


@dataclass
class _Finding:
    """An alert candidate before cooldown."""

    kind: str
    subject: str
    detector: str
    value: float
    threshold: float | None
    message: str


def _finite(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _is_number(v: Any) -> bool:
    return (type(v) is int or type(v) is float) and v == v


def _cat_key(v: Any) -> str:
    return _MISSING if v is None else class_key(v)


class _Feature:
    """Per-feature state: kind, drift test, missing count."""

    def __init__(self, kind: str, test: Any):
        self.kind = kind
        self.test = test
        self.missing = 0
        self.outliers = 0

    def to_state(self) -> dict:
        test = self.test
        kind = "river" if isinstance(test, RiverFeatureDetector) else \
            ("categorical" if isinstance(test, CategoricalDriftTest) else "numeric")
        payload = {"name": test.name, "detector": test.detector, "seen": test.seen} if kind == "river" \
            else test.to_state()
        return {"kind": self.kind, "test_kind": kind, "test": payload, "missing": self.missing,
                "outliers": self.outliers}

    @classmethod
    def from_state(cls, data: dict, policy: MonitorPolicy) -> "_Feature":
        kind = data["test_kind"]
        if kind == "river":
            test = RiverFeatureDetector.__new__(RiverFeatureDetector)
            test.name = data["test"]["name"]
            test.detector = data["test"]["detector"]
            test.seen = int(data["test"]["seen"])
        elif kind == "categorical":
            test = CategoricalDriftTest.from_state(data["test"])
        else:
            test = NumericDriftTest.from_state(data["test"])
        self = cls(data["kind"], test)
        self.missing, self.outliers = int(data["missing"]), int(data["outliers"])
        return self


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
                spec["frequencies"] = {_canonical_prob_key(str(k)): v for k, v in spec["frequencies"].items()}
            feats[name] = spec
        out[section] = feats
    pred = profile.get("prediction")
    if isinstance(pred, dict) and pred.get("frequencies"):
        pred = dict(pred)
        pred["frequencies"] = {_canonical_prob_key(str(k)): v for k, v in pred["frequencies"].items()}
        out["prediction"] = pred
    return out


class VersionMonitor:
    """Everything watched for one model version.

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
        self.pending_predictions: list[Prediction] = []
        self.pending_joined: list[LabeledRecord] = []
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
        self.features: dict[str, _Feature] = {}
        self.pred_test: Any = None
        self.metrics: ClassificationMetrics | RegressionMetrics | None = None
        self.rolling: RollingClassification | RollingRegression | None = None
        self.concept: ConceptDriftDetector | None = None
        self.latency = RollingQuantiles(policy.window)
        self.label_delay = RollingQuantiles(policy.window)
        self.outlier_rate = OutlierRate(policy.window)
        self.hst: HSTOutliers | None = None
        self.pred_counts: dict[str, int] = {}
        self.pred_values = RollingQuantiles(policy.window)
        self.throughput = Throughput()
        self.latency_unchecked = 0
        self.latency_post = 0  # latencies seen since the warm-up ended
        self.joined_unchecked = 0
        self.last_seen = 0.0
        self.range = RangeOutliers(0.1)
        self.estimation = make_estimation(self.profile, policy, positive_label, f"{model} v{version}")
        self.saved_estimation: dict | None = None  # windows from a saved state, until resume_estimation

    # -- helpers -----------------------------------------------------------
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

    def _add_feature(self, name: str, sample: Any) -> _Feature:
        prof = self._feature_profile(name)
        if prof is not None and prof.get("type") in ("numeric", "categorical"):
            kind = prof["type"]
        else:
            kind = "numeric" if _is_number(sample) and type(sample) is not bool else "categorical"
        p = self.policy
        test = make_feature_test(kind, p.data_drift, p.drift_window, self.reference_size, prof,
                                 self.alpha() / p.drift_window)
        feat = self.features[name] = _Feature(kind, test)
        return feat

    def _make_pred_test(self, first_batch: Sequence[Any]) -> None:
        if self.pred_kind is None:
            # Numbers that are not all integral mean a regression model.
            numeric = any(type(v) is float and not v.is_integer() for v in first_batch)
            self.pred_kind = "numeric" if numeric else "categorical"
        prof = (self.profile or {}).get("prediction") if self.profile else None
        prof = prof if isinstance(prof, dict) else None
        if self.pred_kind == "numeric":
            self.pred_test = NumericDriftTest(self.policy.drift_window, self.reference_size, prof, "ks")
        else:
            self.pred_test = CategoricalDriftTest(self.policy.drift_window, self.reference_size, prof)

    def restart_warmup(self) -> None:
        """Start a warm-up at the current position (call :meth:`flush` first)."""
        self.warm_predictions = self.predictions + self.policy.warmup
        self.warm_joined = self.joined + self.policy.warmup
        self.latency_post = 0

    # -- buffering -----------------------------------------------------------------
    def observe_predictions(self, preds: Sequence[Prediction], now: float) -> list[_Finding]:
        """Buffer predictions; process them once a chunk is full."""
        if not self.pending_predictions:
            self.pending_since = now
        self.pending_predictions.extend(preds)
        self.last_seen = now
        if len(self.pending_predictions) >= self.chunk or now - self.pending_since >= self.max_delay_s:
            return self.flush(now)
        return []

    def observe_joined(self, records: Sequence[LabeledRecord], now: float) -> list[_Finding]:
        """Buffer joined pairs; process them once a chunk is full."""
        if not self.pending_joined:
            self.pending_joined_since = now
        self.pending_joined.extend(records)
        self.last_seen = now
        if len(self.pending_joined) >= self.chunk or now - self.pending_joined_since >= self.max_delay_s:
            return self.flush(now)
        return []

    def flush(self, now: float) -> list[_Finding]:
        """Process everything buffered."""
        findings: list[_Finding] = []
        if self.pending_predictions:
            batch, self.pending_predictions = self.pending_predictions, []
            findings += self._process_predictions(batch, now)
        if self.pending_joined:
            batch, self.pending_joined = self.pending_joined, []
            findings += self._process_joined(batch, now)
        return findings

    # -- predictions -------------------------------------------------------------
    def _process_predictions(self, preds: Sequence[Prediction], now: float) -> list[_Finding]:
        n = len(preds)
        if n == 0:
            return []
        p = self.policy
        findings: list[_Finding] = []
        start = self.predictions
        self.predictions += n
        self.last_seen = now
        self.throughput.update(n, now)
        # Events before the end of warm-up feed counters only.
        skip = min(n, max(0, self.warm_predictions - start))

        latencies = [e.latency_ms for e in preds if e.latency_ms is not None]
        raw_preds = [e.prediction for e in preds]
        if self.pred_test is None:
            self._make_pred_test(raw_preds)
        if self.pred_kind == "numeric":
            values = np.array([v if _is_number(v) else np.nan for v in raw_preds], dtype=np.float64)
            self.pred_values.update(values[np.isfinite(values)])
        else:
            values = list(map(class_key, raw_preds))
            counts = self.pred_counts
            for v in values:
                if v in counts:
                    counts[v] += 1
                elif len(counts) < _MAX_CLASSES:
                    counts[v] = 1
                else:  # bounded state even for a mis-detected regression model
                    counts[_OTHER] = counts.get(_OTHER, 0) + 1

        feats = [e.features for e in preds]
        names = set().union(*feats)
        new = [name for name in names if name not in self.features]
        for name in sorted(new):
            sample = next((f.get(name) for f in feats if f.get(name) is not None), None)
            self._add_feature(name, sample)
        alpha = self.alpha()
        outlier_flags = np.zeros(n - skip, dtype=bool)
        numeric_cols: dict[str, np.ndarray] = {}
        for name in sorted(names):
            feat = self.features[name]
            col = [f.get(name) for f in feats]
            if feat.kind == "numeric":
                try:
                    arr = np.array(col, dtype=np.float64)
                except (TypeError, ValueError):
                    arr = np.array([float(v) if _is_number(v) or type(v) is bool else np.nan for v in col])
                missing = np.isnan(arr)
                feat.missing += int(missing.sum())
                arr = arr[skip:]
                numeric_cols[name] = arr
                if arr.size == 0:
                    continue
                test = feat.test
                rng = test.reference_range() if isinstance(test, NumericDriftTest) else None
                if rng is not None:
                    flags = self.range.flags(arr, rng)
                    feat.outliers += int(flags.sum())
                    outlier_flags |= flags
                results = test.update(arr, alpha if not isinstance(test, RiverFeatureDetector) else alpha / p.drift_window)
            else:
                keys = [_cat_key(v) for v in col[skip:]]
                feat.missing += sum(1 for v in col if v is None)
                if not keys:
                    continue
                test = feat.test
                # Unseen categories are outliers only for low-cardinality features
                # (an ID-like feature sees new values all the time).
                if test.ready and len(test.ref_counts) <= _MAX_OUTLIER_CATEGORIES:
                    flags = np.fromiter((k != _MISSING and not test.known(k) for k in keys), dtype=bool,
                                        count=len(keys))
                    feat.outliers += int(flags.sum())
                    outlier_flags |= flags
                results = test.update(keys, alpha)
            for r in results[-1:]:
                findings.append(_Finding(
                    "data_drift", name, r.detector, r.statistic, r.threshold,
                    f"data drift in feature {name!r} of {self.model} v{self.version}: {r.detector} statistic "
                    f"{r.statistic:.4g} > {r.threshold:.4g}"
                    + (f" (p={r.p_value:.3g} < alpha={r.alpha:.3g})" if r.p_value is not None else "")
                    + f" over {r.n} events"))
        if p.prediction_drift and n > skip:
            tail = values[skip:]
            results = self.pred_test.update(tail[np.isfinite(tail)] if self.pred_kind == "numeric" else tail, alpha)
            for r in results[-1:]:
                findings.append(_Finding(
                    "prediction_drift", "prediction", r.detector, r.statistic, r.threshold,
                    f"prediction drift of {self.model} v{self.version}: {r.detector} statistic {r.statistic:.4g} "
                    f"> {r.threshold:.4g}" + (f" (p={r.p_value:.3g})" if r.p_value is not None else "")))

        if n > skip:
            if p.outlier_detector == "hst":
                # Range flags still count per feature (stats); only HST decides the rate.
                outlier_flags = np.zeros(n - skip, dtype=bool)
            if p.outlier_detector in ("hst", "both"):
                if self.hst is None:
                    limits = {name: self.features[name].test.reference_range()
                              for name in sorted(numeric_cols)
                              if isinstance(self.features[name].test, NumericDriftTest)
                              and self.features[name].test.reference_range() is not None}
                    if limits:
                        self.hst = HSTOutliers(sorted(limits), limits, reference_events=self.reference_size)
                if self.hst is not None:
                    outlier_flags |= self.hst.flags(numeric_cols, n - skip)
            self.outlier_rate.update(outlier_flags)
            if self.outlier_rate.count >= min(p.window, 200):
                rate = self.outlier_rate.rate()
                if rate > p.outlier_rate:
                    findings.append(_Finding(
                        "outliers", "inputs", p.outlier_detector, rate, p.outlier_rate,
                        f"outlier rate of {self.model} v{self.version} is {rate:.2%} over the last "
                        f"{self.outlier_rate.count} events (limit {p.outlier_rate:.2%})"))

        if latencies:
            self.latency.update(np.asarray(latencies, dtype=np.float64))
            if n > skip:
                self.latency_post += sum(1 for e in preds[skip:] if e.latency_ms is not None)
            # Alert only on a window that lies wholly after the warm-up.
            if p.latency_p95_ms is not None and n > skip and self.latency_post >= p.window:
                self.latency_unchecked += len(latencies)
                if self.latency_unchecked >= min(50, p.window):
                    self.latency_unchecked = 0
                    p95 = self.latency.percentiles([95])[0]
                    if p95 > p.latency_p95_ms:
                        findings.append(_Finding(
                            "latency", "latency_p95_ms", "rolling_p95", p95, p.latency_p95_ms,
                            f"p95 prediction latency of {self.model} v{self.version} is {p95:.1f} ms over the "
                            f"last {self.latency.count} predictions (limit {p.latency_p95_ms:g} ms)"))
        if self.estimation is not None:
            self.estimation.observe_predictions(preds, raw_preds)
            if self.predictions - self.warm_predictions >= p.window:
                for metric, value, limit, count in self.estimation.check(p.estimated_thresholds):
                    findings.append(_Finding(
                        "estimated_performance", metric, self.estimation.get()["estimated"]["method"], value, limit,
                        f"estimated {metric} of {self.model} v{self.version} is {value:.4g}, "
                        f"{'above' if metric in LOWER_IS_BETTER else 'below'} the limit {limit:g} "
                        f"(last {count} predictions, before their labels)"))
        return findings

    # -- joined pairs --------------------------------------------------------------
    def _decide_task(self, records: Sequence[LabeledRecord]) -> None:
        if self.task is not None:
            return
        for r in records:
            for v in (r.label, r.prediction):
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
        self.concept = ConceptDriftDetector(self.policy.concept_drift, self.task)

    def _process_joined(self, records: Sequence[LabeledRecord], now: float) -> list[_Finding]:
        n = len(records)
        if n == 0:
            return []
        p = self.policy
        if self.metrics is None:
            self._decide_task(records)
            self._init_metrics()
        start = self.joined
        self.joined += n
        self.last_seen = now
        self.label_delay.update(np.fromiter((r.label_timestamp - r.prediction_timestamp for r in records),
                                            dtype=np.float64, count=n))
        findings: list[_Finding] = []
        if self.task == "regression":
            y = np.array([float(r.label) if _is_number(r.label) else np.nan for r in records])
            yp = np.array([float(r.prediction) if _is_number(r.prediction) else np.nan for r in records])
            ok = np.isfinite(y) & np.isfinite(yp)
            y, yp = y[ok], yp[ok]
            self.metrics.update(y, yp)
            self.rolling.update(y, yp)
            errors = np.abs(y - yp)
        else:
            yk = list(map(class_key, [r.label for r in records]))
            pk = list(map(class_key, [r.prediction for r in records]))
            probs = [r.probabilities for r in records]
            batch = ProbaBatch(yk, canonical_probabilities(probs)) if any(probs) else None
            self.metrics.update(yk, pk, batch)
            self.rolling.update(yk, pk, batch)
            errors = np.fromiter(map(operator.ne, yk, pk), dtype=np.float64, count=n)
        if self.estimation is not None:
            self.estimation.observe_joined(records, None if self.task == "regression" else 1.0 - errors)
        skip = min(errors.size, max(0, self.warm_joined - start))
        if self.concept.scale is None and self.task == "regression" and self.joined >= self.warm_joined:
            self.concept.set_scale(self.metrics.get()["mae"] or 0.0)
        hits = self.concept.update(errors[skip:]) if errors.size > skip else []
        if hits:
            # value: the detector's estimate of the recent error (ADWIN: the mean of
            # its window after the cut); threshold: the level it rose from (ADWIN: the
            # mean of the part it dropped; other detectors: the version's overall error).
            recent, before, recent_n = self.concept.levels[-1]
            if recent is None:
                fed = errors[skip:]
                window = fed[max(0, hits[-1] - 99): hits[-1] + 1]
                recent, recent_n = float(window.mean()), int(window.size)
            if before is None:
                if self.task == "regression":
                    before = self.metrics.abs_err.value() / max(1, self.metrics.n)
                else:
                    before = 1.0 - float(np.trace(self.metrics.cm)) / max(1, self.metrics.n)
                where = "the version's overall"
            else:
                where = "before the change"
            level = "mean absolute error" if self.task == "regression" and not self.concept.binary else "error rate"
            params = ", ".join(f"{k}={v}" for k, v in sorted(self.concept.spec.params.items())) or "defaults"
            findings.append(_Finding(
                "concept_drift", "error", self.concept.spec.name, recent, before,
                f"concept drift in the error stream of {self.model} v{self.version}: {self.concept.spec.name} "
                f"({params}) detected an increase; {level} {recent:.4g} over the last {recent_n} labeled "
                f"predictions vs {before:.4g} {where}"))
        if p.metric_thresholds and errors.size > skip:
            self.joined_unchecked += n
            # Only a rolling window wholly after the warm-up is compared.
            if self.joined_unchecked >= max(1, p.window // 20) and self.joined - self.warm_joined >= p.window:
                self.joined_unchecked = 0
                values = self.rolling.get(only=p.metric_thresholds)
                for metric, limit in p.metric_thresholds.items():
                    value = values.get(metric)
                    if value is None:
                        continue
                    lower = metric in LOWER_IS_BETTER
                    if (value > limit) if lower else (value < limit):
                        findings.append(_Finding(
                            "metric", metric, "threshold", value, limit,
                            f"rolling {metric} of {self.model} v{self.version} is {value:.4g}, "
                            f"{'above' if lower else 'below'} the limit {limit:g} (last {self.rolling.count} pairs)"))
        return findings

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
            "outliers": self.outlier_rate.outliers,
            "outlier_rate": self.outlier_rate.rate(),
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
        return {
            # the estimation map (up to a few 100 kB) is not state: it is read from the registry again
            "model": self.model, "version": self.version, "chunk": self.chunk,
            "profile": None if self.profile is None else {k: v for k, v in self.profile.items() if k != "estimation"},
            "pending_predictions": [e.to_dict() for e in self.pending_predictions],
            "pending_joined": [e.to_dict() for e in self.pending_joined],
            "pending_since": [self.pending_since, self.pending_joined_since],
            "positive_label": self.positive_label, "task": self.task, "pred_kind": self.pred_kind,
            "counts": [self.predictions, self.joined, self.expired, self.warm_predictions, self.warm_joined,
                       self.latency_unchecked, self.joined_unchecked, self.latency_post],
            "last_seen": self.last_seen,
            "features": {name: f.to_state() for name, f in self.features.items()},
            "feature_order": list(self.features),
            "pred_test": None if self.pred_test is None else
            [type(self.pred_test).__name__, self.pred_test.to_state()],
            "metrics": None if self.metrics is None else self.metrics.to_state(),
            "rolling": None if self.rolling is None else self.rolling.to_state(),
            "concept": None if self.concept is None else self.concept.to_state(),
            "latency": self.latency.to_state(), "label_delay": self.label_delay.to_state(),
            "outlier_rate": self.outlier_rate.to_state(),
            "hst": None if self.hst is None else self.hst.to_state(),
            "pred_counts": [list(self.pred_counts), list(self.pred_counts.values())],
            "pred_values": self.pred_values.to_state(), "throughput": self.throughput.to_state(),
            "estimation": None if self.estimation is None else
            {"sha256": self.estimation.sha256, "state": self.estimation.to_state()},
        }

    @classmethod
    def from_state(cls, data: dict, policy: MonitorPolicy) -> "VersionMonitor":
        self = cls(data["model"], int(data["version"]), policy, None, data["positive_label"], int(data["chunk"]))
        self.profile = data["profile"]
        self.pending_predictions = [Prediction.from_dict(e) for e in data["pending_predictions"]]
        self.pending_joined = [LabeledRecord.from_dict(e) for e in data["pending_joined"]]
        self.pending_since, self.pending_joined_since = (float(t) for t in data["pending_since"])
        self.task, self.pred_kind = data["task"], data["pred_kind"]
        (self.predictions, self.joined, self.expired, self.warm_predictions, self.warm_joined,
         self.latency_unchecked, self.joined_unchecked, self.latency_post) = (int(v) for v in data["counts"])
        self.last_seen = float(data["last_seen"])
        self.features = {name: _Feature.from_state(data["features"][name], policy) for name in data["feature_order"]}
        if data["pred_test"] is not None:
            kind, st = data["pred_test"]
            self.pred_test = (NumericDriftTest if kind == "NumericDriftTest" else CategoricalDriftTest).from_state(st)
        if data["metrics"] is not None:
            if self.task == "regression":
                self.metrics = RegressionMetrics.from_state(data["metrics"])
                self.rolling = RollingRegression.from_state(data["rolling"])
            else:
                self.metrics = ClassificationMetrics.from_state(data["metrics"])
                self.rolling = RollingClassification.from_state(data["rolling"])
        if data["concept"] is not None:
            self.concept = ConceptDriftDetector.from_state(data["concept"], policy.concept_drift)
        self.latency = RollingQuantiles.from_state(data["latency"])
        self.label_delay = RollingQuantiles.from_state(data["label_delay"])
        self.outlier_rate = OutlierRate.from_state(data["outlier_rate"])
        if data["hst"] is not None:
            self.hst = HSTOutliers.from_state(data["hst"])
        keys, vals = data["pred_counts"]
        self.pred_counts = dict(zip(keys, (int(v) for v in vals)))
        self.pred_values = RollingQuantiles.from_state(data["pred_values"])
        self.throughput = Throughput.from_state(data["throughput"])
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
        self.estimation = make_estimation(self.profile, self.policy, self.positive_label,
                                          f"{self.model} v{self.version}")
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
        self.deferred: list[tuple[int, _Finding]] = []
        self.policy = policy
        self.profile_for = profile_for
        self.positive_label = None if positive_label is None else class_key(positive_label)
        self.max_versions = max_versions
        self.versions: dict[int, VersionMonitor] = {}
        self.cooldowns: dict[tuple[int, str, str], float] = {}
        self.last_retrain: float | None = None

    # -- versions ---------------------------------------------------------------
    def version(self, version: int, now: float) -> VersionMonitor:
        vm = self.versions.get(version)
        if vm is None:
            try:
                profile = self.profile_for(version)
            except Exception:  # the registry may be unreachable: fall back to self-reference
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
            self.cooldowns = {k: t for k, t in self.cooldowns.items() if k[0] != oldest.version}

    def on_promoted(self, version: int, now: float) -> None:
        """A ``promoted`` model event: the version starts (or restarts) its warm-up."""
        vm = self.version(version, now)
        self.deferred.extend((version, f) for f in vm.flush(now))
        vm.restart_warmup()
        vm.last_seen = now

    # -- observation ---------------------------------------------------------------
    def observe_predictions(self, predictions: Sequence[Prediction], now: float) -> MonitorOutput:
        """Data and prediction drift, outliers, latency and throughput."""
        findings: list[tuple[int, _Finding]] = []
        for version, group in _by_version(predictions, self.model).items():
            vm = self.version(version, now)
            findings.extend((version, f) for f in vm.observe_predictions(group, now))
        return self._emit(findings, now)

    def observe_joined(self, records: Sequence[LabeledRecord], now: float) -> MonitorOutput:
        """Metrics, concept drift and metric thresholds."""
        findings: list[tuple[int, _Finding]] = []
        for version, group in _by_version(records, self.model).items():
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
        findings: list[tuple[int, _Finding]] = []
        for v in sorted(self.versions):
            findings.extend((v, f) for f in self.versions[v].flush(now))
        return self._emit(findings, now)

    def _emit(self, findings: list[tuple[int, _Finding]], now: float) -> MonitorOutput:
        if self.deferred:
            findings = self.deferred + findings
            self.deferred = []
        out = MonitorOutput()
        p = self.policy
        for version, f in findings:
            key = (version, f.kind, f.subject)
            last = self.cooldowns.get(key)
            cooldown = p.estimated_cooldown_s if f.kind == "estimated_performance" and p.estimated_cooldown_s \
                else p.cooldown_s
            if last is not None and now - last < cooldown:
                continue
            self.cooldowns[key] = now
            value = _finite(f.value)
            out.alerts.append(Alert(
                alert_id=new_id(), model=self.model, model_version=version, kind=f.kind, subject=f.subject,
                detector=f.detector, value=0.0 if value is None else value, threshold=_finite(f.threshold),
                timestamp=now, message=f.message[:4000]))
        triggering = [a for a in out.alerts if a.kind in p.retrain_on]
        if triggering and (self.last_retrain is None or now - self.last_retrain >= p.retrain_cooldown_s):
            self.last_retrain = now
            first = triggering[0]
            reason = "drift" if first.kind.endswith("drift") else "metric"
            out.retrain_requests.append(RetrainRequest(
                request_id=new_id(), model=self.model, reason=reason, timestamp=now,
                alert_ids=[a.alert_id for a in triggering], model_version=first.model_version,
                message="; ".join(a.message for a in triggering)[:1000]))
        return out

    # -- state ---------------------------------------------------------------------
    def to_state(self) -> bytes:
        """Serialise to JSON bytes (no pickle; see :mod:`driftline.streams.state`)."""
        return state_codec.dumps({
            "format": STATE_FORMAT, "model": self.model, "positive_label": self.positive_label,
            "max_versions": self.max_versions, "chunk": self.chunk,
            "deferred": [[v, f.kind, f.subject, f.detector, f.value, f.threshold, f.message]
                         for v, f in self.deferred],
            "versions": [vm.to_state() for vm in self.versions.values()],
            "cooldowns": [[v, k, s, t] for (v, k, s), t in self.cooldowns.items()],
            "last_retrain": self.last_retrain,
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
            self.deferred = [(int(v), _Finding(*rest)) for v, *rest in raw["deferred"]]
            self.positive_label = raw["positive_label"]
            for vs in raw["versions"]:
                vm = VersionMonitor.from_state(vs, policy)
                self.versions[vm.version] = vm
                if vm.saved_estimation is not None:
                    vm.resume_estimation(profile_for(vm.version))
            self.cooldowns = {(int(v), k, s): float(t) for v, k, s, t in raw["cooldowns"]}
            self.last_retrain = raw["last_retrain"]
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise state_codec.StateError(f"state: malformed monitor state ({type(error).__name__}: {error})") from None
        return self


def _by_version(events: Sequence[Any], model: str) -> dict[int, list]:
    models = {e.model for e in events}
    versions = {e.model_version for e in events}
    if models <= {model} and len(versions) == 1:
        return {versions.pop(): list(events)}
    groups: dict[int, list] = {}
    for e in events:
        if e.model != model:
            raise ValueError(f"event {e.event_id!r} is for model {e.model!r}, not {model!r}")
        groups.setdefault(e.model_version, []).append(e)
    return groups
