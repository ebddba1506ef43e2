"""A version's per-feature record: its data-drift test (which holds the
feature's reference) and its missing and outlier counts.

The data-drift check updates the tests; the outlier check reads their
references; the version monitor adds features as they appear.
"""

from __future__ import annotations

from typing import Any

from driftline.policy import MonitorPolicy

from ..drift import CategoricalDriftTest, NumericDriftTest, RiverFeatureDetector, make_feature_test

__all__ = ["Feature", "new_feature", "is_number"]


def is_number(v: Any) -> bool:
    """An int or float that is not NaN (bools are not numbers here)."""
    return (type(v) is int or type(v) is float) and v == v


class Feature:
    """One feature of a model version.

    Parameters
    ----------
    kind
        ``numeric`` or ``categorical``.
    test
        Its data-drift test (:mod:`driftline.streams.drift`).

    Examples
    --------
    >>> from driftline.streams.drift import NumericDriftTest
    >>> feat = Feature("numeric", NumericDriftTest(window=50, reference_size=100))
    >>> feat.missing += 2
    >>> Feature.from_state(feat.to_state(), MonitorPolicy()).missing
    2
    """

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
    def from_state(cls, data: dict, policy: MonitorPolicy) -> "Feature":
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


def new_feature(sample: Any, profile: dict | None, policy: MonitorPolicy, reference_size: int,
                alpha: float) -> Feature:
    """A feature first seen with value ``sample``: its kind from the registry
    ``profile`` of the feature if it names one, else from the value.

    >>> new_feature(1.5, None, MonitorPolicy(), 2000, 1e-6).kind, new_feature("a", None, MonitorPolicy(), 2000, 1e-6).kind
    ('numeric', 'categorical')
    """
    if profile is not None and profile.get("type") in ("numeric", "categorical"):
        kind = profile["type"]
    else:
        kind = "numeric" if is_number(sample) and type(sample) is not bool else "categorical"
    test = make_feature_test(kind, policy.data_drift, policy.drift_window, reference_size, profile,
                             alpha / policy.drift_window)
    return Feature(kind, test)
