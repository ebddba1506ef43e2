"""Accuracy, precision, recall and F1 from a matrix of confusion counts, by River.

River's metric classes (:class:`river.metrics.Accuracy`,
``Precision``/``Recall``/``F1`` with ``pos_val`` for binary problems,
``MacroPrecision``/``MacroRecall``/``MacroF1`` otherwise) read a
:class:`river.metrics.ConfusionMatrix` filled from the counts with sample
weights. Binary problems (at most two classes seen) report the positive
class's scores (:func:`~driftline.streams.labels.positive_class`), more
classes the macro averages over every class seen, as scikit-learn.

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


def confusion_scores(cm_counts: np.ndarray, keys: list[str], positive: str | None) -> dict[str, float]:
    """Accuracy/precision/recall/F1 from River's metrics over a count matrix
    (``cm_counts[i, j]``: events of label ``keys[i]`` predicted ``keys[j]``)."""
    from river import metrics as river_metrics  # here: the catalog of metric names must not load River

    cm = river_metrics.ConfusionMatrix()
    rows, cols = np.nonzero(cm_counts)
    for i, j in zip(rows.tolist(), cols.tolist()):
        cm.update(keys[i], keys[j], w=float(cm_counts[i, j]))
    seen = [keys[i] for i in sorted(set(rows.tolist()) | set(cols.tolist()))]
    out = {"accuracy": river_metrics.Accuracy(cm=cm).get()}
    if len(seen) <= 2:
        pos = positive_class(seen, positive)
        out["precision"] = river_metrics.Precision(cm=cm, pos_val=pos).get()
        out["recall"] = river_metrics.Recall(cm=cm, pos_val=pos).get()
        out["f1"] = river_metrics.F1(cm=cm, pos_val=pos).get()
    else:
        out["precision"] = river_metrics.MacroPrecision(cm=cm).get()
        out["recall"] = river_metrics.MacroRecall(cm=cm).get()
        out["f1"] = river_metrics.MacroF1(cm=cm).get()
    return out
