"""Publishing SDK for applications: send predictions and labels to Driftline.

Every message is keyed by the prediction's ``event_id``, so a prediction and
its label always land on the same partition (Kafka's default murmur2
partitioner). A bulk call groups events by that same partition and sends one
JSON-array message per partition, so the rule holds for batches too.

Delivery: ``publish_*`` calls are asynchronous and return Kafka futures.
:meth:`Publisher.flush` blocks until everything sent so far is acknowledged
by the broker (``acks="all"``) and raises the first delivery error;
:meth:`Publisher.close` flushes, then closes. Use the publisher as a context
manager to get both. Nothing is acknowledged until ``flush`` returns.

Examples
--------
>>> from driftline.sdk import Publisher                                 # doctest: +SKIP
>>> with Publisher.from_env() as publisher:                             # doctest: +SKIP
...     publisher.publish_prediction(event_id="e-1", model="churn", model_version=1,
...                                  features={"age": 42}, prediction="yes")
...     publisher.publish_label(event_id="e-1", model="churn", label="no")

What scikit-learn, NumPy and pandas return is accepted as it is: NumPy
scalars and 0-d arrays become Python numbers, strings and bools; a pandas row
(``Series``) or any mapping works as ``features``; class labels used as
``probabilities`` keys become the text the contract uses for labels
(:func:`class_key`). Values are converted, never invented: NaN and infinity
are still refused with the contract's message.

>>> import numpy as np
>>> normalise_fields({"prediction": np.int64(1), "probabilities": {np.int64(0): np.float64(0.25), 1: 0.75},
...                   "model_version": np.int32(2), "features": {"age": np.float32(4.5), "vip": np.bool_(True)}})
{'prediction': 1, 'probabilities': {'0': 0.25, '1': 0.75}, 'model_version': 2, 'features': {'age': 4.5, 'vip': True}}
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

import orjson
from kafka.partitioner.default import murmur2

from . import events
from .config import Settings, load_settings
from .events import Label, Prediction

__all__ = ["Publisher", "partition_for", "partitions_for", "class_key", "plain", "normalise_fields"]

# Bulk messages stay well below Kafka's 1 MiB default message size.
_BULK_BYTES = 512 * 1024


def partition_for(event_id: str, partitions: int) -> int:
    """Partition Kafka's default partitioner picks for key ``event_id``."""
    return (murmur2(event_id.encode("utf-8")) & 0x7FFFFFFF) % partitions


def partitions_for(event_ids: Sequence[str], partitions: int) -> list[int]:
    """:func:`partition_for` of many ids at once: kafka-python's murmur2 is
    pure Python (several microseconds an id), so ids of equal length are
    hashed together with NumPy.

    >>> ids = [f"event-{i}" for i in range(40)] + ["x", "yz", "abc", ""]
    >>> partitions_for(ids, 7) == [partition_for(i, 7) for i in ids]
    True
    """
    if len(event_ids) < 16:
        return [partition_for(e, partitions) for e in event_ids]
    import numpy as np

    keys = [e.encode("utf-8") for e in event_ids]
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        by_length[len(key)].append(i)
    out = [0] * len(keys)
    m = np.uint32(0x5BD1E995)
    for length, rows in by_length.items():
        data = np.frombuffer(b"".join(keys[i] for i in rows), dtype=np.uint8).reshape(len(rows), length)
        h = np.full(len(rows), (0x9747B28C ^ length) & 0xFFFFFFFF, dtype=np.uint32)
        whole = length // 4
        if whole:
            k = np.ascontiguousarray(data[:, : whole * 4]).view("<u4") * m  # uint32 arithmetic wraps, as in Java
            k ^= k >> np.uint32(24)
            k *= m
            for i in range(whole):
                h *= m
                h ^= k[:, i]
        tail = length & ~3
        extra = length % 4
        if extra >= 3:
            h ^= data[:, tail + 2].astype(np.uint32) << np.uint32(16)
        if extra >= 2:
            h ^= data[:, tail + 1].astype(np.uint32) << np.uint32(8)
        if extra >= 1:
            h ^= data[:, tail].astype(np.uint32)
            h *= m
        h ^= h >> np.uint32(13)
        h *= m
        h ^= h >> np.uint32(15)
        for i, value in zip(rows, ((h & np.uint32(0x7FFFFFFF)) % np.uint32(partitions)).tolist()):
            out[i] = value
    return out


