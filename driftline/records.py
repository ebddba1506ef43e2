"""The record types: every event that travels over a Driftline topic.

One dataclass per event kind, each with its topic and a table of field
checks (:mod:`driftline.fields`) that drives :meth:`_Record.from_dict`.
:mod:`driftline.events` decodes messages into these records and encodes
them again.

Examples
--------
>>> from driftline.records import Label
>>> Label.from_dict({"event_id": "e-1", "model": "churn", "label": "yes", "timestamp": 0})
Label(event_id='e-1', model='churn', label='yes', timestamp=0.0)
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeVar, Union

from .fields import (
    _MISSING,
    _NAME,
    MAX_DEAD_LETTER_BYTES,
    MAX_ID,
    MAX_STRING,
    MISSING_VALUE,
    ValidationError,
    _base64_text,
    _features,
    _int,
    _json_object,
    _kind,
    _name,
    _number,
    _number_map,
    _one_of,
    _optional_int,
    _optional_name,
    _optional_number,
    _optional_string,
    _probabilities,
    _safe_text,
    _string,
    _string_list,
    _target,
    _timestamp,
    new_id,
    now,
    validate_name,
)

__all__ = [
    "Prediction",
    "Label",
    "LabeledRecord",
    "Alert",
    "RetrainRequest",
    "ModelEvent",
    "MetricsSnapshot",
    "DeadLetter",
    "Record",
    "RETRAIN_REASONS",
    "MODEL_EVENTS",
]


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

    def to_dict(self) -> dict[str, Any]:
        # Written out: the monitor calls it per event (a quarter of the generic one's time).
        return {"event_id": self.event_id, "model": self.model, "model_version": self.model_version,
                "timestamp": self.timestamp, "features": self.features, "prediction": self.prediction,
                "probabilities": self.probabilities, "latency_ms": self.latency_ms}

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

    def to_dict(self) -> dict[str, Any]:
        # Written out, as Prediction's: per event in the monitor.
        return {"event_id": self.event_id, "model": self.model, "label": self.label, "timestamp": self.timestamp}


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
