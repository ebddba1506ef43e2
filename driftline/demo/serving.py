"""The demo's serving application: a champion and the delayed labels."""

from __future__ import annotations

import time
from collections import deque

from ..champion import Champion
from .stream import DEMO_MODEL

__all__ = ["Serving"]


class Serving:
    """The demo's application: a :class:`~driftline.champion.Champion`
    (it loads ``agrawal@champion``, follows promotions and publishes every
    prediction) plus the labels, sent ``label_delay_s`` later."""

    def __init__(self, settings, registry, label_delay_s: float):
        self.champion = Champion(DEMO_MODEL, settings=settings, registry=registry)
        self.label_delay_s = label_delay_s
        self.pending: deque = deque()

    @property
    def version(self) -> int:
        return self.champion.version

    def serve(self, rows: list[tuple[dict, int]], ids: list[str]) -> tuple[list[int], int]:
        """Predict a batch (published by the champion), queue its labels;
        returns the predictions and the version that made them."""
        result = self.champion.predict([x for x, _ in rows], event_ids=ids)
        due = time.monotonic() + self.label_delay_s
        for (_, y), event_id in zip(rows, ids):
            self.pending.append((due, event_id, y))
        return result.predictions, result.model_version

    def send_due_labels(self, everything: bool = False) -> int:
        now, labels = time.monotonic(), []
        while self.pending and (everything or self.pending[0][0] <= now):
            _, event_id, y = self.pending.popleft()
            labels.append((event_id, y))
        if labels:
            self.champion.publish_labels(labels)
        return len(labels)

    def flush(self, timeout: float) -> None:
        self.champion.flush(timeout)

    def close(self) -> None:
        self.champion.close(10)
