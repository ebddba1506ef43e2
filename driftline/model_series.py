"""Prometheus series of the monitor's per-version metrics snapshots.

The monitor publishes one :class:`driftline.events.MetricsSnapshot` per
model version to the ``metrics`` topic every ``--snapshot-interval``; the
same snapshot objects are handed to :class:`ModelSeries`, which turns them
into Prometheus series at scrape time — one source of truth for the topic
and ``/metrics``.

A version that is no longer served disappears: its series are dropped once
it has seen no event for ``grace_s`` seconds while another version of the
same model has seen one since (a model whose only version is quiet keeps
its series), or at once when the monitor stops keeping the version.

Examples
--------
>>> from driftline.events import MetricsSnapshot
>>> series = ModelSeries(grace_s=60)
>>> snap = MetricsSnapshot("churn", 1, 100.0, {"accuracy": 0.9}, {"accuracy": 0.8},
...                        {"predictions": 10, "latency_p95_ms": 12.0, "last_seen": 100.0})
>>> series.update("churn", [snap])
>>> fams = {f.name: f for f in series.collect(now=130.0)}
>>> [(s.labels["window"], s.value) for s in fams["driftline_model_accuracy"].samples]
[('cumulative', 0.9), ('rolling', 0.8)]
>>> [(s.labels["quantile"], s.value) for s in fams["driftline_prediction_latency_seconds"].samples]
[('0.95', 0.012)]
"""

from __future__ import annotations

import math
import re
import threading
import time
from typing import Any, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .catalog import METRICS

__all__ = ["ModelSeries", "DEFAULT_GRACE_S"]

#: Seconds a retired version's series stay after its last event.
DEFAULT_GRACE_S = 600.0