# -- NumPy / pandas values -> the contract's plain JSON values ---------------------------

_PLAIN = (str, int, float, bool, type(None))


def plain(value: Any) -> Any:
    """One value as a plain Python scalar where it is a NumPy/pandas one.

    NumPy scalars (``np.int64``, ``np.float32``, ``np.bool_``, ``np.str_``)
    and 0-d arrays become ``int``/``float``/``bool``/``str``; pandas' missing
    markers (``pd.NA``, ``pd.NaT``) become ``None``. Anything else is returned
    unchanged, so the contract still names it when it is not allowed.

    >>> import numpy as np
    >>> [plain(v) for v in (np.int64(3), np.float64(0.5), np.bool_(False), np.str_("yes"), np.array(2.0))]
    [3, 0.5, False, 'yes', 2.0]
    """
    kind = type(value)
    if kind in _PLAIN:
        return value
    module = kind.__module__
    if module == "numpy":
        if getattr(value, "ndim", None) == 0:  # NumPy scalars and 0-d arrays
            return value.item()
        return value
    if module.startswith("pandas"):
        if kind.__name__ in ("NAType", "NaTType"):
            return None
        return value
    if isinstance(value, str):  # str subclasses
        return str(value)
    return value


def class_key(value: Any) -> str:
    """The text of a class label as a ``probabilities`` key: strings as they
    are, booleans ``"true"``/``"false"``, integral numbers as decimal text
    (the monitor compares labels with this same function).

    >>> import numpy as np
    >>> [class_key(v) for v in (np.int64(1), 1.0, np.bool_(True), "yes", 0.5)]
    ['1', '1', 'true', 'yes', '0.5']
    """
    if type(value) not in _PLAIN_LABELS:  # NumPy scalars, subclasses; the monitor calls this per event
        value = plain(value)
    kind = type(value)
    if kind is str:
        return value
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float and math.isfinite(value):
        return str(int(value)) if value.is_integer() else repr(value)
    return value  # not a label: the contract refuses it by name


_PLAIN_LABELS = frozenset((str, bool, int, float))


def _plain_features(value: Any) -> Any:
    if type(value) is dict:
        for name, item in value.items():
            if type(item) not in _PLAIN or type(name) is not str:
                break
        else:
            return value  # already plain: the usual case, no copy
    elif isinstance(value, Mapping) or type(value).__name__ == "Series":
        value = dict(value.items())  # a pandas row, or any mapping
    else:
        return value  # the contract names what is wrong with it
    out = {}
    for name, item in value.items():
        name = plain(name)
        if type(name) is not str:  # e.g. the 0..n-1 columns of a frame built from an array
            raise events.ValidationError("features", name, "feature names must be strings")
        out[name] = plain(item)
    return out


def _plain_probabilities(value: Any) -> Any:
    if not (isinstance(value, Mapping) or type(value).__name__ == "Series"):
        return value  # the contract names what is wrong with it
    out = {}
    for name, item in value.items():
        key = class_key(name)
        if type(key) is not str:
            raise events.ValidationError("probabilities", name, "class names must be class labels "
                                                                "(string, integer, bool)")
        out[key] = plain(item)
    return out


def _plain_timestamp(value: Any) -> Any:
    value = plain(value)
    if isinstance(value, datetime):  # also pandas' Timestamp; naive means UTC, as in the contract
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    return value


