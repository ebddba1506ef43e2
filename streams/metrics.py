"""Online model-quality metrics, cumulative and over a rolling window.

Cumulative metrics are kept as *exact sufficient statistics*: a confusion
matrix of integer counts, exact (arbitrary-precision) sums of per-event
losses, and per-class score histograms for ROC AUC. Exact sums make the
result independent of batch boundaries, of the order events arrive in and of
how many processes shared the work: two partial states merged with
:meth:`ClassificationMetrics.merge` give bit-for-bit the same numbers as one
state that saw every event, and a state restored after a crash continues
exactly where it stopped.

Accuracy, precision, recall and F1 are computed by River's metric classes
(:class:`river.metrics.Accuracy`, ``Precision``/``Recall``/``F1`` with
``pos_val`` for binary problems, ``MacroPrecision``/``MacroRecall``/
``MacroF1`` otherwise) over a :class:`river.metrics.ConfusionMatrix` filled
from the counts with sample weights. Log loss, MAE, RMSE and R² follow
scikit-learn's definitions (River's running means round differently event by
event and cannot be merged exactly).

Conventions (the same as scikit-learn's batch metrics on the same pairs)
------------------------------------------------------------------------
* Class labels are compared through :func:`class_key`: strings as they are,
  booleans as ``"true"``/``"false"``, integral numbers as their decimal
  text. ``probabilities`` keys are looked up with the same key (``"1"`` for
  label ``1``; ``"True"`` is also accepted for ``True``).
* Binary problems (at most two classes among labels and predictions) report
  precision, recall and F1 of the *positive class*: the ``positive_label``
  given to the monitor, otherwise the greater class in sorted order
  (numeric order when all keys are numbers), as scikit-learn's
  ``LabelBinarizer`` does: ``1`` for 0/1, ``true`` for booleans, ``"yes"``
  for ``"no"``/``"yes"``. More classes: macro averages over every class seen
  in labels or predictions (scikit-learn ``average="macro"``).
* Log loss: ``-mean(log(clip(p[label], eps, 1 - eps)))`` with ``eps`` the
  float64 machine epsilon, as scikit-learn 1.5+; a label missing from an
  event's probabilities counts as probability 0. Only events that carry
  probabilities contribute to log loss and ROC AUC.
* ROC AUC: binary, the score is ``p[positive]`` (``1 - p[other]`` if only the
  other class is given); multiclass, the macro average of one-vs-rest AUCs
  (scikit-learn ``multi_class="ovr"``). Cumulatively the scores are binned on
  the logit scale (width 0.01, ties within a bin count one half), which
  keeps AUC within about 1e-4 of the exact value for realistic score
  distributions; the rolling AUC is exact (Mann-Whitney ranks).
* R² is 1 when labels are constant and predicted perfectly, else 0 for
  constant labels (scikit-learn's ``force_finite``).

References
----------
.. [1] Dekker, T. J. (1971). A floating-point technique for extending the
   available precision. Numerische Mathematik 18 (exact products).
.. [2] Hanley, J. A., McNeil, B. J. (1982). The meaning and use of the area
   under a receiver operating characteristic (ROC) curve. Radiology 143.
.. [3] scikit-learn ``sklearn.metrics`` (the batch definitions matched here).

Examples
--------
>>> m = ClassificationMetrics()
>>> m.update(["1", "0", "1", "1"], ["1", "0", "0", "1"],
...          [{"1": 0.9, "0": 0.1}, {"1": 0.2, "0": 0.8}, {"1": 0.4, "0": 0.6}, {"1": 0.7, "0": 0.3}])
>>> {k: round(v, 4) for k, v in m.get().items()}
{'accuracy': 0.75, 'precision': 1.0, 'recall': 0.6667, 'f1': 0.8, 'log_loss': 0.4004, 'roc_auc': 1.0}
>>> r = RegressionMetrics()
>>> r.update([3.0, -0.5, 2.0, 7.0], [2.5, 0.0, 2.0, 8.0])
>>> {k: round(v, 4) for k, v in r.get().items()}
{'mae': 0.5, 'rmse': 0.6124, 'r2': 0.9486}
"""