_NAME = re.compile(r"[^a-zA-Z0-9_]")
VERSION = ["model", "version"]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class ModelSeries:
    """Latest metrics snapshot per model version, exported as Prometheus series.

    Parameters
    ----------
    grace_s
        Seconds a version that is no longer served keeps its series (see the
        module docstring).
    """

    def __init__(self, grace_s: float = DEFAULT_GRACE_S):
        if not grace_s >= 0:
            raise ValueError(f"grace_s must be >= 0 (got {grace_s!r})")
        self.grace_s = float(grace_s)
        self._lock = threading.Lock()
        self._snapshots: dict[str, dict[int, Any]] = {}

    def update(self, model: str, snapshots: Sequence[Any]) -> None:
        """The model's snapshots of one round: every version the monitor keeps."""
        with self._lock:
            self._snapshots[model] = {s.model_version: s for s in snapshots}

    def forget(self, model: str) -> None:
        """Drop a model's series (the monitor no longer owns it)."""
        with self._lock:
            self._snapshots.pop(model, None)

    def live(self, now: float | None = None) -> list[Any]:
        """The snapshots whose series are exported at ``now``."""
        now = time.time() if now is None else now
        with self._lock:
            models = {m: list(v.values()) for m, v in self._snapshots.items()}
        kept = []
        for snaps in models.values():
            newest = max((s.stats.get("last_seen") or 0.0 for s in snaps), default=0.0)
            for snap in snaps:
                seen = snap.stats.get("last_seen") or 0.0
                if seen < newest and now - seen > self.grace_s:
                    continue  # retired: another version is served
                kept.append(snap)
        return sorted(kept, key=lambda s: (s.model, s.model_version))

    def describe(self) -> list:
        return []  # families depend on the snapshots

    def collect(self, now: float | None = None) -> Iterator:
        snaps = self.live(now)
        fams: dict[str, Any] = {}

        def gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
            if name not in fams:
                fams[name] = GaugeMetricFamily(name, doc, labels=labels)
            return fams[name]

        def counter(name: str, doc: str) -> CounterMetricFamily:
            if name not in fams:
                fams[name] = CounterMetricFamily(name, doc, labels=VERSION)
            return fams[name]

        serving: dict[str, tuple[float, int]] = {}
        for snap in snaps:
            key = [snap.model, str(snap.model_version)]
            stats = snap.stats or {}
            seen = stats.get("last_seen") or 0.0
            if snap.model not in serving or (seen, snap.model_version) > serving[snap.model]:
                serving[snap.model] = (seen, snap.model_version)
            for window, values in (("cumulative", snap.cumulative), ("rolling", snap.rolling)):
                for metric, value in sorted((values or {}).items()):
                    value = _number(value)
                    if value is not None:
                        gauge(f"driftline_model_{_NAME.sub('_', metric)}",
                              f"Online {metric} of a model version", VERSION + ["window"]).add_metric(
                            key + [window], value)
            for name, stat, doc in (("predictions", "predictions", "Predictions seen"),
                                    ("labeled", "joined", "Predictions joined with their label"),
                                    ("expired", "expired", "Predictions whose label never came"),
                                    ("outliers", "outliers", "Predictions flagged as outliers")):
                value = _number(stats.get(stat))
                if value is not None:
                    counter(f"driftline_model_{name}", doc).add_metric(key, value)
            for name, stat, doc, scale in (
                    ("driftline_label_coverage_ratio", "label_coverage",
                     "Share of settled predictions that got their label", 1.0),
                    ("driftline_outlier_ratio", "outlier_rate", "Share of recent predictions flagged as outliers",
                     1.0),
                    ("driftline_model_throughput_events_per_second", "throughput_eps", "Predictions per second",
                     1.0)):
                value = _number(stats.get(stat))
                if value is not None:
                    gauge(name, doc, VERSION).add_metric(key, value * scale)
            for quantile, stat in (("0.5", "latency_p50_ms"), ("0.95", "latency_p95_ms"), ("0.99", "latency_p99_ms")):
                value = _number(stats.get(stat))
                if value is not None:
                    gauge("driftline_prediction_latency_seconds", "Prediction latency quantiles (recent)",
                          VERSION + ["quantile"]).add_metric(key + [quantile], value / 1000.0)
            delay = _number(stats.get("label_delay_p50_s"))
            if delay is not None:
                gauge("driftline_label_delay_seconds", "Delay between a prediction and its label (quantile)",
                      VERSION + ["quantile"]).add_metric(key + ["0.5"], delay)
            if stats.get("task") != "regression":
                for cls, share in sorted((stats.get("prediction_distribution") or {}).items()):
                    share = _number(share)
                    if share is not None:
                        gauge("driftline_prediction_class_ratio", "Share of predictions per class",
                              VERSION + ["class"]).add_metric(key + [str(cls)], share)
            tests: list[tuple[str, str, dict]] = [("driftline_feature_drift", feature, entry)
                                                  for feature, entry in sorted((stats.get("drift") or {}).items())]
            if stats.get("prediction_drift"):
                tests.append(("driftline_prediction_drift", "", stats["prediction_drift"]))
            for prefix, feature, entry in tests:
                labels = VERSION + (["feature", "test"] if feature else ["test"])
                values = key + ([feature] if feature else []) + [str(entry.get("test") or "unknown")]
                for part, doc in (("statistic", "Last drift test statistic"),
                                  ("threshold", "Critical value of the drift statistic at the test's level"),
                                  ("p_value", "P-value of the last drift test")):
                    value = _number(entry.get(part))
                    if value is not None:
                        gauge(f"{prefix}_{part}", doc, labels).add_metric(values, value)
            _estimation(gauge, key, stats)
        for model, (_, version) in sorted(serving.items()):
            gauge("driftline_model_serving_version", "The model's most recently active version",
                  ["model"]).add_metric([model], float(version))
        return iter(fams.values())





def _estimation(gauge, key: list[str], stats: dict) -> None:
    """Performance estimated before labels (``stats.estimated``, CBPE/DLE,
    see ``driftline.streams.estimation``) with its 95 % bounds, and the estimated
    minus realized gap over the last completed window of joined pairs."""
    estimated = stats.get("estimated")
    if not isinstance(estimated, dict):
        return  # the version has no calibrator
    for metric in METRICS.names(estimated=True):
        value = _number(estimated.get(metric))
        if value is None:
            continue
        family = gauge("driftline_estimated_metric", "Metric of a model version estimated before labels (CBPE/DLE)",
                       VERSION + ["metric", "bound"])
        family.add_metric(key + [metric, "estimate"], value)
        bounds = estimated.get(f"{metric}_ci") or []
        for bound, limit in zip(("lower", "upper"), bounds):
            limit = _number(limit)
            if limit is not None:
                family.add_metric(key + [metric, bound], limit)
    gap = stats.get("estimation_gap") or {}
    last = _number(gap.get("last"))
    if last is not None:
        gauge("driftline_estimated_gap", "Estimated minus realized metric over the last window of joined pairs",
              VERSION + ["metric"]).add_metric(key + [str(gap.get("metric") or "accuracy")], last)