_NORMALISE = {
    "features": _plain_features,
    "probabilities": _plain_probabilities,
    "timestamp": _plain_timestamp,
    "prediction_timestamp": _plain_timestamp,
    "label_timestamp": _plain_timestamp,
}


def normalise_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with NumPy/pandas values made plain (see :func:`plain`),
    ``features`` as a plain dict and ``probabilities`` keyed by
    :func:`class_key`. Modifies and returns ``fields``."""
    for name, value in fields.items():
        convert = _NORMALISE.get(name)
        if convert is not None:
            fields[name] = convert(value)
        elif type(value) not in _PLAIN:
            fields[name] = plain(value)
    return fields


class Publisher:
    """Publish predictions and labels.

    Parameters
    ----------
    settings
        Connection and topic settings (default: from the environment).
    on_delivery_error
        Called (on the producer's I/O thread) with the error of every message
        that could not be delivered, for applications that count failures
        rather than wait in :meth:`flush`.
    producer_options
        Extra :class:`kafka.KafkaProducer` keyword arguments (for example
        ``linger_ms`` or ``compression_type``).
    """

    def __init__(self, settings: Settings | None = None, *, on_delivery_error: Any = None, **producer_options: Any):
        from kafka import KafkaProducer

        self.settings = settings or load_settings()
        self.topics = self.settings.topics
        options = {
            "acks": "all",
            "linger_ms": 5,
            "batch_size": 256 * 1024,
            "max_request_size": events.MAX_MESSAGE_BYTES,
            "client_id": "driftline-sdk",
        }
        options.update(self.settings.kafka_security())
        options.update(producer_options)
        self._producer = KafkaProducer(bootstrap_servers=self.settings.bootstrap_list, **options)
        self._partitions: dict[str, int] = {}
        self._pending: list = []
        self._on_delivery_error = on_delivery_error

    @classmethod
    def from_env(cls, **producer_options: Any) -> "Publisher":
        return cls(load_settings(), **producer_options)

    # -- single events ------------------------------------------------------
    def publish_prediction(self, record: Prediction | None = None, /, **fields: Any):
        """Send one prediction. Pass a :class:`Prediction` or its fields;
        ``timestamp`` defaults to now. Invalid fields raise ValidationError."""
        record = self._build(Prediction, record, fields)
        return self._send(self.topics.predictions, record.event_id, events.encode(record, validate=False))

    def publish_label(self, record: Label | None = None, /, **fields: Any):
        """Send the ground truth for an earlier prediction."""
        record = self._build(Label, record, fields)
        return self._send(self.topics.labels, record.event_id, events.encode(record, validate=False))

    # -- batches ------------------------------------------------------------------
    def publish_predictions(self, predictions: Iterable[Prediction | dict], bulk: bool = True) -> int:
        """Send many predictions; with ``bulk`` as JSON-array messages grouped
        by partition. Returns the number of messages sent."""
        return self._publish_many(Prediction, self.topics.predictions, predictions, bulk)

    def publish_labels(self, labels: Iterable[Label | dict], bulk: bool = True) -> int:
        """Send many labels; see :meth:`publish_predictions`."""
        return self._publish_many(Label, self.topics.labels, labels, bulk)

    # -- delivery -----------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> None:
        """Block until every message sent so far is acknowledged; raise the
        first delivery error."""
        self._producer.flush(timeout)
        pending, self._pending = self._pending, []
        for future in pending:
            future.get(timeout=0)  # raises the delivery error, if any

    def close(self, timeout: float | None = None) -> None:
        try:
            self.flush(timeout)
        finally:
            self._producer.close(timeout)

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # do not mask the original error with a flush failure
            self._producer.close(5)

    # -- internals ----------------------------------------------------------------
    @staticmethod
    def _build(record_type, record, fields: dict[str, Any]):
        if record is None:
            fields.setdefault("timestamp", events.now())
            return record_type.from_dict(normalise_fields(fields))
        if fields:
            raise TypeError("pass either a record or its fields, not both")
        if not isinstance(record, record_type):
            raise TypeError(f"expected a {record_type.__name__}, got {type(record).__name__}")
        return record_type.from_dict(normalise_fields(record.to_dict()))

    def _send(self, topic: str, key: str, value: bytes, partition: int | None = None):
        future = self._producer.send(topic, value=value, key=key.encode("utf-8"), partition=partition)
        if self._on_delivery_error is not None:
            future.add_errback(self._on_delivery_error)
        self._pending.append(future)
        if len(self._pending) > 100_000:  # keep memory bounded on long runs
            self._pending = [f for f in self._pending if not f.is_done or f.failed()]
        return future

    def _partition_count(self, topic: str) -> int:
        count = self._partitions.get(topic)
        if count is None:
            partitions = self._producer.partitions_for(topic)
            if not partitions:
                raise RuntimeError(f"topic {topic!r} has no partitions; run 'driftline topics create'")
            count = self._partitions[topic] = len(partitions)
        return count

    def _publish_many(self, record_type, topic: str, items: Iterable, bulk: bool) -> int:
        records = [record_type.from_dict(_fields_of(record_type, item), i) for i, item in enumerate(items)]
        return self._publish_records(topic, records, bulk)

    def _publish_checked(self, topic: str, items: Sequence[dict]) -> int:
        """Send events held as dicts that the caller has already checked
        against the contract (the champion checks a whole batch at once, with
        NumPy); bulk, grouped by partition like :meth:`publish_predictions`.
        NaN values are written as null."""
        partitions = self._partition_count(topic)
        groups: dict[int, list] = defaultdict(list)
        for item, partition in zip(items, partitions_for([i["event_id"] for i in items], partitions)):
            groups[partition].append(item)
        sent = 0
        for partition, group in groups.items():
            for chunk in _dict_chunks(group):
                self._send(topic, chunk[0]["event_id"], orjson.dumps(chunk), partition=partition)
                sent += 1
        return sent

    def _publish_records(self, topic: str, records: Sequence, bulk: bool = True) -> int:
        """Send records that came out of ``from_dict`` (already checked)."""
        if not bulk:
            for record in records:
                self._send(topic, record.event_id, events.encode(record, validate=False))
            return len(records)
        partitions = self._partition_count(topic)
        groups: dict[int, list] = defaultdict(list)
        for record, partition in zip(records, partitions_for([r.event_id for r in records], partitions)):
            groups[partition].append(record)
        sent = 0
        for partition, group in groups.items():
            for chunk in _chunks(group):
                self._send(topic, chunk[0].event_id, events.encode_many(chunk, validate=False), partition=partition)
                sent += 1
        return sent


def _dict_chunks(items: Sequence[dict]) -> Iterable[Sequence[dict]]:
    """:func:`_chunks` for events held as dicts."""
    approx = len(orjson.dumps(items[0])) + 1
    per_message = max(1, min(events.MAX_BATCH_EVENTS, _BULK_BYTES // approx))
    for start in range(0, len(items), per_message):
        yield items[start : start + per_message]


def _fields_of(record_type, item: Any) -> Any:
    if isinstance(item, record_type):
        return normalise_fields(item.to_dict())
    if isinstance(item, Mapping):
        return normalise_fields(dict(item))  # a copy: the caller's dict stays as it was
    return item  # the contract refuses it by name


def _chunks(records: Sequence) -> Iterable[Sequence]:
    """Split so that each bulk message stays under ``_BULK_BYTES`` and
    ``MAX_BATCH_EVENTS`` (size estimated from the first record)."""
    if not records:
        return
    approx = len(events.encode(records[0], validate=False)) + 1
    per_message = max(1, min(events.MAX_BATCH_EVENTS, _BULK_BYTES // approx))
    for start in range(0, len(records), per_message):
        yield records[start : start + per_message]
