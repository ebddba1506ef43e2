"""``data_drift``: a feature's distribution moved away from its reference."""

from __future__ import annotations

from ..drift import RiverFeatureDetector
from .base import Check, Finding, PredictionBatch

__all__ = ["DataDriftCheck"]


class DataDriftCheck(Check):
    """Feeds each feature's values after the warm-up to its drift test
    (:mod:`driftline.streams.drift`); the last test of the batch that
    rejects raises the alert.

    The tests live on the version's features (:class:`~driftline.streams.checks.features.Feature`,
    saved with them), so this check has no state of its own.

    Examples
    --------
    >>> import numpy as np
    >>> from driftline.events import Prediction
    >>> from driftline.policy import MonitorPolicy
    >>> from driftline.streams.checks.features import new_feature
    >>> policy = MonitorPolicy(drift_window=100)
    >>> feat = new_feature(0.0, None, policy, reference_size=200, alpha=1e-3)  # KS on its first 200 values
    >>> check = DataDriftCheck(policy)
    >>> def batch(values):
    ...     preds = [Prediction(str(i), "m", 1, 0.0, {"x": v}, 0) for i, v in enumerate(values)]
    ...     return PredictionBatch("m v1", preds, alpha=1e-3, features={"x": feat}, columns={"x": np.array(values)})
    >>> rng = np.random.default_rng(0)
    >>> check.observe(batch(list(rng.normal(size=300))), now=0.0)
    []
    >>> [f.message[:37] for f in check.observe(batch(list(rng.normal(3.0, size=100))), now=1.0)]
    ["data drift in feature 'x' of m v1: ks"]
    """

    kind = "data_drift"
    watches = "predictions"

    def observe(self, batch: PredictionBatch, now: float) -> list[Finding]:
        if batch.tested == 0:
            return []
        findings = []
        for name, values in batch.columns.items():
            test = batch.features[name].test
            # A River detector tests every event, not one window: its level is per event.
            alpha = batch.alpha / self.policy.drift_window if isinstance(test, RiverFeatureDetector) else batch.alpha
            for r in test.update(values, alpha)[-1:]:
                findings.append(Finding(
                    "data_drift", name, r.detector, r.statistic, r.threshold,
                    f"data drift in feature {name!r} of {batch.label}: {r.detector} statistic "
                    f"{r.statistic:.4g} > {r.threshold:.4g}"
                    + (f" (p={r.p_value:.3g} < alpha={r.alpha:.3g})" if r.p_value is not None else "")
                    + f" over {r.n} events"))
        return findings
