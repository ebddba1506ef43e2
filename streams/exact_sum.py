"""Exact sums of float64 values, independent of order and batching.

Every finite float64 is an integer multiple of ``2**-1074``; :class:`ExactSum`
keeps the sum as one Python integer in units of ``2**-SHIFT``, so two partial
sums merged give bit-for-bit the sum of every value, whatever the order.
:func:`two_square` splits a square into two floats whose sum is exact
(Veltkamp/Dekker [1]_), so sums of squares stay exact too.

References
----------
.. [1] Dekker, T. J. (1971). A floating-point technique for extending the
   available precision. Numerische Mathematik 18 (exact products).

Examples
--------
>>> s = ExactSum(); s.add(np.array([1e16, 1.0, -1e16])); s.value()
1.0
>>> from fractions import Fraction
>>> x = np.array([0.1, 0.3]); hi, lo = two_square(x)
>>> squares = ExactSum(); squares.add(hi); squares.add(lo)
>>> squares.value() == float(sum(Fraction(v) ** 2 for v in x.tolist()))
True
"""

from __future__ import annotations

import numpy as np

__all__ = ["SHIFT", "ExactSum", "two_square"]

#: Offset (in bits) that keeps every float64, subnormals included, an integer
#: multiple of 2**-SHIFT.
SHIFT = 1200


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
            total += ((h << 26) + low) << (e - 53 + SHIFT)
        self.total = total

    def merge(self, other: "ExactSum") -> None:
        self.total += other.total

    def value(self) -> float:
        return self.total / (1 << SHIFT)


def two_square(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x*x`` as an exact sum ``hi + lo`` (Veltkamp/Dekker two-product).

    >>> hi, lo = two_square(np.array([0.1])); float(hi[0]), float(lo[0]) != 0.0
    (0.010000000000000002, True)
    """
    hi = x * x
    a = x * 134217729.0  # 2**27 + 1
    xh = a - (a - x)
    xl = x - xh
    lo = ((xh * xh - hi) + 2.0 * xh * xl) + xl * xl
    return hi, lo