from __future__ import annotations

import math
import operator
from typing import Any, Iterable, Sequence

import numpy as np

from driftline.catalog import METRICS

__all__ = [
    "class_key",
    "canonical_probabilities",
    "ExactSum",
    "ProbaBatch",
    "ClassificationMetrics",
    "RegressionMetrics",
    "RollingClassification",
    "RollingRegression",
    "roc_auc_exact",
    "RingBuffer",
]

_EPS = float(np.finfo(np.float64).eps)
#: Offset (in bits) that keeps every float64, subnormals included, an integer
#: multiple of 2**-_SHIFT.
_SHIFT = 1200
# Logit bins for the cumulative ROC AUC.
_LOGIT_MAX = 30.0
_BIN_WIDTH = 0.01
_N_BINS = int(2 * _LOGIT_MAX / _BIN_WIDTH) + 2


def class_key(value: Any) -> str:
    """The canonical text of a class label (see the module docstring).

    >>> [class_key(v) for v in (1, 1.0, True, "yes")]
    ['1', '1', 'true', 'yes']
    """
    kind = type(value)
    if kind is str:
        return value
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float and value.is_integer():
        return str(int(value))
    # Subclasses and numpy scalars (events built in Python rather than decoded from JSON).
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return str(int(value)) if value.is_integer() else repr(value)
    return repr(value)


def _sort_classes(keys: Iterable[str]) -> list[str]:
    keys = list(keys)
    try:
        return sorted(keys, key=float)
    except ValueError:
        return sorted(keys)


class ExactSum:
    """Exact sum of float64 values, independent of order and batching.

    Every finite float64 is an integer multiple of ``2**-1074``; the sum is
    kept as one Python integer in units of ``2**-1200``. Adding an array costs
    a few vectorised numpy operations per distinct binary exponent.

    >>> s = ExactSum(); s.add(np.array([1e16, 1.0, -1e16])); s.value()
    1.0
    """

    __slots__ = ("total",)

    def __init__(self, total: int = 0):
        self.total = total

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64).ravel()
        if values.size == 0:
            return
        mant, exp = np.frexp(values)
        ints = (mant * 9007199254740992.0).astype(np.int64)  # * 2**53: exact
        # value = ints * 2**(exp - 53); group by exponent.
        order = np.argsort(exp, kind="stable")
        exp_sorted = exp[order]
        ints = ints[order]
        starts = np.flatnonzero(np.r_[True, exp_sorted[1:] != exp_sorted[:-1]])
        # Split into 26-bit halves so int64 group sums cannot overflow.
        hi = np.add.reduceat(ints >> 26, starts)
        lo = np.add.reduceat(ints & ((1 << 26) - 1), starts)
        total = self.total
        for e, h, low in zip(exp_sorted[starts].tolist(), hi.tolist(), lo.tolist()):
            total += ((h << 26) + low) << (e - 53 + _SHIFT)
        self.total = total

    def merge(self, other: "ExactSum") -> None:
        self.total += other.total

    def value(self) -> float:
        return self.total / (1 << _SHIFT)


