"""Integer count arrays in saved state as their non-zero entries.

A score histogram (:mod:`driftline.streams.auc`) has thousands of bins, most
of them empty; the state keeps ``{"i": flat indices, "v": counts}`` of the
non-zero ones.

Examples
--------
>>> counts = np.array([[0, 3, 0], [1, 0, 0]])
>>> state = to_index_values(counts); state["i"].tolist(), state["v"].tolist()
([1, 3], [3, 1])
>>> from_index_values(state, (2, 3)).tolist()
[[0, 3, 0], [1, 0, 0]]
"""

from __future__ import annotations

import numpy as np

__all__ = ["from_index_values", "to_index_values"]


def to_index_values(counts: np.ndarray) -> dict:
    """The non-zero entries of ``counts``: flat indices ``"i"``, values ``"v"``."""
    flat = counts.ravel()
    idx = np.flatnonzero(flat)
    return {"i": idx.astype(np.int64), "v": flat[idx].astype(np.int64)}


def from_index_values(data: dict, shape: tuple[int, int]) -> np.ndarray:
    """The ``shape`` array of :func:`to_index_values`'s ``data``;
    :class:`ValueError` if an index falls outside it.

    >>> from_index_values({"i": [6], "v": [1]}, (2, 3))
    Traceback (most recent call last):
    ...
    ValueError: histogram index out of range
    """
    out = np.zeros(shape[0] * shape[1], dtype=np.int64)
    idx = np.asarray(data["i"], dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= out.size):
        raise ValueError("histogram index out of range")
    out[idx] = data["v"]
    return out.reshape(shape)
