"""Outlier inputs: outside the reference range, or flagged by River's
Half-Space Trees; and the rolling outlier rate.

*Range* outliers are numeric values outside the reference range widened by
``margin`` times its span on each side (the reference is a finite sample, so
its own min/max would flag about ``2/(n+1)`` of stationary values per
feature), and categorical values the reference never saw. The reference is
the profile's ``min``/``max``/``frequencies`` or the drift tests'
self-collected sample.

*HST* scores each event with :class:`river.anomaly.HalfSpaceTrees` on the
numeric features scaled by the reference range; an event is an outlier when
its score passes the 99.5th percentile of the scores seen while the
reference was collected. It costs one Python call per event.

References
----------
.. [1] Tan, S. C., Ting, K. M., Liu, T. F. (2011). Fast anomaly detection
   for streaming data. IJCAI.

Examples
--------
>>> import numpy as np
>>> r = RangeOutliers(margin=0.1)
>>> r.flags(np.array([0.5, 1.2, -0.05]), (0.0, 1.0)).tolist()
[False, True, False]
>>> rate = OutlierRate(window=4)
>>> rate.update(np.array([True, False, False, False, True]))
>>> rate.rate()
0.25
"""

from __future__ import annotations

from typing import Any

import numpy as np

from driftline.catalog import DETECTORS

from .ring import RingBuffer

__all__ = ["RangeOutliers", "HSTOutliers", "OutlierRate"]


@DETECTORS.register("range", kind="outlier")
class RangeOutliers:
    """Values outside a widened reference range."""

    def __init__(self, margin: float = 0.1):
        self.margin = margin

    def flags(self, values: np.ndarray, reference_range: tuple[float, float] | None) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        if reference_range is None:
            return np.zeros(values.size, dtype=bool)
        lo, hi = reference_range
        pad = self.margin * (hi - lo)
        with np.errstate(invalid="ignore"):
            return (values < lo - pad) | (values > hi + pad)


class OutlierRate:
    """Share of outlier events among the last ``window`` events."""

    def __init__(self, window: int):
        self.window = int(window)
        self.ring = RingBuffer(self.window, "bool")
        self.total = 0
        self.outliers = 0

    @property
    def count(self) -> int:
        return self.ring.count

    def update(self, flags: np.ndarray) -> None:
        flags = np.asarray(flags, dtype=bool)
        self.total += flags.size
        self.outliers += int(flags.sum())
        self.ring.extend(flags)

    def rate(self) -> float:
        ring = self.ring
        if ring.count == 0:
            return 0.0
        return float(ring.buf[: ring.count].sum() / ring.count) if ring.count < self.window \
            else float(ring.buf.mean())

    def to_state(self) -> dict:
        # The ring's own fields, as states written before it was shared hold them.
        return {"window": self.window, "buf": self.ring.buf, "pos": self.ring.pos, "count": self.ring.count,
                "total": self.total, "outliers": self.outliers}

    @classmethod
    def from_state(cls, state: dict) -> "OutlierRate":
        self = cls(state["window"])
        self.ring.buf = np.asarray(state["buf"], dtype=bool).copy()
        self.ring.pos, self.ring.count = int(state["pos"]), int(state["count"])
        self.total, self.outliers = int(state["total"]), int(state["outliers"])
        return self