def _two_square(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x*x`` as an exact sum ``hi + lo`` (Veltkamp/Dekker two-product)."""
    hi = x * x
    a = x * 134217729.0  # 2**27 + 1
    xh = a - (a - x)
    xl = x - xh
    lo = ((xh * xh - hi) + 2.0 * xh * xl) + xl * xl
    return hi, lo


_KEY_CACHE: dict[str, str] = {}


def _canonical_prob_key(key: str) -> str:
    if key in ("True", "False"):
        return key.lower()
    try:
        f = float(key)
    except ValueError:
        return key
    return str(int(f)) if f.is_integer() and key.strip() == key else key


def canonical_probabilities(probabilities: Sequence[dict | None]) -> list[dict | None]:
    """Re-key probability dicts with :func:`class_key` text (``"True"`` ->
    ``"true"``, ``"1.0"`` -> ``"1"``).

    >>> canonical_probabilities([{"True": 0.8, "False": 0.2}, None])
    [{'true': 0.8, 'false': 0.2}, None]
    """
    cache = _KEY_CACHE
    rows = [p for p in probabilities if p]
    keys = set().union(*rows) if rows else set()
    if len(rows) == len(probabilities) and all(cache.get(k) == k for k in keys):
        return list(probabilities)  # already canonical: the usual case
    for k in keys:
        if k not in cache:
            cache[k] = _canonical_prob_key(k)
    out = []
    for probs in probabilities:
        if not probs:
            out.append(None)
            continue
        try:
            out.append({cache[k]: v for k, v in probs.items()})
        except KeyError:
            if len(cache) > 100_000:
                cache.clear()
            for k in probs:
                if k not in cache:
                    cache[k] = _canonical_prob_key(k)
            out.append({cache[k]: v for k, v in probs.items()})
    return out


def _logit_bins(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-13, 1 - 1e-13)
    z = np.log(p) - np.log1p(-p)
    return np.clip(((z + _LOGIT_MAX) / _BIN_WIDTH).astype(np.int64) + 1, 0, _N_BINS - 1)


def _auc_from_hist(pos: np.ndarray, neg: np.ndarray) -> float | None:
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return None
    neg_below = np.cumsum(neg) - neg
    wins = float((pos * neg_below).sum()) + 0.5 * float((pos * neg).sum())
    return wins / (float(n_pos) * float(n_neg))


def roc_auc_exact(y_pos: np.ndarray, scores: np.ndarray) -> float | None:
    """Exact ROC AUC (Mann-Whitney U with average ranks for ties).

    >>> roc_auc_exact(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.75
    """
    y_pos = np.asarray(y_pos, dtype=bool)
    n_pos = int(y_pos.sum())
    n_neg = y_pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    return float((ranks[y_pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


class ProbaBatch:
    """A batch's probabilities as a matrix, shared by cumulative and rolling metrics.

    ``keys``: classes named in any probability dict (sorted); ``matrix``:
    ``n x len(keys)`` (0 for a class missing from a row's dict, NaN for rows
    without probabilities); ``p_true``: the probability of each row's label
    (NaN without probabilities); ``true_col``: the label's column or -1.
    """

    def __init__(self, y_true: Sequence[str], probabilities: Sequence[dict | None]):
        n = len(y_true)
        self.n = n
        self.has = np.fromiter((bool(p) for p in probabilities), dtype=bool, count=n)
        rows = [p for p in probabilities if p]
        self.keys: list[str] = sorted(set().union(*rows)) if rows else []
        k = len(self.keys)
        matrix = np.full((n, k), np.nan)
        if rows:
            if sum(map(len, rows)) == k * len(rows):
                # Every dict has every key (the usual case): C-level extraction.
                if k == 1:
                    dense = np.array([[p[self.keys[0]]] for p in rows], dtype=np.float64)
                else:
                    dense = np.array(list(map(operator.itemgetter(*self.keys), rows)), dtype=np.float64)
            else:
                dense = np.array([[p.get(key, 0.0) for key in self.keys] for p in rows], dtype=np.float64)
            matrix[self.has] = dense.reshape(len(rows), k)
        self.matrix = matrix
        col = {key: j for j, key in enumerate(self.keys)}
        self.true_col = np.fromiter(map(col.get, y_true, [-1] * n), dtype=np.int64, count=n) if n else \
            np.zeros(0, dtype=np.int64)
        p_true = np.zeros(n)
        known = self.true_col >= 0
        p_true[known] = matrix[np.flatnonzero(known), self.true_col[known]]
        p_true[~self.has] = np.nan
        self.p_true = p_true
        self.y_true = y_true

    def column(self, key: str) -> np.ndarray:
        """Scores of ``key`` (0 where a row's dict lacks it, NaN without probabilities)."""
        try:
            return self.matrix[:, self.keys.index(key)]
        except ValueError:
            return np.where(self.has, 0.0, np.nan)

    def is_label(self, key: str) -> np.ndarray:
        if key in self.keys:
            return self.true_col == self.keys.index(key)
        return np.fromiter((t == key for t in self.y_true), dtype=bool, count=self.n)


def _as_proba(y_true: Sequence[str], probabilities: "Sequence[dict | None] | ProbaBatch | None") -> "ProbaBatch | None":
    if probabilities is None or isinstance(probabilities, ProbaBatch):
        return probabilities
    return ProbaBatch(y_true, probabilities) if any(probabilities) else None


class _Classes:
    """Class key <-> index, in order of first appearance."""

    def __init__(self, keys: Sequence[str] = ()):
        self.keys: list[str] = list(keys)
        self.index: dict[str, int] = {k: i for i, k in enumerate(self.keys)}

    def encode(self, keys: Sequence[str]) -> np.ndarray:
        index = self.index
        try:
            return np.fromiter(map(index.__getitem__, keys), dtype=np.int64, count=len(keys))
        except KeyError:
            pass
        out = []
        for k in keys:
            i = index.get(k)
            if i is None:
                i = index[k] = len(self.keys)
                self.keys.append(k)
            out.append(i)
        return np.fromiter(out, dtype=np.int64, count=len(out))


def _river_scores(cm_counts: np.ndarray, keys: list[str], positive: str | None) -> dict[str, float]:
    """Accuracy/precision/recall/F1 from River's metrics over a count matrix."""
    from river import metrics as river_metrics  # here: the catalog of metric names must not load River

    cm = river_metrics.ConfusionMatrix()
    rows, cols = np.nonzero(cm_counts)
    for i, j in zip(rows.tolist(), cols.tolist()):
        cm.update(keys[i], keys[j], w=float(cm_counts[i, j]))
    seen = [keys[i] for i in sorted(set(rows.tolist()) | set(cols.tolist()))]
    out = {"accuracy": river_metrics.Accuracy(cm=cm).get()}
    if len(seen) <= 2:
        pos = positive if positive is not None else _sort_classes(seen)[-1]
        out["precision"] = river_metrics.Precision(cm=cm, pos_val=pos).get()
        out["recall"] = river_metrics.Recall(cm=cm, pos_val=pos).get()
        out["f1"] = river_metrics.F1(cm=cm, pos_val=pos).get()
    else:
        out["precision"] = river_metrics.MacroPrecision(cm=cm).get()
        out["recall"] = river_metrics.MacroRecall(cm=cm).get()
        out["f1"] = river_metrics.MacroF1(cm=cm).get()
    return out


def _positive_of(keys: Sequence[str], positive: str | None) -> str | None:
    if positive is not None:
        return positive
    return _sort_classes(keys)[-1] if keys else None


class ClassificationMetrics:
    """Cumulative accuracy, precision, recall, F1, log loss and ROC AUC.

    Parameters
    ----------
    positive_label
        Class key of the positive class for binary problems (``None``: the
        greater class, see the module docstring).
    """

    def __init__(self, positive_label: str | None = None):
        self.positive_label = positive_label
        self.classes = _Classes()
        self.cm = np.zeros((0, 0), dtype=np.int64)
        self.n = 0
        self.n_proba = 0
        self.log_loss_sum = ExactSum()
        # hist[c] = (2, bins): row 0 scores of events whose label is c, row 1 the others.
        self.hist: dict[str, np.ndarray] = {}

    def _grow(self) -> None:
        k = len(self.classes.keys)
        if self.cm.shape[0] < k:
            cm = np.zeros((k, k), dtype=np.int64)
            old = self.cm.shape[0]
            cm[:old, :old] = self.cm
            self.cm = cm

    def update(self, y_true: Sequence[str], y_pred: Sequence[str],
               probabilities: Sequence[dict | None] | None = None) -> None:
        """Add joined pairs: class keys (see :func:`class_key`) and, optionally,
        probability dicts keyed the same way (see :func:`canonical_probabilities`)."""
        n = len(y_true)
        if n == 0:
            return
        yi = self.classes.encode(y_true)
        pi = self.classes.encode(y_pred)
        self._grow()
        k = self.cm.shape[0]
        self.cm += np.bincount(yi * k + pi, minlength=k * k).reshape(k, k)
        self.n += n
        batch = _as_proba(y_true, probabilities)
        if batch is not None:
            self._update_proba(batch)

    def _update_proba(self, batch: ProbaBatch) -> None:
        has = batch.has
        n_rows = int(has.sum())
        if not n_rows:
            return
        self.log_loss_sum.add(-np.log(np.clip(batch.p_true[has], _EPS, 1 - _EPS)))
        self.n_proba += n_rows
        # Scores per class for ROC AUC: every class that has had a probability.
        for key in sorted(set(self.hist) | set(batch.keys)):
            scores = batch.column(key)[has]
            is_pos = batch.is_label(key)[has]
            hist = self.hist.get(key)
            if hist is None:
                hist = self.hist[key] = np.zeros((2, _N_BINS), dtype=np.int64)
            bins = _logit_bins(scores)
            hist[0] += np.bincount(bins[is_pos], minlength=_N_BINS)
            hist[1] += np.bincount(bins[~is_pos], minlength=_N_BINS)

    def seen_classes(self) -> list[str]:
        if self.cm.size == 0:
            return []
        used = (self.cm.sum(axis=0) + self.cm.sum(axis=1)) > 0
        return [k for k, u in zip(self.classes.keys, used.tolist()) if u]

    def get(self) -> dict[str, float | None]:
        """Current metric values (``None`` where undefined)."""
        if self.n == 0:
            return {m: None for m in ("accuracy", "precision", "recall", "f1", "log_loss", "roc_auc")}
        out: dict[str, float | None] = dict(_river_scores(self.cm, self.classes.keys, self.positive_label))
        out["log_loss"] = self.log_loss_sum.value() / self.n_proba if self.n_proba else None
        out["roc_auc"] = self._roc_auc()
        return out

    def _roc_auc(self) -> float | None:
        if not self.n_proba:
            return None
        seen = self.seen_classes()
        if len(seen) <= 2:
            pos = _positive_of(seen, self.positive_label)
            if pos in self.hist:
                return _auc_from_hist(self.hist[pos][0], self.hist[pos][1])
            other = [k for k in seen if k != pos]
            if other and other[0] in self.hist:
                h = self.hist[other[0]]
                # p[pos] = 1 - p[other]: reversed order; AUC of the other class's score flipped.
                auc = _auc_from_hist(h[0], h[1])
                return None if auc is None else auc
            return None
        aucs = []
        for key in seen:
            h = self.hist.get(key)
            auc = None if h is None else _auc_from_hist(h[0], h[1])
            if auc is None:
                return None
            aucs.append(auc)
        return float(np.mean(aucs))

    def merge(self, other: "ClassificationMetrics") -> None:
        """Add another partial state (for example from another process)."""
        keys = other.classes.keys
        mapping = self.classes.encode(keys)
        self._grow()
        if other.cm.size:
            self.cm[np.ix_(mapping, mapping)] += other.cm
        self.n += other.n
        self.n_proba += other.n_proba
        self.log_loss_sum.merge(other.log_loss_sum)
        for key, h in other.hist.items():
            if key in self.hist:
                self.hist[key] = self.hist[key] + h
            else:
                self.hist[key] = h.copy()

    # -- state -------------------------------------------------------------
    def to_state(self) -> dict:
        return {"positive_label": self.positive_label, "classes": list(self.classes.keys), "cm": self.cm,
                "n": self.n, "n_proba": self.n_proba, "log_loss_sum": str(self.log_loss_sum.total),
                "hist": {k: _sparse(h) for k, h in self.hist.items()}}

    @classmethod
    def from_state(cls, state: dict) -> "ClassificationMetrics":
        self = cls(state["positive_label"])
        self.classes = _Classes(state["classes"])
        self.cm = np.asarray(state["cm"], dtype=np.int64).reshape(len(self.classes.keys), -1) \
            if len(self.classes.keys) else np.zeros((0, 0), dtype=np.int64)
        self.n = int(state["n"])
        self.n_proba = int(state["n_proba"])
        self.log_loss_sum = ExactSum(int(state["log_loss_sum"]))
        self.hist = {k: _dense(v, (2, _N_BINS)) for k, v in state["hist"].items()}
        return self


def _sparse(h: np.ndarray) -> dict:
    flat = h.ravel()
    idx = np.flatnonzero(flat)
    return {"i": idx.astype(np.int64), "v": flat[idx].astype(np.int64)}


def _dense(data: dict, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape[0] * shape[1], dtype=np.int64)
    idx = np.asarray(data["i"], dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= out.size):
        raise ValueError("histogram index out of range")
    out[idx] = data["v"]
    return out.reshape(shape)



# The metrics ClassificationMetrics computes, in the policy's listing order:
# name, lower is better, estimated before labels (driftline.streams.estimation).
for _name, _lower, _estimated in (("accuracy", False, True), ("precision", False, True), ("recall", False, True),
                                  ("f1", False, True), ("log_loss", True, False), ("roc_auc", False, True)):
    METRICS.add(_name, ClassificationMetrics, task="classification", lower_is_better=_lower,
                estimated=_estimated)


class RegressionMetrics:
    """Cumulative MAE, RMSE and R² from exact sums.

    The sums (``|e|``, ``e²`` split exactly into two floats, ``y``, ``y²``)
    are exact, so R²'s total sum of squares ``Σy² - (Σy)²/n`` is computed in
    rational arithmetic without cancellation.
    """

    def __init__(self) -> None:
        self.n = 0
        self.abs_err = ExactSum()
        self.sq_err = ExactSum()
        self.sum_y = ExactSum()
        self.sum_y2 = ExactSum()

    def update(self, y_true: Sequence[float], y_pred: Sequence[float]) -> None:
        y = np.asarray(y_true, dtype=np.float64)
        if y.size == 0:
            return
        err = y - np.asarray(y_pred, dtype=np.float64)
        self.n += y.size
        self.abs_err.add(np.abs(err))
        hi, lo = _two_square(err)
        self.sq_err.add(hi)
        self.sq_err.add(lo)
        self.sum_y.add(y)
        hi, lo = _two_square(y)
        self.sum_y2.add(hi)
        self.sum_y2.add(lo)

    def get(self) -> dict[str, float | None]:
        if self.n == 0:
            return {"mae": None, "rmse": None, "r2": None}
        n = self.n
        ss_res = self.sq_err.value()
        # n*Σy² - (Σy)², all in units of 2**-SHIFT (Σy² carries one extra factor).
        s1, s2 = self.sum_y.total, self.sum_y2.total
        # n * SS_tot in units of 2**-(2*SHIFT): exact rational arithmetic.
        ss_tot_scaled = n * s2 * (1 << _SHIFT) - s1 * s1
        if ss_tot_scaled == 0:
            r2 = 1.0 if self.sq_err.total == 0 else 0.0
        else:
            r2 = 1.0 - (self.sq_err.total * n * (1 << _SHIFT)) / ss_tot_scaled
        return {"mae": self.abs_err.value() / n, "rmse": math.sqrt(ss_res / n), "r2": r2}

    def merge(self, other: "RegressionMetrics") -> None:
        self.n += other.n
        for name in ("abs_err", "sq_err", "sum_y", "sum_y2"):
            getattr(self, name).merge(getattr(other, name))

    def to_state(self) -> dict:
        return {"n": self.n, **{name: str(getattr(self, name).total)
                                for name in ("abs_err", "sq_err", "sum_y", "sum_y2")}}

    @classmethod
    def from_state(cls, state: dict) -> "RegressionMetrics":
        self = cls()
        self.n = int(state["n"])
        for name in ("abs_err", "sq_err", "sum_y", "sum_y2"):
            setattr(self, name, ExactSum(int(state[name])))
        return self



for _name, _lower, _estimated in (("mae", True, True), ("rmse", True, True), ("r2", False, False)):
    METRICS.add(_name, RegressionMetrics, task="regression", lower_is_better=_lower, estimated=_estimated)


class RingBuffer:
    """Fixed-size ring buffer of values, or of rows of ``width`` values (the
    newest ``size`` ones).

    >>> ring = RingBuffer(3, "int64"); ring.extend(np.arange(5)); ring.values().tolist()
    [2, 3, 4]
    >>> rows = RingBuffer(2, width=2); rows.extend(np.arange(6.0)); rows.values().tolist()
    [[2.0, 3.0], [4.0, 5.0]]
    """

    def __init__(self, size: int, dtype: str = "float64", width: int | None = None):
        self.size = int(size)
        self.width = width
        self.buf = np.zeros(self.size if width is None else (self.size, int(width)), dtype=dtype)
        self.pos = 0
        self.count = 0

    def extend(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=self.buf.dtype)
        if self.width is not None:
            values = values.reshape(-1, self.width)
        n = len(values)
        if n >= self.size:
            self.buf[:] = values[-self.size:]
            self.pos = 0
        else:
            end = self.pos + n
            if end <= self.size:
                self.buf[self.pos:end] = values
            else:
                first = self.size - self.pos
                self.buf[self.pos:] = values[:first]
                self.buf[: n - first] = values[first:]
            self.pos = end % self.size
        self.count = min(self.size, self.count + n)

    def values(self) -> np.ndarray:
        """Contents, oldest first."""
        if self.count < self.size:
            return self.buf[: self.count].copy()
        return np.concatenate([self.buf[self.pos:], self.buf[: self.pos]])

    def to_state(self) -> dict:
        return {"size": self.size, "values": self.values()}

    @classmethod
    def from_state(cls, state: dict, dtype: str = "float64") -> "RingBuffer":
        ring = cls(int(state["size"]), dtype)
        ring.extend(np.asarray(state["values"], dtype=dtype))
        return ring


class RollingClassification:
    """Classification metrics over the last ``window`` joined pairs.

    Keeps ring buffers of class indices and (when present) per-class scores;
    the metrics are recomputed on demand, ROC AUC exactly.
    """

    def __init__(self, window: int, positive_label: str | None = None):
        self.window = window
        self.positive_label = positive_label
        self.classes = _Classes()
        self.y = RingBuffer(window, "int64")
        self.p = RingBuffer(window, "int64")
        self.loss = RingBuffer(window)  # NaN where the event had no probabilities
        self.scores: dict[str, RingBuffer] = {}  # class -> score (NaN: no probabilities)

    def update(self, y_true: Sequence[str], y_pred: Sequence[str],
               probabilities: Sequence[dict | None] | None = None) -> None:
        n = len(y_true)
        if n == 0:
            return
        self.y.extend(self.classes.encode(y_true))
        self.p.extend(self.classes.encode(y_pred))
        batch = _as_proba(y_true, probabilities)
        if batch is not None:
            loss = -np.log(np.clip(batch.p_true, _EPS, 1 - _EPS))  # NaN stays NaN
            for key in sorted(set(self.scores) | set(batch.keys)):
                ring = self.scores.get(key)
                if ring is None:
                    ring = self.scores[key] = RingBuffer(self.window)
                    # NaN for the older pairs still in the window (none when
                    # this batch alone fills it).
                    ring.extend(np.full(max(0, self.y.count - n), np.nan))
                ring.extend(batch.column(key))
        else:
            loss = np.full(n, np.nan)
            for ring in self.scores.values():
                ring.extend(np.full(n, np.nan))
        self.loss.extend(loss)

    @property
    def count(self) -> int:
        return self.y.count

    def get(self, only: Iterable[str] | None = None) -> dict[str, float | None]:
        if self.y.count == 0:
            return {m: None for m in ("accuracy", "precision", "recall", "f1", "log_loss", "roc_auc")}
        k = len(self.classes.keys)
        y, p = self.y.values(), self.p.values()
        cm = np.bincount(y * k + p, minlength=k * k).reshape(k, k)
        out: dict[str, float | None] = dict(_river_scores(cm, self.classes.keys, self.positive_label))
        loss = self.loss.values()
        has = ~np.isnan(loss)
        out["log_loss"] = float(loss[has].mean()) if has.any() else None
        out["roc_auc"] = None
        if has.any() and (only is None or "roc_auc" in only):
            seen_idx = sorted(set(np.unique(y).tolist()) | set(np.unique(p).tolist()))
            seen = [self.classes.keys[i] for i in seen_idx]
            if len(seen) <= 2:
                targets = [_positive_of(seen, self.positive_label)]
            else:
                targets = seen
            aucs = []
            for key in targets:
                ring = self.scores.get(key)
                if ring is None:
                    if len(seen) == 2 and len(targets) == 1:
                        other = [s for s in seen if s != key][0]
                        ring = self.scores.get(other)
                        if ring is not None:
                            sc = 1.0 - ring.values()
                            mask = ~np.isnan(sc)
                            aucs.append(roc_auc_exact(y[mask] == self.classes.index[key], sc[mask]))
                            continue
                    aucs.append(None)
                    continue
                sc = ring.values()
                mask = ~np.isnan(sc)
                idx = self.classes.index.get(key, -1)
                aucs.append(roc_auc_exact(y[mask] == idx, sc[mask]))
            out["roc_auc"] = None if any(a is None for a in aucs) or not aucs else float(np.mean(aucs))
        return out

    def to_state(self) -> dict:
        return {"window": self.window, "positive_label": self.positive_label, "classes": list(self.classes.keys),
                "y": self.y.to_state(), "p": self.p.to_state(), "loss": self.loss.to_state(),
                "scores": {k: r.to_state() for k, r in self.scores.items()}}

    @classmethod
    def from_state(cls, state: dict) -> "RollingClassification":
        self = cls(int(state["window"]), state["positive_label"])
        self.classes = _Classes(state["classes"])
        self.y = RingBuffer.from_state(state["y"], "int64")
        self.p = RingBuffer.from_state(state["p"], "int64")
        self.loss = RingBuffer.from_state(state["loss"])
        self.scores = {k: RingBuffer.from_state(v) for k, v in state["scores"].items()}
        return self


class RollingRegression:
    """MAE, RMSE and R² over the last ``window`` joined pairs."""

    def __init__(self, window: int):
        self.window = window
        self.y = RingBuffer(window)
        self.p = RingBuffer(window)

    def update(self, y_true: Sequence[float], y_pred: Sequence[float]) -> None:
        self.y.extend(np.asarray(y_true, dtype=np.float64))
        self.p.extend(np.asarray(y_pred, dtype=np.float64))

    @property
    def count(self) -> int:
        return self.y.count

    def get(self, only: Iterable[str] | None = None) -> dict[str, float | None]:
        if self.y.count == 0:
            return {"mae": None, "rmse": None, "r2": None}
        y, p = self.y.values(), self.p.values()
        err = y - p
        ss_res = float(np.dot(err, err))
        ss_tot = float(((y - y.mean()) ** 2).sum())
        r2 = (1.0 if ss_res == 0 else 0.0) if ss_tot == 0 else 1.0 - ss_res / ss_tot
        return {"mae": float(np.abs(err).mean()), "rmse": math.sqrt(ss_res / y.size), "r2": r2}

    def to_state(self) -> dict:
        return {"window": self.window, "y": self.y.to_state(), "p": self.p.to_state()}

    @classmethod
    def from_state(cls, state: dict) -> "RollingRegression":
        self = cls(int(state["window"]))
        self.y = RingBuffer.from_state(state["y"])
        self.p = RingBuffer.from_state(state["p"])
        return self
