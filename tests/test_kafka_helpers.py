"""driftline.kafka against a real broker: probes, topic checks and group-free
followers (kafka-python and aiokafka), positioned where they promise."""

from __future__ import annotations

import asyncio
import time

import pytest
from kafka import KafkaProducer

from driftline.config import load_settings
from driftline.kafka import (
    KafkaUnreachableError,
    MissingTopicError,
    follow_topics,
    follow_topics_async,
    partition_counts,
    require_topics,
)


def _send(settings, topic: str, values: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_list)
    try:
        for value in values:
            producer.send(topic, value)
        producer.flush(30)
    finally:
        producer.close()


def _poll_values(consumer, want: int, timeout_s: float = 20.0, until: bytes | None = None) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while (len(got) < want or (until is not None and until not in got)) and time.monotonic() < deadline:
        for messages in consumer.poll(timeout_ms=200).values():
            got += [m.value for m in messages]
    return got


def test_probes_and_topic_checks(settings):
    topics = settings.topics
    assert partition_counts(settings, [topics.predictions, topics.labels]) == {topics.predictions: 4,
                                                                                 topics.labels: 4}
    require_topics(settings, [topics.alerts, topics.metrics])
    missing = f"{settings.topic_prefix}absent"
    with pytest.raises(MissingTopicError, match=f"topic '{missing}' does not exist"):
        require_topics(settings, [topics.alerts, missing])
    with pytest.raises(MissingTopicError):
        partition_counts(settings, [missing], timeout_s=1.0)


def test_follow_from_the_beginning_and_from_the_end(settings):
    topic = settings.topics.alerts
    _send(settings, topic, [b"old-1", b"old-2"])
    from_start = follow_topics(settings, [topic], "test-from-start")
    from_end = follow_topics(settings, [topic], "test-from-end", from_end=True)
    try:
        _send(settings, topic, [b"new"])
        got = sorted(_poll_values(from_start, 3))
        assert got == [b"new", b"old-1", b"old-2"], got
        got = _poll_values(from_end, 1, until=b"new")
        # positioned before the send: the new record is never missed (the old
        # ones are skipped, unless the embedded broker's end offsets lag)
        assert b"new" in got, got
    finally:
        from_start.close()
        from_end.close()
    with pytest.raises(MissingTopicError):
        follow_topics(settings, [f"{settings.topic_prefix}absent"], "test-missing", timeout_s=1.0)


def test_follow_async_from_the_end(settings):
    topic = settings.topics.metrics
    _send(settings, topic, [b"old"])

    async def follow() -> list[bytes]:
        consumer = await follow_topics_async(settings, [topic], "test-async", from_end=True)
        try:
            await asyncio.get_running_loop().run_in_executor(None, _send, settings, topic, [b"new"])
            got: list[bytes] = []
            deadline = time.monotonic() + 20
            while b"new" not in got and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    got += [r.value for r in records]
            return got
        finally:
            await consumer.stop()

    got = asyncio.run(follow())
    assert b"new" in got, got


def test_an_unreachable_broker_is_one_clear_error(tmp_path):
    from driftline.broker import free_port

    down = load_settings(environ={}, bootstrap_servers=f"127.0.0.1:{free_port()}", registry=str(tmp_path))
    with pytest.raises(KafkaUnreachableError, match=r"cannot reach Kafka at 127\.0\.0\.1:\d+ \(\w+\); "
                                                      "check DRIFTLINE_BOOTSTRAP_SERVERS"):
        follow_topics(down, ["anything"], "test-down", bootstrap_timeout_ms=2000)
