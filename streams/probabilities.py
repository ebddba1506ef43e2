"""A batch's probability dicts as one matrix, and the log loss of each row.

The cumulative and the rolling classification metrics read the same batch:
:class:`ProbaBatch` extracts the dicts once (keys as :func:`class_key
<driftline.streams.labels.class_key>` text, see
:func:`~driftline.streams.labels.canonical_probabilities`).

Examples
--------
>>> batch = ProbaBatch(["1", "0", "1"], [{"1": 0.9, "0": 0.1}, None, {"1": 0.4}])
>>> batch.keys, batch.p_true.tolist()
(['0', '1'], [0.9, nan, 0.4])
>>> [round(v, 4) for v in log_losses(batch.p_true).tolist()]
[0.1054, nan, 0.9163]
"""

from __future__ import annotations

import operator
from typing import Sequence

import numpy as np

__all__ = ["EPS", "ProbaBatch", "as_proba_batch", "log_losses"]

#: Probabilities are clipped to ``[EPS, 1 - EPS]`` for the log loss, as scikit-learn 1.5+.
EPS = float(np.finfo(np.float64).eps)


class ProbaBatch:
    """A batch's probabilities as a matrix, shared by cumulative and rolling metrics.

    ``keys``: classes named in any probability dict (sorted); ``matrix``:
    ``n x len(keys)`` (0 for a class missing from a row's dict, NaN for rows
    without probabilities); ``p_true``: the probability of each row's label
    (NaN without probabilities); ``true_col``: the label's column or -1.

    >>> batch = ProbaBatch(["a", "b"], [{"a": 0.7, "b": 0.3}, {"a": 0.2}])
    >>> batch.column("b").tolist(), batch.is_label("a").tolist()
    ([0.3, 0.0], [True, False])
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
        """Whether each row's label is ``key``."""
        if key in self.keys:
            return self.true_col == self.keys.index(key)
        return np.fromiter((t == key for t in self.y_true), dtype=bool, count=self.n)


def as_proba_batch(y_true: Sequence[str],
                   probabilities: "Sequence[dict | None] | ProbaBatch | None") -> "ProbaBatch | None":
    """``probabilities`` as a :class:`ProbaBatch` (as given if it is one);
    ``None`` when no row has probabilities.

    >>> as_proba_batch(["1"], [None]) is None
    True
    """
    if probabilities is None or isinstance(probabilities, ProbaBatch):
        return probabilities
    return ProbaBatch(y_true, probabilities) if any(probabilities) else None


def log_losses(p_true: np.ndarray) -> np.ndarray:
    """Per-row log loss ``-log(clip(p, EPS, 1 - EPS))`` of the label's
    probability (NaN stays NaN).

    >>> log_losses(np.array([1.0, 0.0])).tolist() == [-np.log(1 - EPS), -np.log(EPS)]
    True
    """
    return -np.log(np.clip(p_true, EPS, 1 - EPS))
