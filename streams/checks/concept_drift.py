"""``concept_drift``: the error stream of a version rose (labels needed)."""

from __future__ import annotations

import numpy as np

from driftline.policy import MonitorPolicy

from ..drift import ConceptDriftDetector
from .base import Check, Finding, JoinedBatch

__all__ = ["ConceptDriftCheck"]


class ConceptDriftCheck(Check):
    """A River detector (``policy.concept_drift``) on the errors of joined
    pairs after the warm-up: 0/1 misclassifications, or absolute errors
    scaled by the version's MAE at the end of its warm-up (regression).

    The alert's value is the detector's estimate of the recent error (ADWIN:
    the mean of its window after the cut, others: the last 100 errors fed);
    its threshold the level the error rose from (ADWIN: the mean of the part
    it dropped; others: the version's overall error).

    Examples
    --------
    >>> import numpy as np
    >>> from driftline.policy import DetectorSpec, MonitorPolicy
    >>> check = ConceptDriftCheck(MonitorPolicy(concept_drift=DetectorSpec("adwin", {"delta": 0.002})))
    >>> errors = np.r_[np.zeros(1000), np.ones(200)]  # a perfect model starts to fail
    >>> [f.message[:44] for f in check.observe(JoinedBatch("m v1", [], "classification", errors), now=0.0)]
    ['concept drift in the error stream of m v1: a']
    """

    kind = "concept_drift"
    watches = "joined"

    def __init__(self, policy: MonitorPolicy):
        super().__init__(policy)
        self.detector: ConceptDriftDetector | None = None

    def observe(self, batch: JoinedBatch, now: float) -> list[Finding]:
        if self.detector is None:
            self.detector = ConceptDriftDetector(self.policy.concept_drift, batch.task)
        detector = self.detector
        if detector.scale is None and batch.task == "regression" and batch.after_warmup >= 0:
            detector.set_scale(batch.metrics.get()["mae"] or 0.0)
        fed = batch.errors[batch.skip:]
        hits = detector.update(fed) if fed.size else []
        if not hits:
            return []
        recent, before, recent_n = detector.levels[-1]
        if recent is None:
            window = fed[max(0, hits[-1] - 99): hits[-1] + 1]
            recent, recent_n = float(window.mean()), int(window.size)
        if before is None:
            metrics = batch.metrics
            if batch.task == "regression":
                before = metrics.abs_err.value() / max(1, metrics.n)
            else:
                before = 1.0 - float(np.trace(metrics.cm)) / max(1, metrics.n)
            where = "the version's overall"
        else:
            where = "before the change"
        level = "mean absolute error" if batch.task == "regression" and not detector.binary else "error rate"
        params = ", ".join(f"{k}={v}" for k, v in sorted(detector.spec.params.items())) or "defaults"
        return [Finding(
            "concept_drift", "error", detector.spec.name, recent, before,
            f"concept drift in the error stream of {batch.label}: {detector.spec.name} "
            f"({params}) detected an increase; {level} {recent:.4g} over the last {recent_n} labeled "
            f"predictions vs {before:.4g} {where}")]

    def to_state(self) -> dict:
        return {"concept": None if self.detector is None else self.detector.to_state()}

    @classmethod
    def from_state(cls, data: dict, policy: MonitorPolicy) -> "ConceptDriftCheck":
        self = cls(policy)
        if data["concept"] is not None:
            self.detector = ConceptDriftDetector.from_state(data["concept"], policy.concept_drift)
        return self