@DETECTORS.register("hst", kind="outlier")
class HSTOutliers:
    """River Half-Space Trees over the numeric features.

    Parameters
    ----------
    features
        Numeric feature names.
    limits
        Feature -> (low, high) reference range used to scale into [0, 1].
    reference_events
        Events learned before scoring starts; the alarm threshold is the
        99.5th percentile of the scores of the second half of them.
    """

    def __init__(self, features: list[str], limits: dict[str, tuple[float, float]], reference_events: int = 1000,
                 n_trees: int = 10, height: int = 8, window_size: int = 250, seed: int = 42):
        from driftline.river_modules import river_class

        HalfSpaceTrees = river_class("river.anomaly.hst.HalfSpaceTrees")

        self.features = list(features)
        self.reference_events = reference_events
        self.model = HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window_size, seed=seed,
                                    limits={f: (0.0, 1.0) for f in self.features})
        self.lo = np.array([limits[f][0] for f in self.features], dtype=np.float64)
        span = np.array([limits[f][1] - limits[f][0] for f in self.features], dtype=np.float64)
        self.span = np.where(span > 0, span, 1.0)
        self.seen = 0
        self.calibration: list[float] = []
        self.threshold: float | None = None

    def flags(self, columns: dict[str, np.ndarray], n: int) -> np.ndarray:
        matrix = np.column_stack([np.nan_to_num(np.asarray(columns[f], dtype=np.float64), nan=0.0)
                                  if f in columns else np.zeros(n) for f in self.features])
        scaled = np.clip((matrix - self.lo) / self.span, 0.0, 1.0)
        out = np.zeros(n, dtype=bool)
        model = self.model
        names = self.features
        for i, row in enumerate(scaled.tolist()):
            x = dict(zip(names, row))
            if self.threshold is not None:
                out[i] = model.score_one(x) > self.threshold
            elif self.seen >= self.reference_events // 2:
                self.calibration.append(model.score_one(x))
            model.learn_one(x)
            self.seen += 1
            if self.threshold is None and self.seen >= self.reference_events:
                self.threshold = float(np.quantile(self.calibration, 0.995)) if self.calibration else 1.0
                self.calibration = []
        return out

    def to_state(self) -> dict[str, Any]:
        m = self.model
        # HalfSpaceTrees keeps a second list of the same tree nodes and a
        # defaultdict with a partial factory: store the trees once, rebuild the rest.
        model = {"n_trees": m.n_trees, "window_size": m.window_size, "height": m.height, "seed": m.seed,
                 "limits": {k: list(v) for k, v in m.limits.items()}, "rng": m.rng,
                 "trees": [_tree_arrays(t) for t in m.trees],
                 "counter": m.counter, "first_window": m._first_window}
        return {"features": self.features, "reference_events": self.reference_events, "model": model,
                "lo": self.lo, "span": self.span, "seen": self.seen, "calibration": self.calibration,
                "threshold": self.threshold}

    @classmethod
    def from_state(cls, state: dict) -> "HSTOutliers":
        self = cls.__new__(cls)
        self.features = list(state["features"])
        self.reference_events = int(state["reference_events"])
        from driftline.river_modules import river_class

        HalfSpaceTrees = river_class("river.anomaly.hst.HalfSpaceTrees")

        m = state["model"]
        self.model = HalfSpaceTrees(n_trees=m["n_trees"], height=m["height"], window_size=m["window_size"],
                                    seed=m["seed"], limits={k: tuple(v) for k, v in m["limits"].items()})
        self.model.rng = m["rng"]
        self.model.trees = [_tree_from_arrays(t) for t in m["trees"]]
        self.model.counter = m["counter"]
        self.model._first_window = m["first_window"]
        self.model._tree_nodes = [list(t.iter_dfs()) for t in self.model.trees] if self.model.trees else []
        self.lo = np.asarray(state["lo"], dtype=np.float64)
        self.span = np.asarray(state["span"], dtype=np.float64)
        self.seen = int(state["seen"])
        self.calibration = list(state["calibration"])
        self.threshold = state["threshold"]
        return self



# ``both``: an event is an outlier when either detector flags it.
DETECTORS.add("both", (RangeOutliers, HSTOutliers), kind="outlier")

def _tree_arrays(root: Any) -> dict[str, Any]:
    """A padded HST tree as flat arrays in depth-first (pre-)order."""
    from driftline.river_modules import river_class

    PaddedBranch = river_class("river.tree.padded.PaddedBranch")

    names: list[Any] = []
    index: dict[Any, int] = {}
    leaf, feature, threshold, l_mass, r_mass = [], [], [], [], []
    for node in root.iter_dfs():
        is_branch = isinstance(node, PaddedBranch)
        leaf.append(0 if is_branch else 1)
        if is_branch:
            if node.feature not in index:
                index[node.feature] = len(names)
                names.append(node.feature)
            feature.append(index[node.feature])
            threshold.append(node.threshold)
        else:
            feature.append(-1)
            threshold.append(0.0)
        l_mass.append(node.l_mass)
        r_mass.append(node.r_mass)
    return {"names": names, "leaf": np.array(leaf, dtype=np.uint8), "feature": np.array(feature, dtype=np.int32),
            "threshold": np.array(threshold, dtype=np.float64), "l_mass": np.array(l_mass, dtype=np.int64),
            "r_mass": np.array(r_mass, dtype=np.int64)}


def _tree_from_arrays(data: dict[str, Any]) -> Any:
    from driftline.river_modules import river_module

    padded = river_module("river.tree.padded")
    PaddedBranch, PaddedLeaf = padded.PaddedBranch, padded.PaddedLeaf

    leaf = data["leaf"].tolist()
    feature = data["feature"].tolist()
    threshold = data["threshold"].tolist()
    l_mass = data["l_mass"].tolist()
    r_mass = data["r_mass"].tolist()
    names = data["names"]
    pos = 0

    def build() -> Any:
        nonlocal pos
        if pos >= len(leaf):
            raise ValueError("truncated tree state")
        i = pos
        pos += 1
        if leaf[i]:
            return PaddedLeaf(l_mass=l_mass[i], r_mass=r_mass[i])
        left = build()
        right = build()
        return PaddedBranch(left, right, names[feature[i]], threshold[i], l_mass[i], r_mass[i])

    return build()
