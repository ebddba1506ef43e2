"""The event contract as msgspec Structs: one-pass decoding and JSON Schema.

:mod:`driftline.events` is the contract (its dataclasses, checks and error
messages). This module states the same shapes as msgspec types, for two uses:

* the fast path of :func:`driftline.events.decode_batch` for the record
  types that travel in volume (``Prediction``, ``Label``,
  ``LabeledRecord``): msgspec parses and checks a whole message in C in one
  pass. It never accepts what the contract refuses: a message it refuses or
  cannot decide (a bad event, an unknown field, an integer past 2**63,
  ``2.0`` as a version) goes through the contract's own validator, which
  accepts it or names the field, value and reason;
* :func:`json_schema`: the contract as a JSON Schema (``driftline schema``),
  so producers in other languages can check what they send.

Unknown fields are allowed by the contract (ignored); the Structs forbid
them so that every byte of a message accepted here was parsed and checked
by msgspec (its skipping of unknown values is lenient: ``1e400`` or bad
UTF-8 inside one would pass); such messages take the contract's path.

Examples
--------
>>> schema = json_schema()
>>> schema["$defs"]["Prediction"]["required"][:3]
['event_id', 'model', 'model_version']
"""

from __future__ import annotations

from typing import Any, Annotated, Optional, Union

import msgspec
from msgspec import Meta

__all__ = ["json_schema", "STRUCTS", "SCHEMA_ID", "NAME_PATTERN", "message_decoder"]

SCHEMA_ID = "https://driftline.dev/schema/driftline-events.schema.json"

# The contract's limits (driftline.events has the same numbers; kept here so
# that this module needs nothing from it).
MAX_BATCH_EVENTS = 10_000
MAX_FEATURES = 1_000
MAX_STRING = 1_024
MAX_ID = 256
MAX_DEAD_LETTER_BYTES = 512 * 1024

#: A model, feature-set or alias name (the contract's ``validate_name``) in a
#: form that Python's ``re`` and ECMA-262 (JSON Schema) read alike:
#: ``(?![\s\S])`` is the end of the text in both (``$`` also matches before
#: a trailing newline in Python).
NAME_PATTERN = r"^(?![\s\S]*\.\.)[A-Za-z0-9][A-Za-z0-9_.-]{0,127}(?![\s\S])"
KIND_PATTERN = r"^[a-z][a-z0-9_]{0,63}(?![\s\S])"

# Checks that are cheaper in the fast path's Python step than in msgspec
# (a regex per event; a length check per feature key defeats msgspec's key
# cache) carry only their JSON Schema here; events.py checks them.
Name = Annotated[str, Meta(extra_json_schema={"pattern": NAME_PATTERN, "minLength": 1, "maxLength": 128},
                           description="1-128 of letters, digits, '_', '.', '-'; starts with a letter or digit; "
                                       "no '..'")]
Id = Annotated[str, Meta(min_length=1, max_length=MAX_ID)]
Text = Annotated[str, Meta(min_length=1, max_length=MAX_STRING)]
# JSON Schema: the contract takes integers of 64 bits signed or unsigned;
# msgspec's bounds stop at 2**63 - 1 (larger ones take the contract's path).
Int64 = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
Count = Annotated[int, Meta(ge=0, le=2**53)]
Timestamp = Union[
    Annotated[float, Meta(ge=0, lt=1e11)],
    Annotated[str, Meta(min_length=1, max_length=64, description="ISO-8601 time; naive means UTC")],
]
Timestamp = Annotated[Timestamp, Meta(description="epoch seconds from 0 to 1e11, or ISO-8601 text in that range")]
FeatureValue = Union[None, bool, Int64, float, Annotated[str, Meta(max_length=MAX_STRING)]]
Features = Annotated[
    dict[str, FeatureValue],
    Meta(min_length=1, max_length=MAX_FEATURES,
         extra_json_schema={"propertyNames": {"minLength": 1, "maxLength": MAX_ID}},
         description="feature name -> number, string, bool or null (null for missing)"),
]
Target = Annotated[Union[bool, Int64, float, Text],
                   Meta(description="a class label (string, integer, bool) or a number")]
Probability = Union[Annotated[int, Meta(ge=0, le=1)], Annotated[float, Meta(ge=0, le=1)]]
Probabilities = Annotated[dict[str, Probability], Meta(min_length=1, max_length=MAX_FEATURES,
                                                       description="class -> probability")]
NumberMap = dict[str, Union[None, Int64, float]]
JsonObject = Annotated[dict[str, Any], Meta(description="free-form JSON object, nested at most 32 levels")]


