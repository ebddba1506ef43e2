"""The contract's field checks and the error they raise.

Each check takes ``(value, field path)`` and returns the normalised value or
raises :class:`ValidationError`, which names the field, the value and the
reason. Error messages show a short, bounded form of the value
(:func:`safe_repr`: never a full or recursive ``repr``; NumPy scalars by
value). The record types (:mod:`driftline.records`) are built from these
checks; :mod:`driftline.events` decodes and encodes them.

Examples
--------
>>> from driftline.fields import ValidationError, validate_name
>>> validate_name("churn")
'churn'
>>> try:
...     validate_name("../etc")
... except ValidationError as error:
...     error.field
'model'
"""

from __future__ import annotations

import base64
import binascii
import itertools
import math
import numbers
import re
import reprlib
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from .errors import DriftlineError

__all__ = [
    "ValidationError",
    "safe_repr",
    "validate_name",
    "new_id",
    "now",
    "MISSING_VALUE",
    "MAX_MESSAGE_BYTES",
    "MAX_DEAD_LETTER_BYTES",
    "MAX_BATCH_EVENTS",
    "MAX_FEATURES",
    "MAX_STRING",
    "MAX_ID",
    "MAX_PARSE_DEPTH",
    "MAX_OBJECT_DEPTH",
]

# -- limits ---------------------------------------------------------------------

#: Largest message a consumer accepts (bytes). Kafka's own default is 1 MiB.
MAX_MESSAGE_BYTES = 1_048_576
#: Most bytes of a refused message kept in its dead letter.
MAX_DEAD_LETTER_BYTES = 512 * 1024
#: Most events in one bulk message.
MAX_BATCH_EVENTS = 10_000
MAX_FEATURES = 1_000
MAX_STRING = 1_024
MAX_ID = 256
#: Deepest nesting of arrays and objects a message may have (orjson's parser
#: refuses deeper JSON; Python's ``json`` would need a deep stack).
MAX_PARSE_DEPTH = 1_024
#: Deepest nesting inside a free-form object field (``details``, ``stats``),
#: well below the 254 levels orjson can write.
MAX_OBJECT_DEPTH = 32
# Integers orjson can write: signed or unsigned 64 bits.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1

# Model, feature-set and alias names: no path separators, no traversal, no
# whitespace, so a name is safe as a file name, a URL part and a metric label.
# \Z, not $: "$" also matches before a trailing newline.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
_KIND = re.compile(r"^[a-z][a-z0-9_]{0,63}\Z")

_MISSING = object()


class _MissingRepr:
    def __repr__(self) -> str:
        return "<missing>"


MISSING_VALUE = _MissingRepr()


