"""Rolling percentiles (prediction latency, label delay) and throughput.

Examples
--------
>>> import numpy as np
>>> q = RollingQuantiles(window=100)
>>> q.update(np.arange(1, 201, dtype=float))
>>> q.percentiles([50, 95])
[150.5, 195.05]
>>> t = Throughput()
>>> t.update(100, now=10.0); t.update(100, now=12.0)
>>> t.rate(now=12.0)
100.0
"""

from __future__ import annotations

import numpy as np

from .ring import RingBuffer

__all__ = ["RollingQuantiles", "Throughput"]


class RollingQuantiles:
    """Percentiles of the last ``window`` values (numpy's linear interpolation)."""

    def __init__(self, window: int):
        self.ring = RingBuffer(int(window))
        self.total = 0

    def update(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        if values.size:
            self.ring.extend(values)
            self.total += values.size

    @property
    def count(self) -> int:
        return self.ring.count

    def percentiles(self, qs: list[float]) -> list[float | None]:
        if self.ring.count == 0:
            return [None] * len(qs)
        return [float(v) for v in np.percentile(self.ring.buf[: self.ring.count], qs)]

    def to_state(self) -> dict:
        return {"ring": self.ring.to_state(), "total": self.total}

    @classmethod
    def from_state(cls, state: dict) -> "RollingQuantiles":
        self = cls(state["ring"]["size"])
        self.ring = RingBuffer.from_state(state["ring"])
        self.total = int(state["total"])
        return self


class Throughput:
    """Events per second between two snapshots (by the caller's clock).

    ``rate`` reports the events counted since the previous ``mark`` divided
    by the time since then; the first interval starts at the first event.
    """

    def __init__(self) -> None:
        self.since: float | None = None
        self.count = 0
        self.last_rate = 0.0

    def update(self, n: int, now: float) -> None:
        if self.since is None:
            self.since = now
        self.count += n

    def rate(self, now: float) -> float:
        if self.since is None or now <= self.since:
            return self.last_rate
        return self.count / (now - self.since)

    def mark(self, now: float) -> float:
        """Rate of the closing interval; starts a new one."""
        rate = self.rate(now)
        self.last_rate = rate
        self.since = now
        self.count = 0
        return rate

    def to_state(self) -> dict:
        return {"since": self.since, "count": self.count, "last_rate": self.last_rate}

    @classmethod
    def from_state(cls, state: dict) -> "Throughput":
        self = cls()
        self.since, self.count, self.last_rate = state["since"], int(state["count"]), float(state["last_rate"])
        return self
