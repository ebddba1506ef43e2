"""Classification and regression metrics over the last ``window`` joined pairs.

The same definitions as the cumulative metrics (:mod:`driftline.streams.metrics`,
whose module docstring lists the conventions), recomputed on demand from
ring buffers of the window's class indices, scores and losses; the ROC AUC
is exact (:func:`~driftline.streams.auc.roc_auc_exact`).

Examples
--------
>>> m = RollingClassification(window=3)
>>> m.update(["1", "0", "1", "1"], ["1", "0", "0", "1"],
...          [{"1": 0.9, "0": 0.1}, {"1": 0.2, "0": 0.8}, {"1": 0.4, "0": 0.6}, {"1": 0.7, "0": 0.3}])
>>> {k: round(v, 4) for k, v in m.get().items()}
{'accuracy': 0.6667, 'precision': 1.0, 'recall': 0.5, 'f1': 0.6667, 'log_loss': 0.4987, 'roc_auc': 1.0}
>>> r = RollingRegression(window=2)
>>> r.update([3.0, -0.5, 2.0], [2.5, 0.0, 2.5])
>>> r.get()
{'mae': 0.5, 'rmse': 0.5, 'r2': 0.84}
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

from .auc import roc_auc_exact
from .confusion import confusion_scores
from .labels import ClassIndex, positive_class
from .probabilities import as_proba_batch, log_losses
from .ring import RingBuffer

__all__ = ["RollingClassification", "RollingRegression"]


class RollingClassification:
    """Classification metrics over the last ``window`` joined pairs.

    Keeps ring buffers of class indices and (when present) per-class scores;
    the metrics are recomputed on demand, ROC AUC exactly.
    """

    def __init__(self, window: int, positive_label: str | None = None):
        self.window = window
        self.positive_label = positive_label
        self.classes = ClassIndex()
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
        batch = as_proba_batch(y_true, probabilities)
        if batch is not None:
            loss = log_losses(batch.p_true)  # NaN stays NaN
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
        out: dict[str, float | None] = dict(confusion_scores(cm, self.classes.keys, self.positive_label))
        loss = self.loss.values()
        has = ~np.isnan(loss)
        out["log_loss"] = float(loss[has].mean()) if has.any() else None
        out["roc_auc"] = None
        if has.any() and (only is None or "roc_auc" in only):
            seen_idx = sorted(set(np.unique(y).tolist()) | set(np.unique(p).tolist()))
            seen = [self.classes.keys[i] for i in seen_idx]
            if len(seen) <= 2:
                targets = [positive_class(seen, self.positive_label)]
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
        self.classes = ClassIndex(state["classes"])
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
