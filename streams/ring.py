"""A fixed-size ring buffer: the newest ``size`` values (or rows) of a stream.

The rolling metrics, the latency percentiles, the outlier windows and the
performance estimation keep their windows in one.

Examples
--------
>>> ring = RingBuffer(3, "int64"); ring.extend(np.arange(5)); ring.values().tolist()
[2, 3, 4]
>>> RingBuffer.from_state(ring.to_state(), "int64").values().tolist()
[2, 3, 4]
"""

from __future__ import annotations

import numpy as np

__all__ = ["RingBuffer"]


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