class _BoundedRepr(reprlib.Repr):
    """``repr`` with bounded depth, length and cost: a value nested 1,000
    levels deep, a 4,000-digit integer or a megabyte string each give a
    short text (the builtin ``repr`` recurses, refuses or copies them)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxdict = self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = 4
        self.maxstring = self.maxother = 80

    def repr1(self, x: Any, level: int) -> str:
        # NumPy scalars by value (0.5, not np.float64(0.5)).
        if type(x).__module__ == "numpy" and getattr(x, "shape", None) == () and hasattr(x, "item"):
            x = x.item()
        return super().repr1(x, level)

    def repr_int(self, x: int, level: int) -> str:
        bits = x.bit_length()
        if bits > 128:  # repr() of more than 4,300 digits raises ValueError
            return f"<integer of {bits} bits>"
        return super().repr_int(x, level)

    def repr_dict(self, x: dict, level: int) -> str:
        # The keys as sent (reprlib sorts the whole dict first).
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        pairs = itertools.islice(x.items(), self.maxdict)
        shown = [f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}" for k, v in pairs]
        return "{" + ", ".join(shown) + (", ...}" if len(x) > self.maxdict else "}")


_bounded_repr = _BoundedRepr()


def _safe_text(text: str) -> str:
    """``text`` with lone surrogates escaped, so it can be encoded as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def safe_repr(value: Any, limit: int = 80) -> str:
    """A short, safe text for ``value`` in an error message: bounded in
    length and depth, never raising, NumPy scalars shown by value.

    Examples
    --------
    >>> import numpy as np
    >>> safe_repr(np.float64(0.5)), safe_repr(10**5000)
    ('0.5', '<integer of 16610 bits>')
    >>> deep = []
    >>> for _ in range(5000):
    ...     deep = [deep]
    >>> safe_repr(deep)
    '[[[[...]]]]'
    """
    text = _safe_text(_bounded_repr.repr(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ValidationError(DriftlineError, ValueError):
    """A record broke the contract.

    Parameters
    ----------
    field
        Dotted path of the offending field (``features.age``, ``[3].model``);
        ``<payload>`` for the message as a whole.
    value
        The offending value (shortened in the message).
    reason
        Why it was refused.
    index
        Position in a bulk message, or ``None`` for a single event.
    """

    def __init__(self, field: str, value: Any, reason: str, index: int | None = None):
        # The field path may hold a key from the input: made encodable and
        # bounded too, since a dead letter carries it.
        self.field = _safe_text(field) if type(field) is str else safe_repr(field)
        self.value = value
        self.reason = reason
        self.index = index
        where = f"[{index}]." if index is not None else ""
        name = self.field if len(self.field) <= 300 else self.field[:297] + "..."
        super().__init__(f"{where}{name}: {reason} (got {safe_repr(value)})")

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "reason": self.reason, "index": self.index, "message": str(self)}


def new_id() -> str:
    """A fresh random identifier for alerts, requests and dead letters."""
    return uuid.uuid4().hex


def now() -> float:
    """Current time as epoch seconds (the contract's timestamp unit)."""
    return time.time()


def validate_name(value: Any, field_name: str = "model") -> str:
    """Check a model or alias name: 1–128 of ``[A-Za-z0-9_.-]``, starting
    with a letter or digit (so ``..`` and ``/`` can never appear as a path)."""
    if not isinstance(value, str):
        raise ValidationError(field_name, value, "must be a string")
    if not _NAME.match(value) or ".." in value:
        raise ValidationError(
            field_name,
            value,
            "must be 1-128 characters of letters, digits, '_', '.', '-', start with a "
            "letter or digit and contain no '..'",
        )
    return value


# -- field checks -------------------------------------------------------------
# Each takes (value, field path) and returns the normalised value or raises.


def _is_number(value: Any) -> bool:
    kind = type(value)
    if kind is float:
        return value == value and value not in (math.inf, -math.inf)
    return kind is int and _INT_MIN <= value <= _INT_MAX


def _string(value: Any, path: str, limit: int = MAX_ID) -> str:
    if type(value) is not str:
        raise ValidationError(path, value, "must be a string")
    if not value or len(value) > limit:
        raise ValidationError(path, value, f"must be 1-{limit} characters")
    return value


def _optional_string(value: Any, path: str) -> str | None:
    return None if value is None else _string(value, path, MAX_STRING)


def _int(value: Any, path: str, minimum: int = 0) -> int:
    if type(value) is not int:
        # 2.0 is accepted as 2: JSON writers in other languages emit it.
        if type(value) is float and value.is_integer() and value == value:
            value = int(value)
        else:
            raise ValidationError(path, value, "must be an integer")
    if value < minimum or value > 2**53:
        raise ValidationError(path, value, f"must be between {minimum} and 2**53")
    return value


def _optional_int(value: Any, path: str) -> int | None:
    return None if value is None else _int(value, path)


def _number(value: Any, path: str) -> float:
    if not _is_number(value):
        raise ValidationError(path, value, "must be a finite number")
    return float(value)


def _optional_number(value: Any, path: str) -> float | None:
    return None if value is None else _number(value, path)


def _timestamp(value: Any, path: str) -> float:
    """ISO-8601 (naive means UTC) or epoch seconds -> epoch seconds."""
    if type(value) is float or type(value) is int:
        if not _is_number(value) or not 0 <= value < 1e11:
            raise ValidationError(path, value, "must be epoch seconds between 0 and 1e11")
        return float(value)
    if type(value) is str and 0 < len(value) <= 64:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError(path, value, "is not an ISO-8601 time or epoch seconds") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        seconds = parsed.timestamp()
        # The same range as numeric timestamps: "9999-12-31" would be
        # accepted here and then refused when the record is encoded.
        if not 0 <= seconds < 1e11:
            raise ValidationError(path, value, "must be a time between 1970-01-01 and 5138-11-16 (epoch seconds 0 to 1e11)")
        return seconds
    raise ValidationError(path, value, "must be ISO-8601 text or epoch seconds")


def _target(value: Any, path: str) -> Any:
    """A class label or a number: str, bool, int or finite float."""
    kind = type(value)
    if kind is str:
        if not value or len(value) > MAX_STRING:
            raise ValidationError(path, value, f"must be 1-{MAX_STRING} characters")
        return value
    if kind is bool:
        return value
    if kind is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise ValidationError(path, value, "must be an integer within 64 bits")
        return value
    if kind is float:
        if value != value or value in (math.inf, -math.inf):
            raise ValidationError(path, value, "must be finite")
        return value
    raise ValidationError(path, value, "must be a class label (string, integer, bool) or a number")


def _features(value: Any, path: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise ValidationError(path, value, "must be an object of name -> number, string, bool or null")
    if not value:
        raise ValidationError(path, value, "must not be empty")
    if len(value) > MAX_FEATURES:
        raise ValidationError(path, len(value), f"has more than {MAX_FEATURES} features")
    for name, item in value.items():
        # The name first: it is part of the path in every message below.
        if type(name) is not str or len(name) > MAX_ID or not name:
            raise ValidationError(path, name, f"feature names must be 1-{MAX_ID} characters")
        kind = type(item)
        if kind is float:
            if item != item or item in (math.inf, -math.inf):
                raise ValidationError(f"{path}.{name}", item, "must be finite (use null for missing)")
        elif kind is int:
            if not _INT_MIN <= item <= _INT_MAX:
                raise ValidationError(f"{path}.{name}", item, "must be an integer within 64 bits")
        elif kind is bool or item is None:
            pass
        elif kind is str:
            if len(item) > MAX_STRING:
                raise ValidationError(f"{path}.{name}", item, f"is longer than {MAX_STRING} characters")
        else:
            raise ValidationError(f"{path}.{name}", item, "must be a number, string, bool or null")
    return value


def _probabilities(value: Any, path: str) -> dict[str, float] | None:
    if value is None:
        return None
    if type(value) is not dict or not value:
        raise ValidationError(path, value, "must be a non-empty object of class -> probability")
    if len(value) > MAX_FEATURES:
        raise ValidationError(path, len(value), f"has more than {MAX_FEATURES} classes")
    for name, item in value.items():
        if type(name) is not str:
            raise ValidationError(path, name, "class names must be strings")
        if not _is_number(item) or not 0.0 <= item <= 1.0:
            raise ValidationError(f"{path}.{name}", item, "must be a probability between 0 and 1")
    return value


def _number_map(value: Any, path: str) -> dict[str, float | None]:
    if value is None:
        return {}
    if type(value) is not dict:
        raise ValidationError(path, value, "must be an object of name -> number or null")
    converted = None
    for name, item in value.items():
        if type(name) is not str:
            raise ValidationError(path, name, "names must be strings")
        if item is None or _is_number(item):
            continue
        # NumPy scalars (metrics computed with NumPy) count as numbers.
        if isinstance(item, numbers.Real) and not isinstance(item, bool) and math.isfinite(item):
            converted = converted or dict(value)
            converted[name] = int(item) if isinstance(item, numbers.Integral) else float(item)
            continue
        raise ValidationError(f"{path}.{name}", item, "must be a finite number or null")
    return value if converted is None else converted


def _json_object(value: Any, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if type(value) is not dict:
        raise ValidationError(path, value, "must be an object")
    problem = _unencodable(value, path, MAX_OBJECT_DEPTH, from_json=False)
    if problem is not None:
        raise ValidationError(*problem)
    return value


def _unencodable(value: Any, path: str, max_depth: int, from_json: bool) -> tuple[str, Any, str] | None:
    """The first part of ``value`` orjson cannot write, as (path, value,
    reason), or ``None``. Iterative, so depth costs no stack.

    ``from_json``: ``value`` came from Python's ``json`` (which reads what
    orjson refuses), so infinite numbers count too; in a Python-built
    record they are written as ``null``.
    """
    stack: list[tuple[Any, str, int]] = [(value, path, 1)]
    while stack:
        item, where, depth = stack.pop()
        kind = type(item)
        if kind not in _JSON_TYPES:
            # orjson writes subclasses of str, int, dict and list as their
            # base type, and NumPy scalars by value (_plain); nothing else.
            if type(item).__module__ == "numpy" and getattr(item, "shape", None) == ():
                continue
            kind = next((base for base in (str, int, dict, list) if isinstance(item, base)), None)
            if kind is None:
                return where, item, f"is a {type(item).__name__}, which JSON cannot hold"
        if kind is str:
            if not item.isascii() and _safe_text(item) is not item:
                return where, item, "contains a lone surrogate (not encodable as UTF-8)"
        elif kind is float:
            if from_json and item in (math.inf, -math.inf):
                return where, item, "is a number beyond the float range"
        elif kind is int:
            if not _INT_MIN <= item <= _INT_MAX:
                return where, item, "is an integer beyond 64 bits"
        elif item is None or kind is bool:
            pass
        elif kind is dict or kind is list or kind is tuple:
            if depth > max_depth:
                return where, item, f"is nested more than {max_depth} levels deep"
            # Children pushed last-first, so the first problem in document
            # order is the one reported.
            if kind is dict:
                children = []
                for key, child in item.items():
                    if type(key) is not str:
                        return where, key, "has a key that is not a string"
                    if not key.isascii() and _safe_text(key) is not key:
                        return where, key, "has a key with a lone surrogate (not encodable as UTF-8)"
                    children.append((child, f"{where}.{key}" if where else key, depth + 1))
                stack.extend(reversed(children))
            else:
                stack.extend(reversed([(child, f"{where}[{i}]", depth + 1) for i, child in enumerate(item)]))
    return None


_JSON_TYPES = frozenset({str, float, int, bool, type(None), dict, list, tuple})


def _string_list(value: Any, path: str) -> list[str]:
    if value is None:
        return []
    if type(value) is not list or len(value) > MAX_BATCH_EVENTS:
        raise ValidationError(path, value, "must be a list of strings")
    for i, item in enumerate(value):
        _string(item, f"{path}[{i}]")
    return value


def _base64_text(value: Any, path: str) -> str:
    # May be empty: an empty message is dead-lettered too.
    if type(value) is not str or len(value) > (MAX_DEAD_LETTER_BYTES + 2) // 3 * 4:
        raise ValidationError(path, value, f"must be base64 text of at most {MAX_DEAD_LETTER_BYTES} bytes")
    try:  # so that original_bytes() works on every accepted dead letter
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII text
        raise ValidationError(path, value, "is not valid base64") from None
    return value


def _name(value: Any, path: str) -> str:
    return validate_name(value, path)


def _optional_name(value: Any, path: str) -> str | None:
    return None if value is None else validate_name(value, path)


def _kind(value: Any, path: str) -> str:
    if type(value) is not str or not _KIND.match(value):
        raise ValidationError(path, value, "must be a lower-case identifier such as 'data_drift'")
    return value


def _one_of(*choices: str):
    def check(value: Any, path: str) -> str:
        if value not in choices:
            raise ValidationError(path, value, f"must be one of {', '.join(choices)}")
        return value

    return check