class _Struct(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    # gc=False: a decoded Struct lives only until it is copied into the
    # contract's dataclass, and holds no cycles; untracked, it costs the
    # garbage collector nothing.
    pass


class Prediction(_Struct):
    """What a model predicted for one input (topic ``predictions``)."""

    event_id: Id
    model: Name
    model_version: Count
    timestamp: Timestamp
    features: Features
    prediction: Target
    probabilities: Optional[Probabilities] = None
    latency_ms: Optional[Annotated[float, Meta(ge=0)]] = None


class Label(_Struct):
    """Ground truth for an earlier prediction (topic ``labels``)."""

    event_id: Id
    model: Name
    label: Target
    timestamp: Timestamp


class LabeledRecord(_Struct):
    """A prediction joined with its label (topic ``labeled``): training data."""

    event_id: Id
    model: Name
    model_version: Count
    features: Features
    prediction: Target
    label: Target
    prediction_timestamp: Timestamp
    label_timestamp: Timestamp
    probabilities: Optional[Probabilities] = None
    latency_ms: Optional[float] = None


class Alert(_Struct):
    """Something is wrong with a model (topic ``alerts``)."""

    alert_id: Id
    model: Name
    model_version: Count
    kind: Annotated[str, Meta(pattern=KIND_PATTERN)]
    subject: Id
    detector: Id
    value: float
    timestamp: Timestamp
    message: Annotated[str, Meta(min_length=1, max_length=MAX_STRING * 4)]
    threshold: Optional[float] = None


class RetrainRequest(_Struct):
    """Why a model should be retrained (topic ``retrain-requests``)."""

    request_id: Id
    model: Name
    reason: Annotated[str, Meta(extra_json_schema={"enum": ["drift", "metric", "schedule", "manual"]})]
    timestamp: Timestamp
    alert_ids: Optional[Annotated[list[Id], Meta(max_length=MAX_BATCH_EVENTS)]] = None
    model_version: Optional[Count] = None
    message: Optional[Text] = None


class ModelEvent(_Struct):
    """Something happened to a model in the registry (topic ``model-events``)."""

    event: Annotated[str, Meta(extra_json_schema={"enum": ["registered", "promoted", "rejected", "rolled_back",
                                                            "failed", "policy_changed", "alias_set", "deleted"]})]
    model: Name
    timestamp: Timestamp
    version: Optional[Count] = None
    alias: Optional[Name] = None
    metrics: Optional[NumberMap] = None
    request_id: Optional[Text] = None
    reason: Optional[Text] = None
    details: Optional[JsonObject] = None


class MetricsSnapshot(_Struct):
    """Periodic metrics of one model version (topic ``metrics``)."""

    model: Name
    model_version: Count
    timestamp: Timestamp
    cumulative: Optional[NumberMap] = None
    rolling: Optional[NumberMap] = None
    stats: Optional[JsonObject] = None


class DeadLetter(_Struct):
    """An input that could not be used (topic ``dead-letter``)."""

    error_id: Id
    source_topic: Id
    reason: Annotated[str, Meta(min_length=1, max_length=MAX_STRING * 4)]
    original: Annotated[str, Meta(max_length=(MAX_DEAD_LETTER_BYTES + 2) // 3 * 4,
                                  extra_json_schema={"contentEncoding": "base64"})]
    timestamp: Timestamp
    component: Id
    field: Optional[Text] = None
    partition: Optional[Count] = None
    offset: Optional[Count] = None
    index: Optional[Count] = None
    original_size: Optional[Count] = None


#: record name -> its Struct, in the contract's order.
STRUCTS: dict[str, type] = {cls.__name__: cls for cls in
                            (Prediction, Label, LabeledRecord, Alert, RetrainRequest, ModelEvent, MetricsSnapshot,
                             DeadLetter)}


def message_decoder(name: str) -> msgspec.json.Decoder:
    """A decoder for one message of record type ``name``: one event (an
    object) or a bulk message (an array of them)."""
    struct = STRUCTS[name]
    return msgspec.json.Decoder(Union[list[struct], struct])


def _loosen(node: Any) -> Any:
    """The schema as the contract reads it: unknown fields allowed (and
    ignored), integers up to 2**64 - 1 (msgspec's bound stops at 2**63 - 1)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "additionalProperties" and value is False:
                continue
            if key == "maximum" and value == 2**63 - 1:
                value = 2**64 - 1
            out[key] = _loosen(value)
        return out
    if isinstance(node, list):
        return [_loosen(item) for item in node]
    return node


def json_schema() -> dict[str, Any]:
    """The contract as one JSON Schema (draft 2020-12) document.

    ``$defs`` holds each record type (``Prediction``, ``Label``, ...) and,
    for each, the message a topic carries: ``<Record>Message`` is one event
    or an array of 1 to 10,000 of them. A producer validates what it sends
    against ``#/$defs/PredictionMessage`` (and so on). What the schema cannot
    say and the contract still checks: ISO-8601 text must parse and fall in
    the timestamp range, no lone surrogates, ``original`` must be valid
    base64, free-form objects nest at most 32 levels, and the message is at
    most 1 MiB.
    """
    structs = list(STRUCTS.values())
    _, components = msgspec.json.schema_components(structs, ref_template="#/$defs/{name}")
    defs: dict[str, Any] = {}
    for name in STRUCTS:
        defs[name] = components[name]
        ref = {"$ref": f"#/$defs/{name}"}
        defs[f"{name}Message"] = {
            "description": f"one {name} event, or a bulk message of 1 to {MAX_BATCH_EVENTS:,} of them",
            "anyOf": [ref, {"type": "array", "items": ref, "minItems": 1, "maxItems": MAX_BATCH_EVENTS}],
        }
    return _loosen({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "Driftline event contract",
        "description": "Every record that travels over a Driftline topic. Validate a message against "
                       "#/$defs/<Record>Message, e.g. #/$defs/PredictionMessage for the predictions topic.",
        "$defs": defs,
    })
