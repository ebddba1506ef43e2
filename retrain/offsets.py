"""Which retrain-request offsets may be committed.

A partition's offset is committed only once every request before it has
ended (registered, promoted, rejected or failed). A killed worker therefore
sees its unfinished requests again after a restart; the trainer is
idempotent by request id, so exactly one version exists per request.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

__all__ = ["OffsetTracker"]


class OffsetTracker:
    """Committable positions per partition.

    Examples
    --------
    >>> t = OffsetTracker()
    >>> t.add("p0", 5); t.add("p0", 6); t.add("p0", 7)
    >>> t.done("p0", 6); t.committable()   # 5 is still open: nothing past it
    {'p0': 5}
    >>> t.done("p0", 5); t.committable()
    {'p0': 7}
    >>> t.done("p0", 7); t.committable()
    {'p0': 8}
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[Any, dict[int, int]] = defaultdict(dict)  # tp -> offset -> open tickets
        self._next: dict[Any, int] = {}  # tp -> highest offset seen + 1
        self._committed: dict[Any, int] = {}

    def add(self, tp: Any, offset: int, tickets: int = 1) -> None:
        with self._lock:
            self._pending[tp][offset] = self._pending[tp].get(offset, 0) + tickets
            self._next[tp] = max(self._next.get(tp, 0), offset + 1)

    def done(self, tp: Any, offset: int) -> None:
        with self._lock:
            left = self._pending[tp].get(offset, 0) - 1
            if left > 0:
                self._pending[tp][offset] = left
            else:
                self._pending[tp].pop(offset, None)

    def committable(self) -> dict[Any, int]:
        """Partition -> offset to commit, for partitions that moved on."""
        with self._lock:
            out = {}
            for tp, nxt in self._next.items():
                pending = self._pending.get(tp)
                position = min(pending) if pending else nxt
                if position > self._committed.get(tp, -1):
                    out[tp] = position
            return out

    def mark_committed(self, positions: dict[Any, int]) -> None:
        with self._lock:
            for tp, position in positions.items():
                self._committed[tp] = max(self._committed.get(tp, -1), position)

    def forget(self, tps) -> None:
        """Partitions taken away by a rebalance: their open requests will be
        redelivered to whoever owns them now."""
        with self._lock:
            for tp in tps:
                self._pending.pop(tp, None)
                self._next.pop(tp, None)
                self._committed.pop(tp, None)

    def open_count(self) -> int:
        with self._lock:
            return sum(sum(v.values()) for v in self._pending.values())
