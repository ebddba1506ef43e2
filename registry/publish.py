"""Model events out of the registry, to ``settings.topics.model_events``.

Keyed by model name, so all events of one model stay in order on one
partition. Each event is flushed before the registry call returns: registry
changes are rare and a daemon that reloads on ``promoted`` must not wait
for a linger timer.

Delivery is retried until ``timeout_s``; after a failed delivery the Kafka
producer is closed and a new one is made. That is what recovers from a
broker that was restarted and kept nothing (the embedded tansu broker): an
idempotent kafka-python producer then fails every later send for good with
``UnknownProducerIdError``, and only a new producer (a new producer id) gets
through again.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from driftline import events
from driftline.config import Settings
from driftline.events import ModelEvent

from .errors import PublishError

__all__ = ["EventPublisher", "NullPublisher", "RecoveringProducer"]

log = logging.getLogger(__name__)


class NullPublisher:
    """Publishes nothing: the registry without a broker (``publish=False``)."""

    enabled = False

    def publish(self, event: ModelEvent) -> None:
        events.validate(event)  # still refuse a malformed event

    def close(self) -> None:
        pass


class RecoveringProducer:
    """A kafka-python producer for acknowledged sends that re-creates itself
    after a failed delivery.

    Parameters
    ----------
    settings
        Broker address and security settings.
    client_id
        Kafka client id of the producers it makes.
    timeout_s
        How long one :meth:`send` may try (all attempts together).
    max_backoff_s
        Longest pause between two attempts (the first is 0.2 s, then doubled).

    Examples
    --------
    >>> producer = RecoveringProducer(settings, "driftline-worker")    # doctest: +SKIP
    >>> producer.send("t.model-events", b"{...}", key=b"churn")        # doctest: +SKIP
    >>> producer.close()                                               # doctest: +SKIP
    """

    def __init__(self, settings: Settings, client_id: str, timeout_s: float = 30.0, max_backoff_s: float = 2.0):
        self.settings = settings
        self.client_id = client_id
        self.timeout_s = float(timeout_s)
        self.max_backoff_s = float(max_backoff_s)
        self._producer: Any = None
        self._lock = threading.Lock()
        #: producers made so far (1 + the re-creations), for logs and tests
        self.generation = 0

    def _make(self, budget_s: float):
        from kafka import KafkaProducer

        budget_ms = max(500, int(budget_s * 1000))
        options = dict(
            bootstrap_servers=self.settings.bootstrap_list,
            acks="all",
            linger_ms=0,
            max_block_ms=budget_ms,
            client_id=self.client_id,
            **self.settings.kafka_security(),
        )
        if "bootstrap_timeout_ms" in KafkaProducer.DEFAULT_CONFIG:  # kafka-python >= 3: else 30 s
            options["bootstrap_timeout_ms"] = budget_ms
        producer = KafkaProducer(**options)
        self.generation += 1
        return producer

    def _discard(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            from kafka.errors import KafkaError

            try:
                producer.close(timeout=0)  # do not wait for a broker that failed us
            except (KafkaError, OSError):  # closing a broken producer: it is gone either way
                pass

    def send(self, topic: str, value: bytes, *, key: bytes | None = None, partition: int | None = None,
             timeout_s: float | None = None) -> Any:
        """Send one record and wait for the broker's acknowledgement;
        returns its ``RecordMetadata``. Raises the last ``KafkaError`` once
        ``timeout_s`` (default: the instance's) has passed without one."""
        from kafka.errors import KafkaError

        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else float(timeout_s))
        delay = 0.2
        attempt = 0
        with self._lock:
            while True:
                attempt += 1
                try:
                    if self._producer is None:
                        self._producer = self._make(deadline - time.monotonic())
                    future = self._producer.send(topic, value=value, key=key, partition=partition)
                    metadata = future.get(timeout=max(0.1, deadline - time.monotonic()))
                    if attempt > 1:
                        log.info("delivered to %s after %d attempts (producer %d)", topic, attempt, self.generation)
                    return metadata
                except KafkaError as error:
                    # After any failed delivery the producer may be in a fatal state
                    # (UnknownProducerIdError after a broker reset): start afresh.
                    self._discard()
                    if time.monotonic() + delay >= deadline:
                        raise
                    log.debug("delivery to %s failed (attempt %d): %s: %s", topic, attempt,
                              type(error).__name__, error)
                    time.sleep(delay)
                    delay = min(delay * 2, self.max_backoff_s)

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait for records sent without waiting (none, with :meth:`send`)."""
        with self._lock:
            if self._producer is not None:
                self._producer.flush(timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout=timeout_s)


class EventPublisher:
    """Publish :class:`driftline.events.ModelEvent` records with kafka-python.

    The producer is created on the first event, so opening a registry never
    waits for a broker. A failed delivery is retried (with a new producer)
    until ``timeout_s``; then :class:`driftline.registry.errors.PublishError`.
    """

    enabled = True

    def __init__(self, settings: Settings, timeout_s: float = 30.0, client_id: str = "driftline-registry"):
        self.settings = settings
        self.topic = settings.topics.model_events
        self.timeout_s = timeout_s
        self._producer = RecoveringProducer(settings, client_id, timeout_s=timeout_s)

    def publish(self, event: ModelEvent) -> None:
        from kafka.errors import KafkaError

        payload = events.encode(events.validate(event))
        try:
            self._producer.send(self.topic, payload, key=event.model.encode("utf-8"))
        except KafkaError as error:
            log.error("could not publish model event %s for %s: %s", event.event, event.model, error)
            raise PublishError(
                f"the registry change was saved, but the {event.event!r} event for model "
                f"{event.model!r} could not be published to {self.topic}: {type(error).__name__}: {error}"
            ) from error

    def close(self) -> None:
        self._producer.close(timeout_s=5)
