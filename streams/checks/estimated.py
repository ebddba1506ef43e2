"""``estimated_performance``: a metric estimated before labels crossed its limit."""

from __future__ import annotations

from driftline.policy import LOWER_IS_BETTER

from .base import Check, Finding, PredictionBatch

__all__ = ["EstimatedPerformanceCheck"]


class EstimatedPerformanceCheck(Check):
    """The version's performance estimate (:mod:`driftline.streams.estimation`:
    CBPE for classifiers, DLE for regressors, from the registry's estimation
    map) against ``policy.estimated_thresholds``, once ``policy.window``
    predictions came after the warm-up.

    The estimator is the version's (snapshots report it and it is saved with
    the version), so this check has no state of its own. Versions without an
    estimation map never raise it.

    Examples
    --------
    >>> from driftline.policy import MonitorPolicy
    >>> EstimatedPerformanceCheck(MonitorPolicy()).observe(PredictionBatch("m v1", []), now=0.0)
    []
    """

    kind = "estimated_performance"
    watches = "predictions"

    def observe(self, batch: PredictionBatch, now: float) -> list[Finding]:
        estimation = batch.estimation
        if estimation is None or batch.after_warmup < self.policy.window:
            return []
        return [Finding(
            "estimated_performance", metric, estimation.get()["estimated"]["method"], value, limit,
            f"estimated {metric} of {batch.label} is {value:.4g}, "
            f"{'above' if metric in LOWER_IS_BETTER else 'below'} the limit {limit:g} "
            f"(last {count} predictions, before their labels)")
            for metric, value, limit, count in estimation.check(self.policy.estimated_thresholds)]
