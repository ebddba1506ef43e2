"""Reading topics back in tests.

DESIGN.md warns that tansu's high watermarks can be wrong, so these helpers
read until a known count or until the topic has been quiet for a while —
never "until the end offset".
"""

from __future__ import annotations

import time
from typing import Callable

from kafka import KafkaConsumer

from driftline import events
from driftline.config import Settings
from driftline.topics import topic_partitions


def read_topic(
    settings: Settings,
    topic: str,
    *,
    count: int | None = None,
    quiet_s: float = 3.0,
    timeout_s: float = 60.0,
    until: Callable[[list], bool] | None = None,
) -> list:
    """All messages of ``topic`` from the beginning (no consumer group):
    stops at ``count`` messages, when ``until(messages)`` is true, after
    ``quiet_s`` without news, or at ``timeout_s``."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_list,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=int(quiet_s * 1000),
        **settings.kafka_security(),
    )
    try:
        from kafka import TopicPartition

        partitions = topic_partitions(consumer, topic, timeout_s=min(timeout_s, 10.0))
        assert partitions, f"topic {topic} does not exist"
        deadline = time.monotonic() + timeout_s
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        consumer.seek_to_beginning()
        messages: list = []
        last_news = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200)
            got = [m for records in batch.values() for m in records]
            if got:
                messages.extend(got)
                last_news = time.monotonic()
            if count is not None and len(messages) >= count:
                break
            if until is not None and until(messages):
                break
            if count is None and until is None and time.monotonic() - last_news > quiet_s:
                break
        return messages
    finally:
        consumer.close()


def read_records(settings: Settings, topic_name: str, record_type, **kwargs) -> list:
    """Decoded records of a Driftline topic (``topic_name`` as in Topics).

    ``count`` counts records, not messages: one message of ``labeled`` or
    ``dead_letter`` can carry many records, and waiting for that many
    messages would only end at the timeout. Reading goes on for a second
    after the count is reached, so that extra records are returned too."""
    topic = getattr(settings.topics, topic_name)
    count = kwargs.pop("count", None)
    out: list = []

    def enough(messages: list) -> bool:
        while enough.decoded < len(messages):
            out.extend(events.decode(record_type, messages[enough.decoded].value))
            enough.decoded += 1
        if len(out) < count:
            return False
        # a second more, so that records beyond the count (duplicates) show
        enough.reached = enough.reached or time.monotonic()
        return time.monotonic() - enough.reached > 1.0

    enough.decoded = 0
    enough.reached = 0.0
    if count is None:
        for message in read_topic(settings, topic, **kwargs):
            out.extend(events.decode(record_type, message.value))
    else:
        enough(read_topic(settings, topic, until=enough, **kwargs))
    return out
