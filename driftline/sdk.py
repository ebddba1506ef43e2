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
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Sequence

from kafka.partitioner.default import murmur2

from . import events
from .config import Settings, load_settings
from .events import Label, Prediction

__all__ = ["Publisher", "partition_for"]

# Bulk messages stay well below Kafka's 1 MiB default message size.
_BULK_BYTES = 512 * 1024


def partition_for(event_id: str, partitions: int) -> int:
    """Partition Kafka's default partitioner picks for key ``event_id``."""
    return (murmur2(event_id.encode("utf-8")) & 0x7FFFFFFF) % partitions


class Publisher:
    """Publish predictions and labels.

    Parameters
    ----------
    settings
        Connection and topic settings (default: from the environment).
    producer_options
        Extra :class:`kafka.KafkaProducer` keyword arguments (for example
        ``linger_ms`` or ``compression_type``).
    """

    def __init__(self, settings: Settings | None = None, **producer_options: Any):
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
            return record_type.from_dict(fields)
        if fields:
            raise TypeError("pass either a record or its fields, not both")
        if not isinstance(record, record_type):
            raise TypeError(f"expected a {record_type.__name__}, got {type(record).__name__}")
        return events.validate(record)

    def _send(self, topic: str, key: str, value: bytes, partition: int | None = None):
        future = self._producer.send(topic, value=value, key=key.encode("utf-8"), partition=partition)
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
        records = [record_type.from_dict(item.to_dict() if isinstance(item, record_type) else item) for item in items]
        if not bulk:
            for record in records:
                self._send(topic, record.event_id, events.encode(record, validate=False))
            return len(records)
        partitions = self._partition_count(topic)
        groups: dict[int, list] = defaultdict(list)
        for record in records:
            groups[partition_for(record.event_id, partitions)].append(record)
        sent = 0
        for partition, group in groups.items():
            for chunk in _chunks(group):
                self._send(topic, chunk[0].event_id, events.encode_many(chunk, validate=False), partition=partition)
                sent += 1
        return sent


def _chunks(records: Sequence) -> Iterable[Sequence]:
    """Split so that each bulk message stays under ``_BULK_BYTES`` and
    ``MAX_BATCH_EVENTS`` (size estimated from the first record)."""
    if not records:
        return
    approx = len(events.encode(records[0], validate=False)) + 1
    per_message = max(1, min(events.MAX_BATCH_EVENTS, _BULK_BYTES // approx))
    for start in range(0, len(records), per_message):
        yield records[start : start + per_message]
