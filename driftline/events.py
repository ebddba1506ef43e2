"""The event contract: every record that travels over a Driftline topic.

This module is the only place that knows the shape of an event. Producers
build records and call :func:`encode`; consumers call :func:`decode_batch`
(lenient: good events and per-event errors, for daemons) or :func:`decode`
(strict: the first problem raises). A bad record raises
:class:`ValidationError`, which names the field, the value and the reason —
never another exception type.

A message holds one event (a JSON object) or several (a JSON array, "bulk").

What the contract accepts it can encode again, unchanged: ``decode`` then
``encode`` then ``decode`` gives equal records. So it refuses, with a
:class:`ValidationError`, everything orjson (the encoder) cannot hold even
where Python's ``json`` could: strings with lone surrogates (``"\\ud800"``),
numbers beyond the float range, integers outside the 64-bit range in Python-built
records, and JSON nested deeper than :data:`MAX_PARSE_DEPTH` levels.
Free-form objects (``ModelEvent.details``, ``MetricsSnapshot.stats``) may
nest :data:`MAX_OBJECT_DEPTH` levels; their non-finite floats (only possible
in Python-built records) are written as ``null``. ISO-8601 and numeric
timestamps get the same range check (epoch seconds from 0 to 1e11). An
object with a repeated key keeps its last value, as Python's ``json`` and
most parsers do (RFC 8259 leaves it open; Driftline never writes one).
Error messages show a short, bounded form of the value (never a full or
recursive ``repr``; NumPy scalars by value).

Examples
--------
>>> from driftline.events import Prediction, decode, encode
>>> p = Prediction(event_id="e-1", model="churn", model_version=1, timestamp=0.0,
...                features={"age": 42, "plan": "pro"}, prediction="yes")
>>> decode(Prediction, encode(p)) == [p]
True
>>> decode(Prediction, b'{"event_id": "e-2"}')
Traceback (most recent call last):
...
driftline.events.ValidationError: model: missing required field (got <missing>)
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import math
import numbers
import re
import reprlib
import time
import uuid
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, ClassVar, Sequence, TypeVar, Union

import msgspec
import orjson

from . import eventschema as _schema
from .errors import DriftlineError

__all__ = [
    "ValidationError",
    "Prediction",
    "Label",
    "LabeledRecord",
    "Alert",
    "RetrainRequest",
    "ModelEvent",
    "MetricsSnapshot",
    "DeadLetter",
    "DecodedBatch",
    "decode",
    "decode_batch",
    "encode",
    "json_schema",
    "encode_many",
    "validate_name",
    "new_id",
    "now",
    "MAX_MESSAGE_BYTES",
    "MAX_BATCH_EVENTS",
    "MAX_PARSE_DEPTH",
    "MAX_OBJECT_DEPTH",
]

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


# -- records --------------------------------------------------------------------


class _Record:
    """Shared behaviour: a table of field checks drives decoding."""

    # name -> (check, required). Filled in by each subclass.
    _checks: ClassVar[dict[str, tuple[Any, bool]]]
    topic: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        names = type(self).__dict__.get("_names")
        if names is None:  # computed once per record class
            names = tuple(f.name for f in fields(self))  # type: ignore[arg-type]
            type.__setattr__(type(self), "_names", names)
        return {name: getattr(self, name) for name in names}

    @classmethod
    def from_dict(cls, obj: Any, index: int | None = None):
        if type(obj) is not dict:
            raise ValidationError("<event>", obj, "must be a JSON object", index)
        values = {}
        try:
            for name, (check, required) in cls._checks.items():
                raw = obj.get(name, _MISSING)
                if raw is _MISSING:
                    if required:
                        raise ValidationError(name, MISSING_VALUE, "missing required field")
                    raw = None
                values[name] = check(raw, name)
        except ValidationError as error:
            if index is not None and error.index is None:
                raise ValidationError(error.field, error.value, error.reason, index) from None
            raise
        return cls(**values)


@dataclass(slots=True)
class Prediction(_Record):
    """What a model predicted for one input (topic ``predictions``)."""

    event_id: str
    model: str
    model_version: int
    timestamp: float
    features: dict[str, Any]
    prediction: Any
    probabilities: dict[str, float] | None = None
    latency_ms: float | None = None

    topic: ClassVar[str] = "predictions"

    @classmethod
    def from_dict(cls, obj: Any, index: int | None = None) -> "Prediction":
        # Hand-unrolled: this is the hot path of the monitor.
        if type(obj) is not dict:
            raise ValidationError("<event>", obj, "must be a JSON object", index)
        try:
            get = obj.get
            event_id = get("event_id", _MISSING)
            if type(event_id) is not str or not 0 < len(event_id) <= MAX_ID:
                _require(event_id, "event_id")
                _string(event_id, "event_id")
            model = get("model", _MISSING)
            if type(model) is not str or not _NAME.match(model) or ".." in model:
                _require(model, "model")
                validate_name(model, "model")
            version = get("model_version", _MISSING)
            if type(version) is not int or not 0 <= version <= 2**53:
                _require(version, "model_version")
                version = _int(version, "model_version")
            timestamp = get("timestamp", _MISSING)
            if type(timestamp) is not float or not 0.0 <= timestamp < 1e11:
                _require(timestamp, "timestamp")
                timestamp = _timestamp(timestamp, "timestamp")
            features = get("features", _MISSING)
            _require(features, "features")
            _features(features, "features")
            prediction = get("prediction", _MISSING)
            _require(prediction, "prediction")
            _target(prediction, "prediction")
            probabilities = get("probabilities")
            if probabilities is not None:
                _probabilities(probabilities, "probabilities")
            latency = get("latency_ms")
            if latency is not None:
                latency = _number(latency, "latency_ms")
                if latency < 0:
                    raise ValidationError("latency_ms", latency, "must not be negative")
        except ValidationError as error:
            if index is not None:
                raise ValidationError(error.field, error.value, error.reason, index) from None
            raise
        return cls(event_id, model, version, timestamp, features, prediction, probabilities, latency)


def _require(value: Any, name: str) -> None:
    if value is _MISSING:
        raise ValidationError(name, MISSING_VALUE, "missing required field")


Prediction._checks = {}  # decoded by the hand-written from_dict above


@dataclass(slots=True)
class Label(_Record):
    """Ground truth for an earlier prediction (topic ``labels``)."""

    event_id: str
    model: str
    label: Any
    timestamp: float

    topic: ClassVar[str] = "labels"


Label._checks = {
    "event_id": (_string, True),
    "model": (_name, True),
    "label": (_target, True),
    "timestamp": (_timestamp, True),
}


@dataclass(slots=True)
class LabeledRecord(_Record):
    """A prediction joined with its label (topic ``labeled``): training data."""

    event_id: str
    model: str
    model_version: int
    features: dict[str, Any]
    prediction: Any
    label: Any
    prediction_timestamp: float
    label_timestamp: float
    probabilities: dict[str, float] | None = None
    latency_ms: float | None = None

    topic: ClassVar[str] = "labeled"


LabeledRecord._checks = {
    "event_id": (_string, True),
    "model": (_name, True),
    "model_version": (_int, True),
    "features": (_features, True),
    "prediction": (_target, True),
    "label": (_target, True),
    "prediction_timestamp": (_timestamp, True),
    "label_timestamp": (_timestamp, True),
    "probabilities": (_probabilities, False),
    "latency_ms": (_optional_number, False),
}


@dataclass(slots=True)
class Alert(_Record):
    """Something is wrong with a model (topic ``alerts``).

    ``kind`` is one of ``data_drift``, ``concept_drift``, ``prediction_drift``,
    ``metric``, ``latency``, ``outliers`` (or another lower-case identifier).
    """

    alert_id: str
    model: str
    model_version: int
    kind: str
    subject: str
    detector: str
    value: float
    threshold: float | None
    timestamp: float
    message: str

    topic: ClassVar[str] = "alerts"


Alert._checks = {
    "alert_id": (_string, True),
    "model": (_name, True),
    "model_version": (_int, True),
    "kind": (_kind, True),
    "subject": (_string, True),
    "detector": (_string, True),
    "value": (_number, True),
    "threshold": (_optional_number, False),
    "timestamp": (_timestamp, True),
    "message": (lambda v, p: _string(v, p, MAX_STRING * 4), True),
}

RETRAIN_REASONS = ("drift", "metric", "schedule", "manual")


@dataclass(slots=True)
class RetrainRequest(_Record):
    """Why a model should be retrained (topic ``retrain-requests``)."""

    request_id: str
    model: str
    reason: str
    timestamp: float
    alert_ids: list[str] = field(default_factory=list)
    model_version: int | None = None
    message: str | None = None

    topic: ClassVar[str] = "retrain_requests"


RetrainRequest._checks = {
    "request_id": (_string, True),
    "model": (_name, True),
    "reason": (_one_of(*RETRAIN_REASONS), True),
    "timestamp": (_timestamp, True),
    "alert_ids": (_string_list, False),
    "model_version": (_optional_int, False),
    "message": (_optional_string, False),
}

MODEL_EVENTS = ("registered", "promoted", "rejected", "rolled_back", "failed", "policy_changed", "alias_set",
                "deleted")


@dataclass(slots=True)
class ModelEvent(_Record):
    """Something happened to a model in the registry (topic ``model-events``).

    ``metrics`` holds scores (for a retrain: ``candidate_<metric>`` and
    ``champion_<metric>``); ``reason`` says why a run was rejected or failed.
    """

    event: str
    model: str
    timestamp: float
    version: int | None = None
    alias: str | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    request_id: str | None = None
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    topic: ClassVar[str] = "model_events"


ModelEvent._checks = {
    "event": (_one_of(*MODEL_EVENTS), True),
    "model": (_name, True),
    "timestamp": (_timestamp, True),
    "version": (_optional_int, False),
    "alias": (_optional_name, False),
    "metrics": (_number_map, False),
    "request_id": (_optional_string, False),
    "reason": (_optional_string, False),
    "details": (_json_object, False),
}


@dataclass(slots=True)
class MetricsSnapshot(_Record):
    """Periodic metrics of one model version (topic ``metrics``).

    ``cumulative`` covers every joined pair since the version appeared,
    ``rolling`` the last ``window`` pairs; ``stats`` holds counts, label
    coverage and delay, latency percentiles and throughput.
    """

    model: str
    model_version: int
    timestamp: float
    cumulative: dict[str, float | None] = field(default_factory=dict)
    rolling: dict[str, float | None] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    topic: ClassVar[str] = "metrics"


MetricsSnapshot._checks = {
    "model": (_name, True),
    "model_version": (_int, True),
    "timestamp": (_timestamp, True),
    "cumulative": (_number_map, False),
    "rolling": (_number_map, False),
    "stats": (_json_object, False),
}


@dataclass(slots=True)
class DeadLetter(_Record):
    """An input that could not be used (topic ``dead-letter``).

    ``original`` is the message's bytes, base64-encoded, so nothing is lost
    even when they are not text. A payload larger than
    ``MAX_DEAD_LETTER_BYTES`` (an oversize message) keeps its first
    ``MAX_DEAD_LETTER_BYTES`` only, so the dead letter itself still fits in a
    Kafka message; ``original_size`` tells how long it was.
    """

    error_id: str
    source_topic: str
    reason: str
    field: str | None
    original: str
    timestamp: float
    component: str
    partition: int | None = None
    offset: int | None = None
    index: int | None = None
    original_size: int | None = None

    topic: ClassVar[str] = "dead_letter"

    @classmethod
    def for_payload(
        cls,
        payload: bytes,
        error: Exception,
        *,
        source_topic: str,
        component: str,
        partition: int | None = None,
        offset: int | None = None,
    ) -> "DeadLetter":
        """Build the dead letter for ``payload`` refused with ``error``."""
        is_validation = isinstance(error, ValidationError)
        reason = _safe_text(str(error) if is_validation else f"{type(error).__name__}: {error}")
        return cls(
            error_id=new_id(),
            source_topic=source_topic,
            reason=reason[: MAX_STRING * 4],
            field=error.field[:MAX_STRING] if is_validation else None,
            original=base64.b64encode(payload[:MAX_DEAD_LETTER_BYTES]).decode("ascii"),
            timestamp=now(),
            component=component,
            partition=partition,
            offset=offset,
            index=error.index if is_validation else None,
            original_size=len(payload),
        )

    def original_bytes(self) -> bytes:
        return base64.b64decode(self.original)


DeadLetter._checks = {
    "error_id": (_string, True),
    "source_topic": (_string, True),
    "reason": (lambda v, p: _string(v, p, MAX_STRING * 4), True),
    "field": (_optional_string, False),
    "original": (_base64_text, True),
    "timestamp": (_timestamp, True),
    "component": (_string, True),
    "partition": (_optional_int, False),
    "offset": (_optional_int, False),
    "index": (_optional_int, False),
    "original_size": (_optional_int, False),
}

Record = Union[Prediction, Label, LabeledRecord, Alert, RetrainRequest, ModelEvent, MetricsSnapshot, DeadLetter]
R = TypeVar("R", bound=_Record)


# -- encoding and decoding ----------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValidationError("<payload>", name, "NaN and Infinity are not valid JSON numbers")


_decoder = json.JSONDecoder(parse_constant=_reject_constant)


def _parse(payload: bytes | str) -> tuple[Any, dict[int, ValidationError] | None]:
    """The parsed message, and for a bulk message that orjson refused but
    Python's ``json`` read, the events refused by index (the others are
    decoded as usual)."""
    if isinstance(payload, (bytes, bytearray, memoryview, str)):
        if len(payload) > MAX_MESSAGE_BYTES:
            unit = "characters" if isinstance(payload, str) else "bytes"
            raise ValidationError("<payload>", f"{len(payload)} {unit}", f"is larger than {MAX_MESSAGE_BYTES} bytes")
    else:
        raise ValidationError("<payload>", payload, "must be bytes or text")
    try:
        # orjson: several times faster than json, and it refuses NaN/Infinity
        # and bad UTF-8 itself. Its errors are terse, so a refused payload is
        # parsed again by the slow path below to name the reason.
        return orjson.loads(payload), None
    except orjson.JSONDecodeError as error:
        refusal = str(error)
    if isinstance(payload, str):
        text = payload
    else:
        try:
            text = bytes(payload).decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValidationError("<payload>", bytes(payload[:40]), f"is not UTF-8 text ({error.reason})") from None
    try:
        obj = _decoder.decode(text)
    except ValidationError:
        raise
    except ValueError as error:
        raise ValidationError("<payload>", text[:40], f"is not valid JSON ({error})") from None
    except RecursionError:  # too deep for Python's parser: orjson's reason stands
        raise ValidationError("<payload>", text[:40], f"is not valid JSON ({refusal})") from None
    # Valid for json but refused by orjson (lone surrogates, numbers beyond
    # the float range, deep nesting): refused too, since it could not be
    # encoded again. Name the part that orjson refused; in a bulk message
    # only the events that hold one.
    if type(obj) is list and obj:
        refused = {}
        for i, item in enumerate(obj):
            problem = _unencodable(item, "", MAX_PARSE_DEPTH - 1, from_json=True)
            if problem is not None:
                where, value, reason = problem
                refused[i] = ValidationError(where or "<event>", value, reason, i)
        if refused:
            return obj, refused
    else:
        problem = _unencodable(obj, "", MAX_PARSE_DEPTH, from_json=True)
        if problem is not None:
            where, value, reason = problem
            raise ValidationError(where or "<payload>", value, reason)
    raise ValidationError("<payload>", text[:40], f"is not valid JSON ({refusal})")


@dataclass
class DecodedBatch:
    """What one message held: the valid records and an error per bad one."""

    records: list
    errors: list[ValidationError]


def decode_batch(record_type: type[R], payload: bytes | str) -> DecodedBatch:
    """Decode one message leniently.

    A single event or a JSON array of events. Bad events in a bulk array are
    reported by index and do not affect the good ones; a message that is not
    JSON at all, oversize, or an empty array yields one error and no records.
    """
    fast = _FAST.get(record_type)
    if fast is not None and (type(payload) is bytes or type(payload) is str) and len(payload) <= MAX_MESSAGE_BYTES:
        records = fast(payload)
        if records is not None:
            return DecodedBatch(records, [])
    # The contract's own validator: every message the fast path refused or
    # could not decide, so errors name field, value and reason exactly.
    try:
        obj, refused = _parse(payload)
    except ValidationError as error:
        return DecodedBatch([], [error])
    if type(obj) is list:
        if not obj:
            return DecodedBatch([], [ValidationError("<payload>", obj, "is an empty array: expected at least one event")])
        if len(obj) > MAX_BATCH_EVENTS:
            return DecodedBatch(
                [], [ValidationError("<payload>", f"{len(obj)} events", f"has more than {MAX_BATCH_EVENTS} events")]
            )
        records, errors = [], []
        from_dict = record_type.from_dict
        for i, item in enumerate(obj):
            if refused is not None and i in refused:
                errors.append(refused[i])
                continue
            try:
                records.append(from_dict(item, i))
            except ValidationError as error:
                errors.append(error)
        return DecodedBatch(records, errors)
    try:
        return DecodedBatch([record_type.from_dict(obj)], [])
    except ValidationError as error:
        return DecodedBatch([], [error])


# -- the fast path: msgspec ----------------------------------------------------------
# msgspec decodes and checks a whole message into Structs (eventschema) in one
# pass; the few checks left to Python here are the ones cheaper per event in
# Python. A fast decoder returns the records, or None when it cannot decide:
# then the message goes through the validator above, which accepts it or
# names the problem. It never accepts what the validator would refuse
# (tests/test_contract_fast.py checks that on generated messages).

_MSGSPEC_REFUSED = (msgspec.DecodeError, UnicodeEncodeError)  # (a str payload holding a lone surrogate)
# Model names already checked: one dict look-up instead of a regex per event.
_good_names: dict[str, None] = {}


def _known_name(name: str) -> bool:
    if name in _good_names:
        return True
    if not _NAME.match(name) or ".." in name:
        return False
    if len(_good_names) < 10_000:  # bounded: names come from the input
        _good_names[name] = None
    return True


def _fast_decoder(name: str, convert):
    decode_message = _schema.message_decoder(name).decode

    def fast(payload: bytes | str) -> list | None:
        try:
            decoded = decode_message(payload)
        except _MSGSPEC_REFUSED:
            return None
        if type(decoded) is not list:
            record = convert(decoded)
            return None if record is None else [record]
        if not 0 < len(decoded) <= MAX_BATCH_EVENTS:
            return None
        records = []
        append = records.append
        for item in decoded:
            record = convert(item)
            if record is None:
                return None
            append(record)
        return records

    return fast


def _fast_timestamp(value: Any) -> float | None:
    """A timestamp as seconds: numbers as they are (msgspec has checked
    them), ISO-8601 text parsed; None where the slow path must decide."""
    if type(value) is not str:
        return value
    try:
        return _timestamp(value, "timestamp")
    except ValidationError:
        return None


def _prediction_from_struct(s: Any) -> Prediction | None:
    features = s.features
    if not _known_name(s.model) or "" in features or max(map(len, features)) > MAX_ID:
        return None
    timestamp = _fast_timestamp(s.timestamp)
    if timestamp is None:
        return None
    return Prediction(s.event_id, s.model, s.model_version, timestamp, features, s.prediction, s.probabilities,
                      s.latency_ms)


def _label_from_struct(s: Any) -> Label | None:
    if not _known_name(s.model):
        return None
    timestamp = _fast_timestamp(s.timestamp)
    if timestamp is None:
        return None
    return Label(s.event_id, s.model, s.label, timestamp)


def _labeled_from_struct(s: Any) -> LabeledRecord | None:
    features = s.features
    if not _known_name(s.model) or "" in features or max(map(len, features)) > MAX_ID:
        return None
    predicted_at, labelled_at = _fast_timestamp(s.prediction_timestamp), _fast_timestamp(s.label_timestamp)
    if predicted_at is None or labelled_at is None:
        return None
    return LabeledRecord(s.event_id, s.model, s.model_version, features, s.prediction, s.label, predicted_at,
                         labelled_at, s.probabilities, s.latency_ms)


# The record types that travel in volume (the monitor's input, the worker's).
_FAST = {
    Prediction: _fast_decoder("Prediction", _prediction_from_struct),
    Label: _fast_decoder("Label", _label_from_struct),
    LabeledRecord: _fast_decoder("LabeledRecord", _labeled_from_struct),
}


def json_schema() -> dict[str, Any]:
    """The contract as a JSON Schema document (see :func:`driftline.eventschema.json_schema`)."""
    return _schema.json_schema()


def decode(record_type: type[R], payload: bytes | str) -> list[R]:
    """Decode one message strictly: all its records, or the first error raised."""
    batch = decode_batch(record_type, payload)
    if batch.errors:
        raise batch.errors[0]
    return batch.records


def encode(record: _Record, *, validate: bool = True) -> bytes:
    """One record as a compact JSON message.

    The record is checked like a decoded one first, so nothing invalid is
    ever written (``validate=False`` for records that came out of decoding
    or :meth:`from_dict` unchanged).
    """
    data = (type(record).from_dict(record.to_dict()) if validate else record).to_dict()
    return _dumps(data, type(record).__name__)


def encode_many(records: Sequence[_Record], *, validate: bool = True) -> bytes:
    """Several records as one bulk message (a JSON array); see :func:`encode`."""
    if not records:
        raise ValidationError("<records>", [], "a bulk message needs at least one record")
    if validate:
        records = [type(r).from_dict(r.to_dict(), i) for i, r in enumerate(records)]
    return _dumps([r.to_dict() for r in records], "<records>")


def _plain(value: Any) -> Any:
    """orjson's fallback: NumPy scalars (metrics computed with NumPy) become
    Python numbers; anything else (arrays too) is refused."""
    item = getattr(value, "item", None)
    if item is not None and type(value).__module__ == "numpy" and getattr(value, "shape", None) == ():
        return item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _dumps(data: Any, what: str) -> bytes:
    try:
        return orjson.dumps(data, default=_plain)
    except TypeError as error:  # a value JSON cannot hold, in a free-form object
        raise ValidationError(what, type(data).__name__, f"cannot be encoded: {error}") from None


def validate(record: R) -> R:
    """Run a record built in Python through the same checks as decoding."""
    return type(record).from_dict(record.to_dict())

