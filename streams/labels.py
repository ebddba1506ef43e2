"""Class labels as canonical text, and probability dicts keyed the same way.

Labels arrive as strings, booleans, integers or integral floats (JSON or
Python events); the metrics compare them through one canonical text,
:func:`class_key`: strings as they are, booleans as ``"true"``/``"false"``,
integral numbers as their decimal text. ``probabilities`` keys are
re-keyed to the same text by :func:`canonical_probabilities` (``"1.0"`` ->
``"1"``, ``"True"`` -> ``"true"``).

Binary problems name a positive class: the one given, otherwise the greater
class in sorted order (numeric order when every key is a number), as
scikit-learn's ``LabelBinarizer`` does (:func:`positive_class`).

Examples
--------
>>> [class_key(v) for v in (1, 1.0, True, "yes")]
['1', '1', 'true', 'yes']
>>> canonical_probabilities([{"1.0": 0.8, "0.0": 0.2}])
[{'1': 0.8, '0': 0.2}]
>>> positive_class(["2", "10"], None), positive_class(["no", "yes"], "no")
('10', 'no')
>>> classes = ClassIndex(); classes.encode(["b", "a", "b"]).tolist(), classes.keys
([0, 1, 0], ['b', 'a'])
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from driftline.sdk import class_key  # the one rule, shared with the SDK

__all__ = [
    "ClassIndex",
    "canonical_probabilities",
    "canonical_probability_key",
    "class_key",
    "positive_class",
    "sort_classes",
]


def sort_classes(keys: Iterable[str]) -> list[str]:
    """Class keys in numeric order when every key is a number, else in text order.

    >>> sort_classes(["10", "9"]), sort_classes(["b", "10"])
    (['9', '10'], ['10', 'b'])
    """
    keys = list(keys)
    try:
        return sorted(keys, key=float)
    except ValueError:
        return sorted(keys)


def positive_class(keys: Sequence[str], positive: str | None) -> str | None:
    """The positive class of a binary problem: ``positive`` if given, else the
    greatest of ``keys`` (:func:`sort_classes`); ``None`` without keys.

    >>> positive_class(["0", "1"], None), positive_class([], None)
    ('1', None)
    """
    if positive is not None:
        return positive
    return sort_classes(keys)[-1] if keys else None


def canonical_probability_key(key: str) -> str:
    """A ``probabilities`` key as :func:`class_key` text (``"True"`` ->
    ``"true"``, ``"1.0"`` -> ``"1"``; other keys unchanged).

    >>> [canonical_probability_key(k) for k in ("True", "1.0", " 1", "yes")]
    ['true', '1', ' 1', 'yes']
    """
    if key in ("True", "False"):
        return key.lower()
    try:
        f = float(key)
    except ValueError:
        return key
    return str(int(f)) if f.is_integer() and key.strip() == key else key


# Raw probability key -> canonical key; cleared when it outgrows its bound.
_KEY_CACHE: dict[str, str] = {}


def canonical_probabilities(probabilities: Sequence[dict | None]) -> list[dict | None]:
    """Re-key probability dicts with :func:`class_key` text (``"True"`` ->
    ``"true"``, ``"1.0"`` -> ``"1"``).

    >>> canonical_probabilities([{"True": 0.8, "False": 0.2}, None])
    [{'true': 0.8, 'false': 0.2}, None]
    """
    cache = _KEY_CACHE
    rows = [p for p in probabilities if p]
    keys = set().union(*rows) if rows else set()
    if len(rows) == len(probabilities) and all(cache.get(k) == k for k in keys):
        return list(probabilities)  # already canonical: the usual case
    for k in keys:
        if k not in cache:
            cache[k] = canonical_probability_key(k)
    out = []
    for probs in probabilities:
        if not probs:
            out.append(None)
            continue
        try:
            out.append({cache[k]: v for k, v in probs.items()})
        except KeyError:
            if len(cache) > 100_000:
                cache.clear()
            for k in probs:
                if k not in cache:
                    cache[k] = canonical_probability_key(k)
            out.append({cache[k]: v for k, v in probs.items()})
    return out


class ClassIndex:
    """Class key <-> index, in order of first appearance.

    >>> classes = ClassIndex(["no"]); classes.encode(["yes", "no"]).tolist(), classes.index
    ([1, 0], {'no': 0, 'yes': 1})
    """

    def __init__(self, keys: Sequence[str] = ()):
        self.keys: list[str] = list(keys)
        self.index: dict[str, int] = {k: i for i, k in enumerate(self.keys)}

    def encode(self, keys: Sequence[str]) -> np.ndarray:
        """Indices of ``keys``, new keys added at the end."""
        index = self.index
        try:
            return np.fromiter(map(index.__getitem__, keys), dtype=np.int64, count=len(keys))
        except KeyError:
            pass  # a new key: the slow way below adds it
        out = []
        for k in keys:
            i = index.get(k)
            if i is None:
                i = index[k] = len(self.keys)
                self.keys.append(k)
            out.append(i)
        return np.fromiter(out, dtype=np.int64, count=len(out))
