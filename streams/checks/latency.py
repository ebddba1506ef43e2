"""``latency``: the rolling p95 prediction latency passed its limit."""

from __future__ import annotations

from driftline.policy import MonitorPolicy

from .base import Check, Finding, PredictionBatch

__all__ = ["LatencyCheck"]


class LatencyCheck(Check):
    """p95 of the version's rolling latency window against
    ``policy.latency_p95_ms``, once ``policy.window`` latencies came after the
    warm-up (so the window lies wholly after it), every ``min(50, window)``
    latencies.

    Examples
    --------
    >>> import numpy as np
    >>> from driftline.events import Prediction
    >>> from driftline.policy import MonitorPolicy
    >>> from driftline.streams.latency import RollingQuantiles
    >>> check = LatencyCheck(MonitorPolicy(window=100, latency_p95_ms=50.0))
    >>> window = RollingQuantiles(100)
    >>> preds = [Prediction(str(i), "m", 1, 0.0, {}, 0, latency_ms=80.0) for i in range(100)]
    >>> window.update(np.full(100, 80.0))
    >>> [f.message for f in check.observe(PredictionBatch("m v1", preds, latencies=[80.0] * 100,
    ...                                                   tested_latencies=100, latency_window=window), now=0.0)]
    ['p95 prediction latency of m v1 is 80.0 ms over the last 100 predictions (limit 50 ms)']
    """

    kind = "latency"
    watches = "predictions"

    def __init__(self, policy: MonitorPolicy):
        super().__init__(policy)
        self.unchecked = 0  # latencies since the last comparison
        self.post = 0  # latencies seen since the warm-up ended

    def restart_warmup(self) -> None:
        self.post = 0

    def observe(self, batch: PredictionBatch, now: float) -> list[Finding]:
        if not len(batch.latencies):
            return []
        p = self.policy
        self.post += batch.tested_latencies
        if p.latency_p95_ms is None or not batch.tested or self.post < p.window:
            return []
        self.unchecked += len(batch.latencies)
        if self.unchecked < min(50, p.window):
            return []
        self.unchecked = 0
        window = batch.latency_window
        p95 = window.percentiles([95])[0]
        if not p95 > p.latency_p95_ms:
            return []
        return [Finding("latency", "latency_p95_ms", "rolling_p95", p95, p.latency_p95_ms,
                        f"p95 prediction latency of {batch.label} is {p95:.1f} ms over the "
                        f"last {window.count} predictions (limit {p.latency_p95_ms:g} ms)")]

    def to_state(self) -> dict:
        return {"latency_unchecked": self.unchecked, "latency_post": self.post}

    @classmethod
    def from_state(cls, data: dict, policy: MonitorPolicy) -> "LatencyCheck":
        self = cls(policy)
        self.unchecked, self.post = int(data["latency_unchecked"]), int(data["latency_post"])
        return self
