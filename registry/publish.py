"""Model events out of the registry, to ``settings.topics.model_events``.

Keyed by model name, so all events of one model stay in order on one
partition. Each event is flushed before the registry call returns: registry
changes are rare and a daemon that reloads on ``promoted`` must not wait
for a linger timer.
"""

from __future__ import annotations

import logging
import threading

from driftline import events
from driftline.config import Settings
from driftline.events import ModelEvent

from .errors import PublishError

__all__ = ["EventPublisher", "NullPublisher"]

log = logging.getLogger(__name__)


class NullPublisher:
    """Publishes nothing: the registry without a broker (``publish=False``)."""

    enabled = False

    def publish(self, event: ModelEvent) -> None:
        events.validate(event)  # still refuse a malformed event

    def close(self) -> None:
        pass


class EventPublisher:
    """Publish :class:`driftline.events.ModelEvent` records with kafka-python.

    The producer is created on the first event, so opening a registry never
    waits for a broker.
    """

    enabled = True

    def __init__(self, settings: Settings, timeout_s: float = 30.0):
        self.settings = settings
        self.topic = settings.topics.model_events
        self.timeout_s = timeout_s
        self._producer = None
        self._lock = threading.Lock()

    def _get_producer(self):
        if self._producer is None:
            from kafka import KafkaProducer

            options = dict(
                bootstrap_servers=self.settings.bootstrap_list,
                acks="all",
                retries=5,
                max_block_ms=int(self.timeout_s * 1000),
                client_id="driftline-registry",
                **self.settings.kafka_security(),
            )
            if "bootstrap_timeout_ms" in KafkaProducer.DEFAULT_CONFIG:  # kafka-python >= 3: else 30 s
                options["bootstrap_timeout_ms"] = int(self.timeout_s * 1000)
            self._producer = KafkaProducer(**options)
        return self._producer

    def publish(self, event: ModelEvent) -> None:
        payload = events.encode(events.validate(event))
        with self._lock:
            try:
                future = self._get_producer().send(self.topic, key=event.model.encode("utf-8"), value=payload)
                future.get(timeout=self.timeout_s)
            except Exception as error:
                log.error("could not publish model event %s for %s: %s", event.event, event.model, error)
                raise PublishError(
                    f"the registry change was saved, but the {event.event!r} event for model "
                    f"{event.model!r} could not be published to {self.topic}: {type(error).__name__}: {error}"
                ) from error

    def close(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout=5)
