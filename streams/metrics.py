"""Online model-quality metrics, cumulative and over a rolling window.

Cumulative metrics are kept as *exact sufficient statistics*: a confusion
matrix of integer counts, exact (arbitrary-precision) sums of per-event
losses, and per-class score histograms for ROC AUC. Exact sums make the
result independent of batch boundaries, of the order events arrive in and of
how many processes shared the work: two partial states merged with
:meth:`ClassificationMetrics.merge` give bit-for-bit the same numbers as one
state that saw every event, and a state restored after a crash continues
exactly where it stopped.

Accuracy, precision, recall and F1 are River's metric classes' numbers
(:class:`river.metrics.Accuracy`, ``Precision``/``Recall``/``F1`` with
``pos_val`` for binary problems, ``MacroPrecision``/``MacroRecall``/
``MacroF1`` otherwise, over a :class:`river.metrics.ConfusionMatrix` filled
from the counts with sample weights), computed by :mod:`driftline.streams.confusion`
with River's arithmetic. Log loss, MAE, RMSE and R² follow
scikit-learn's definitions (River's running means round differently event by
event and cannot be merged exactly).

Conventions (the same as scikit-learn's batch metrics on the same pairs)
------------------------------------------------------------------------
* Class labels are compared through :func:`class_key`
  (:mod:`driftline.streams.labels`): strings as they are,
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
  distributions; the rolling AUC is exact (Mann-Whitney ranks; both in
  :mod:`driftline.streams.auc`).
* R² is 1 when labels are constant and predicted perfectly, else 0 for
  constant labels (scikit-learn's ``force_finite``).

References
----------
.. [1] Dekker, T. J. (1971). A floating-point technique for extending the
   available precision. Numerische Mathematik 18 (exact products).
.. [2] Hanley, J. A., McNeil, B. J. (1982). The meaning and use of the area
   under a receiver operating characteristic (ROC) curve. Radiology 143.
.. [3] scikit-learn ``sklearn.metrics`` (the batch definitions matched here).

The pieces live one per module: class keys (:mod:`~driftline.streams.labels`),
exact sums (:mod:`~driftline.streams.exact_sum`), a batch's probabilities
(:mod:`~driftline.streams.probabilities`), River's scores over confusion
counts (:mod:`~driftline.streams.confusion`), ROC AUC
(:mod:`~driftline.streams.auc`), histogram state
(:mod:`~driftline.streams.index_values`), the ring buffer
(:mod:`~driftline.streams.ring`) and the rolling-window metrics
(:mod:`~driftline.streams.rolling`). This module holds the cumulative
metrics and registers the metric names in the catalog; it re-exports the
names it used to define.

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
from typing import Sequence

import numpy as np

from driftline.catalog import METRICS

from .auc import N_BINS, auc_from_histogram, logit_bins, roc_auc_exact
from .confusion import confusion_scores
from .exact_sum import SHIFT, ExactSum, two_square
from .index_values import from_index_values, to_index_values
from .labels import (ClassIndex, canonical_probabilities, canonical_probability_key, class_key, positive_class,
                     sort_classes)
from .probabilities import ProbaBatch, as_proba_batch, log_losses
from .ring import RingBuffer
from .rolling import RollingClassification, RollingRegression

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

# The private names other modules imported from here before the split.
_canonical_prob_key = canonical_probability_key
_sort_classes = sort_classes


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
        self.classes = ClassIndex()
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
        batch = as_proba_batch(y_true, probabilities)
        if batch is not None:
            self._update_proba(batch)

    def _update_proba(self, batch: ProbaBatch) -> None:
        has = batch.has
        n_rows = int(has.sum())
        if not n_rows:
            return
        self.log_loss_sum.add(log_losses(batch.p_true[has]))
        self.n_proba += n_rows
        # Scores per class for ROC AUC: every class that has had a probability.
        for key in sorted(set(self.hist) | set(batch.keys)):
            scores = batch.column(key)[has]
            is_pos = batch.is_label(key)[has]
            hist = self.hist.get(key)
            if hist is None:
                hist = self.hist[key] = np.zeros((2, N_BINS), dtype=np.int64)
            bins = logit_bins(scores)
            hist[0] += np.bincount(bins[is_pos], minlength=N_BINS)
            hist[1] += np.bincount(bins[~is_pos], minlength=N_BINS)

    def seen_classes(self) -> list[str]:
        if self.cm.size == 0:
            return []
        used = (self.cm.sum(axis=0) + self.cm.sum(axis=1)) > 0
        return [k for k, u in zip(self.classes.keys, used.tolist()) if u]

    def get(self) -> dict[str, float | None]:
        """Current metric values (``None`` where undefined)."""
        if self.n == 0:
            return {m: None for m in ("accuracy", "precision", "recall", "f1", "log_loss", "roc_auc")}
        out: dict[str, float | None] = dict(confusion_scores(self.cm, self.classes.keys, self.positive_label))
        out["log_loss"] = self.log_loss_sum.value() / self.n_proba if self.n_proba else None
        out["roc_auc"] = self._roc_auc()
        return out

    def _roc_auc(self) -> float | None:
        if not self.n_proba:
            return None
        seen = self.seen_classes()
        if len(seen) <= 2:
            pos = positive_class(seen, self.positive_label)
            if pos in self.hist:
                return auc_from_histogram(self.hist[pos][0], self.hist[pos][1])
            other = [k for k in seen if k != pos]
            if other and other[0] in self.hist:
                h = self.hist[other[0]]
                # p[pos] = 1 - p[other]: reversed order; AUC of the other class's score flipped.
                auc = auc_from_histogram(h[0], h[1])
                return None if auc is None else auc
            return None
        aucs = []
        for key in seen:
            h = self.hist.get(key)
            auc = None if h is None else auc_from_histogram(h[0], h[1])
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
                "hist": {k: to_index_values(h) for k, h in self.hist.items()}}

    @classmethod
    def from_state(cls, state: dict) -> "ClassificationMetrics":
        self = cls(state["positive_label"])
        self.classes = ClassIndex(state["classes"])
        self.cm = np.asarray(state["cm"], dtype=np.int64).reshape(len(self.classes.keys), -1) \
            if len(self.classes.keys) else np.zeros((0, 0), dtype=np.int64)
        self.n = int(state["n"])
        self.n_proba = int(state["n_proba"])
        self.log_loss_sum = ExactSum(int(state["log_loss_sum"]))
        self.hist = {k: from_index_values(v, (2, N_BINS)) for k, v in state["hist"].items()}
        return self


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
        hi, lo = two_square(err)
        self.sq_err.add(hi)
        self.sq_err.add(lo)
        self.sum_y.add(y)
        hi, lo = two_square(y)
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
        ss_tot_scaled = n * s2 * (1 << SHIFT) - s1 * s1
        if ss_tot_scaled == 0:
            r2 = 1.0 if self.sq_err.total == 0 else 0.0
        else:
            r2 = 1.0 - (self.sq_err.total * n * (1 << SHIFT)) / ss_tot_scaled
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


# The metrics ClassificationMetrics computes, in the policy's listing order:
# name, lower is better, estimated before labels (driftline.streams.estimation).
for _name, _lower, _estimated in (("accuracy", False, True), ("precision", False, True), ("recall", False, True),
                                  ("f1", False, True), ("log_loss", True, False), ("roc_auc", False, True)):
    METRICS.add(_name, ClassificationMetrics, task="classification", lower_is_better=_lower,
                estimated=_estimated)
# The metrics RegressionMetrics computes, likewise.
for _name, _lower, _estimated in (("mae", True, True), ("rmse", True, True), ("r2", False, False)):
    METRICS.add(_name, RegressionMetrics, task="regression", lower_is_better=_lower, estimated=_estimated)
