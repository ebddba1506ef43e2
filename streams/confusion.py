"""Accuracy, precision, recall and F1 from a matrix of confusion counts, as River computes them.

The values are those of River's metric classes (:class:`river.metrics.Accuracy`,
``Precision``/``Recall``/``F1`` with ``pos_val`` for binary problems,
``MacroPrecision``/``MacroRecall``/``MacroF1`` otherwise) reading a
:class:`river.metrics.ConfusionMatrix` filled from the counts with sample
weights: the same arithmetic, in the same order (the macro averages visit
the classes in the order River's ``ConfusionMatrix.classes`` gives), so the
same floating-point numbers (``tests/test_monitor_analytics.py`` compares
them with River's on random matrices). Computed here because
``river.metrics`` imports ``scipy.stats`` and ``scipy.integrate``, about
55 MB of the monitor's resident memory for two metrics it does not use.
Binary problems (at most two classes seen) report the positive class's
scores (:func:`~driftline.streams.labels.positive_class`), more classes the
macro averages over every class seen, as scikit-learn.

Examples
--------
>>> counts = np.array([[1, 0], [1, 2]])  # rows: labels "0", "1"; columns: predictions
>>> {k: round(v, 4) for k, v in confusion_scores(counts, ["0", "1"], None).items()}
{'accuracy': 0.75, 'precision': 1.0, 'recall': 0.6667, 'f1': 0.8}
"""

from __future__ import annotations

import numpy as np

from .labels import positive_class

__all__ = ["confusion_scores"]


def _ratio(num: float, den: float) -> float:
    try:
        return num / den
    except ZeroDivisionError:  # (River's rule: 0.0)
        return 0.0


def _f1(p: float, r: float) -> float:
    b2 = 1  # River's F1 is FBeta(beta=1): b2 = beta ** 2
    try:
        return (1 + b2) * p * r / (b2 * p + r)
    except ZeroDivisionError:
        return 0.0


def confusion_scores(cm_counts: np.ndarray, keys: list[str], positive: str | None) -> dict[str, float]:
    """Accuracy/precision/recall/F1 of a count matrix (``cm_counts[i, j]``:
    events of label ``keys[i]`` predicted ``keys[j]``), as River's metrics give them."""
    # River's ConfusionMatrix.update(y_true, y_pred, w) for every non-zero cell, row by row
    data: dict[tuple[str, str], float] = {}
    sum_row: dict[str, float] = {}
    sum_col: dict[str, float] = {}
    total_weight, total_tp = 0, 0.0
    rows, cols = np.nonzero(cm_counts)
    for i, j in zip(rows.tolist(), cols.tolist()):
        w = float(cm_counts[i, j])
        y_true, y_pred = keys[i], keys[j]
        data[y_true, y_pred] = data.get((y_true, y_pred), 0.0) + w
        total_weight += w
        sum_row[y_true] = sum_row.get(y_true, 0.0) + w
        sum_col[y_pred] = sum_col.get(y_pred, 0.0) + w
        if y_true == y_pred:
            total_tp += w
    seen = [keys[i] for i in sorted(set(rows.tolist()) | set(cols.tolist()))]
    out = {"accuracy": _ratio(total_tp, total_weight)}
    if len(seen) <= 2:
        pos = positive_class(seen, positive)
        tp = data.get((pos, pos), 0.0)
        fp = sum_col.get(pos, 0.0) - tp
        fn = sum_row.get(pos, 0.0) - tp
        out["precision"] = precision = _ratio(tp, tp + fp)
        out["recall"] = recall = _ratio(tp, tp + fn)
        out["f1"] = _f1(precision, recall)
        return out
    # River's ConfusionMatrix.classes, in its order (a set's): the sums below add up in that order
    classes = list({c for c, n in sum_row.items() if n} | {c for c, n in sum_col.items() if n})
    total_p, total_r, total_f = 0, 0, 0
    for c in classes:
        tp = data.get((c, c), 0.0)
        fp = sum_col.get(c, 0.0) - tp
        if tp + fp:  # MacroPrecision skips a class it cannot divide by
            total_p += tp / (tp + fp)
        if sum_row.get(c, 0.0):  # MacroRecall: cm[c][c] / sum_row[c]
            total_r += tp / sum_row[c]
        p = _ratio(tp, sum_col.get(c, 0.0))  # MacroFBeta: 0 for a class it cannot divide by
        r = _ratio(tp, sum_row.get(c, 0.0))
        if p or r:
            total_f += 2 * p * r / (1 * p + r)
    out["precision"] = _ratio(total_p, len(classes))
    out["recall"] = _ratio(total_r, len(classes))
    out["f1"] = _ratio(total_f, len(classes))
    return out
