"""``outliers``: too many inputs outside what the reference has seen."""

from __future__ import annotations

import numpy as np

from driftline.policy import MonitorPolicy

from ..drift import NumericDriftTest
from ..outliers import HSTOutliers, OutlierRate, RangeOutliers
from .base import Check, Finding, PredictionBatch

__all__ = ["OutliersCheck", "MISSING"]

#: Key of a missing categorical value (never an outlier).
MISSING = "<null>"
# Unseen categories are outliers only for low-cardinality features (an
# ID-like feature sees new values all the time).
_MAX_OUTLIER_CATEGORIES = 50


class OutliersCheck(Check):
    """The rolling share of outlier events over ``policy.window`` events.

    An event is an outlier when a numeric feature lies outside its reference
    range (with a 10% margin) or a categorical feature takes a category the
    reference never had (``range``), when River's HalfSpaceTrees, fitted on
    the reference's numeric ranges, score it anomalous (``hst``), or either
    (``both``). Per-feature range outliers are counted on the features
    whatever the detector (snapshots report them).

    Examples
    --------
    >>> import numpy as np
    >>> from driftline.events import Prediction
    >>> from driftline.policy import MonitorPolicy
    >>> from driftline.streams.drift import NumericDriftTest
    >>> from driftline.streams.checks.features import Feature
    >>> profile = {"quantiles": list(np.linspace(0.0, 1.0, 11)), "count": 1000}
    >>> feat = Feature("numeric", NumericDriftTest(window=100, reference_size=200, profile=profile))
    >>> check = OutliersCheck(MonitorPolicy(window=200, outlier_rate=0.05))
    >>> values = np.r_[np.full(180, 0.5), np.full(20, 5.0)]  # 10% far outside [0, 1]
    >>> preds = [Prediction(str(i), "m", 1, 0.0, {"x": v}, 0) for i, v in enumerate(values)]
    >>> batch = PredictionBatch("m v1", preds, features={"x": feat}, columns={"x": values},
    ...                         reference_ready=frozenset({"x"}))
    >>> [f.message for f in check.observe(batch, now=0.0)]
    ['outlier rate of m v1 is 10.00% over the last 200 events (limit 5.00%)']
    >>> feat.outliers
    20
    """

    kind = "outliers"
    watches = "predictions"

    def __init__(self, policy: MonitorPolicy):
        super().__init__(policy)
        self.rate = OutlierRate(policy.window)
        self.hst: HSTOutliers | None = None
        self.range = RangeOutliers(0.1)

    def _range_flags(self, batch: PredictionBatch) -> np.ndarray:
        flags = np.zeros(batch.tested, dtype=bool)
        for name, values in batch.columns.items():
            if name not in batch.reference_ready:
                continue  # no reference yet: nothing is an outlier
            feat = batch.features[name]
            test = feat.test
            if feat.kind == "numeric":
                if not isinstance(test, NumericDriftTest):
                    continue  # a River detector keeps no reference range
                found = self.range.flags(values, test.reference_range())
            elif len(test.ref_counts) <= _MAX_OUTLIER_CATEGORIES:
                found = np.fromiter((k != MISSING and not test.known(k) for k in values), dtype=bool,
                                    count=len(values))
            else:
                continue
            feat.outliers += int(found.sum())
            flags |= found
        return flags

    def _hst(self, batch: PredictionBatch, numeric: dict[str, np.ndarray]) -> HSTOutliers | None:
        """HalfSpaceTrees over the numeric features with a reference range, once there is one.

        Runs after the batch's drift tests (``PREDICTION_CHECKS`` order): a
        reference this batch completed is used at once."""
        if self.hst is None:
            limits = {}
            for name in sorted(numeric):
                test = batch.features[name].test
                if isinstance(test, NumericDriftTest) and test.reference_range() is not None:
                    limits[name] = test.reference_range()
            if limits:
                self.hst = HSTOutliers(sorted(limits), limits, reference_events=batch.reference_size)
        return self.hst

    def observe(self, batch: PredictionBatch, now: float) -> list[Finding]:
        if batch.tested == 0:
            return []
        p = self.policy
        flags = self._range_flags(batch)
        if p.outlier_detector == "hst":
            # Range flags still count per feature (stats); only HST decides the rate.
            flags = np.zeros(batch.tested, dtype=bool)
        if p.outlier_detector in ("hst", "both"):
            numeric = {name: values for name, values in batch.columns.items()
                       if batch.features[name].kind == "numeric"}
            hst = self._hst(batch, numeric)
            if hst is not None:
                flags |= hst.flags(numeric, batch.tested)
        self.rate.update(flags)
        if self.rate.count < min(p.window, 200):
            return []
        rate = self.rate.rate()
        if not rate > p.outlier_rate:
            return []
        return [Finding("outliers", "inputs", p.outlier_detector, rate, p.outlier_rate,
                        f"outlier rate of {batch.label} is {rate:.2%} over the last "
                        f"{self.rate.count} events (limit {p.outlier_rate:.2%})")]

    def to_state(self) -> dict:
        return {"outlier_rate": self.rate.to_state(), "hst": None if self.hst is None else self.hst.to_state()}

    @classmethod
    def from_state(cls, data: dict, policy: MonitorPolicy) -> "OutliersCheck":
        self = cls(policy)
        self.rate = OutlierRate.from_state(data["outlier_rate"])
        if data["hst"] is not None:
            self.hst = HSTOutliers.from_state(data["hst"])
        return self
