"""The event contract: every record that travels over a Driftline topic.

The contract lives in three modules: :mod:`driftline.fields` (the field
checks and :class:`ValidationError`), :mod:`driftline.records` (the record
types) and this one, which decodes and encodes messages and is where all of
it is imported from (it re-exports the other two's public names). Producers
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
driftline.fields.ValidationError: model: missing required field (got <missing>)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

import msgspec
import orjson

from . import eventschema as _schema
from .fields import (
    _NAME,
    MAX_BATCH_EVENTS,
    MAX_DEAD_LETTER_BYTES,
    MAX_FEATURES,
    MAX_ID,
    MAX_MESSAGE_BYTES,
    MAX_OBJECT_DEPTH,
    MAX_PARSE_DEPTH,
    MAX_STRING,
    MISSING_VALUE,
    ValidationError,
    _timestamp,
    _unencodable,
    new_id,
    now,
    safe_repr,
    validate_name,
)
from .records import (
    MODEL_EVENTS,
    RETRAIN_REASONS,
    Alert,
    DeadLetter,
    Label,
    LabeledRecord,
    MetricsSnapshot,
    ModelEvent,
    Prediction,
    R,
    Record,
    RetrainRequest,
    _Record,
)

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
    # Re-exported from driftline.fields and driftline.records, where they
    # live: this module is where the contract is imported from.
    "safe_repr",
    "MISSING_VALUE",
    "MAX_DEAD_LETTER_BYTES",
    "MAX_FEATURES",
    "MAX_STRING",
    "MAX_ID",
    "Record",
    "RETRAIN_REASONS",
    "MODEL_EVENTS",
]


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

