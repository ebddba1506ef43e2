"""``prediction_drift``: the distribution of a version's predictions moved."""

from __future__ import annotations

import numpy as np

from driftline.policy import MonitorPolicy

from ..drift import CategoricalDriftTest, NumericDriftTest
from .base import Check, Finding, PredictionBatch

__all__ = ["PredictionDriftCheck"]


class PredictionDriftCheck(Check):
    """The predictions tested like a feature: KS for numeric predictions,
    chi-square for classes, against the profile's ``prediction`` entry or
    the version's own past.

    The test is made on the first batch (whatever ``policy.prediction_drift``
    says: snapshots report it) and fed only when ``policy.prediction_drift``.

    Examples
    --------
    >>> from driftline.events import Prediction
    >>> from driftline.policy import MonitorPolicy
    >>> check = PredictionDriftCheck(MonitorPolicy(drift_window=100))
    >>> def batch(classes):
    ...     preds = [Prediction(str(i), "m", 1, 0.0, {}, c) for i, c in enumerate(classes)]
    ...     return PredictionBatch("m v1", preds, alpha=1e-3, predicted=[str(c) for c in classes], reference_size=200)
    >>> check.observe(batch([0, 1] * 150), now=0.0)
    []
    >>> [f.message[:38] for f in check.observe(batch([1] * 100), now=1.0)]
    ['prediction drift of m v1: chi2 statist']
    """

    kind = "prediction_drift"
    watches = "predictions"

    def __init__(self, policy: MonitorPolicy):
        super().__init__(policy)
        self.test: NumericDriftTest | CategoricalDriftTest | None = None

    def _make_test(self, batch: PredictionBatch) -> NumericDriftTest | CategoricalDriftTest:
        prof = (batch.profile or {}).get("prediction") if batch.profile else None
        prof = prof if isinstance(prof, dict) else None
        if batch.pred_kind == "numeric":
            return NumericDriftTest(self.policy.drift_window, batch.reference_size, prof, "ks")
        return CategoricalDriftTest(self.policy.drift_window, batch.reference_size, prof)

    def observe(self, batch: PredictionBatch, now: float) -> list[Finding]:
        if self.test is None:
            self.test = self._make_test(batch)
        if not self.policy.prediction_drift or batch.tested == 0:
            return []
        tail = batch.predicted[batch.skip:]
        results = self.test.update(tail[np.isfinite(tail)] if batch.pred_kind == "numeric" else tail, batch.alpha)
        return [Finding(
            "prediction_drift", "prediction", r.detector, r.statistic, r.threshold,
            f"prediction drift of {batch.label}: {r.detector} statistic {r.statistic:.4g} "
            f"> {r.threshold:.4g}" + (f" (p={r.p_value:.3g})" if r.p_value is not None else ""))
            for r in results[-1:]]

    def to_state(self) -> dict:
        return {"pred_test": None if self.test is None else [type(self.test).__name__, self.test.to_state()]}

    @classmethod
    def from_state(cls, data: dict, policy: MonitorPolicy) -> "PredictionDriftCheck":
        self = cls(policy)
        if data["pred_test"] is not None:
            kind, state = data["pred_test"]
            self.test = (NumericDriftTest if kind == "NumericDriftTest" else CategoricalDriftTest).from_state(state)
        return self
