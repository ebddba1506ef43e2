"""``metric``: a rolling metric crossed its threshold (labels needed)."""

from __future__ import annotations

from driftline.policy import LOWER_IS_BETTER, MonitorPolicy

from .base import Check, Finding, JoinedBatch

__all__ = ["MetricThresholdCheck"]


class MetricThresholdCheck(Check):
    """The rolling metrics (last ``policy.window`` pairs) against
    ``policy.metric_thresholds`` (minimums; maximums for lower-is-better
    metrics), every ``window // 20`` pairs, once the rolling window lies
    wholly after the warm-up.

    Examples
    --------
    >>> import numpy as np
    >>> from driftline.policy import MonitorPolicy
    >>> from driftline.streams.rolling import RollingClassification
    >>> rolling = RollingClassification(100, None)
    >>> rolling.update(["1"] * 100, ["1"] * 60 + ["0"] * 40, None)
    >>> check = MetricThresholdCheck(MonitorPolicy(window=100, metric_thresholds={"accuracy": 0.8}))
    >>> batch = JoinedBatch("m v1", [None] * 100, "classification", np.r_[np.zeros(60), np.ones(40)],
    ...                     after_warmup=100, rolling=rolling)
    >>> [f.message for f in check.observe(batch, now=0.0)]
    ['rolling accuracy of m v1 is 0.6, below the limit 0.8 (last 100 pairs)']
    """

    kind = "metric"
    watches = "joined"

    def __init__(self, policy: MonitorPolicy):
        super().__init__(policy)
        self.unchecked = 0  # pairs since the last comparison

    def observe(self, batch: JoinedBatch, now: float) -> list[Finding]:
        p = self.policy
        if not p.metric_thresholds or batch.errors.size <= batch.skip:
            return []
        self.unchecked += len(batch.records)
        if self.unchecked < max(1, p.window // 20) or batch.after_warmup < p.window:
            return []
        self.unchecked = 0
        values = batch.rolling.get(only=p.metric_thresholds)
        findings = []
        for metric, limit in p.metric_thresholds.items():
            value = values.get(metric)
            if value is None:
                continue
            lower = metric in LOWER_IS_BETTER
            if (value > limit) if lower else (value < limit):
                findings.append(Finding(
                    "metric", metric, "threshold", value, limit,
                    f"rolling {metric} of {batch.label} is {value:.4g}, "
                    f"{'above' if lower else 'below'} the limit {limit:g} (last {batch.rolling.count} pairs)"))
        return findings

    def to_state(self) -> dict:
        return {"joined_unchecked": self.unchecked}

    @classmethod
    def from_state(cls, data: dict, policy: MonitorPolicy) -> "MetricThresholdCheck":
        self = cls(policy)
        self.unchecked = int(data["joined_unchecked"])
        return self
