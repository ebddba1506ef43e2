"""10,000 predictions and labels through the real broker with the SDK, read
back with kafka-python and with aiokafka: every field equal, and each
prediction on the same partition as its label."""

from __future__ import annotations

import asyncio
import random

import pytest

from driftline import events
from driftline.events import Label, Prediction
from driftline.sdk import Publisher, partition_for
from tests.kafka_helpers import read_topic

N = 10_000


def make_events(n: int = N, seed: int = 7) -> tuple[list[Prediction], list[Label]]:
    rng = random.Random(seed)
    predictions, labels = [], []
    for i in range(n):
        event_id = f"evt-{i}-{rng.getrandbits(32):08x}"
        cls = rng.choice(["yes", "no"])
        p = rng.random()
        predictions.append(Prediction(
            event_id=event_id, model=rng.choice(["churn", "fraud-v2"]), model_version=rng.randint(1, 3),
            timestamp=1_700_000_000 + i * 0.25,
            features={"age": rng.randint(18, 90), "income": rng.gauss(5e4, 1e4), "plan": rng.choice(["a", "b"]),
                      "active": rng.random() < 0.5, "note": None},
            prediction=cls, probabilities={"yes": p, "no": 1 - p}, latency_ms=rng.expovariate(0.1),
        ))
        labels.append(Label(event_id=event_id, model=predictions[-1].model, label=rng.choice(["yes", "no"]),
                            timestamp=1_700_000_100 + i * 0.25))
    return predictions, labels


def _by_id(messages, record_type):
    out = {}
    for message in messages:
        for record in events.decode(record_type, message.value):
            assert record.event_id not in out, f"duplicate {record.event_id}"
            out[record.event_id] = (record, message.partition)
    return out


@pytest.fixture
def published(settings):
    predictions, labels = make_events()
    with Publisher(settings) as publisher:
        publisher.publish_predictions(predictions)            # bulk, grouped by partition
        half = N // 2
        for label in labels[:half]:                           # one message per label
            publisher.publish_label(label)
        publisher.publish_labels(labels[half:])               # bulk
    return predictions, labels


def test_round_trip_with_kafka_python(settings, published):
    predictions, labels = published
    topics = settings.topics
    got_p = _by_id(read_topic(settings, topics.predictions, until=lambda m: _count(m) >= N), Prediction)
    got_l = _by_id(read_topic(settings, topics.labels, until=lambda m: _count(m) >= N), Label)
    assert [got_p[p.event_id][0] for p in predictions] == predictions
    assert [got_l[l.event_id][0] for l in labels] == labels
    for p in predictions:
        assert got_p[p.event_id][1] == got_l[p.event_id][1], f"{p.event_id} split over partitions"
        assert got_p[p.event_id][1] == partition_for(p.event_id, 4)


def test_round_trip_with_aiokafka(settings, published):
    predictions, labels = published

    async def consume(topic: str) -> list:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                                    auto_offset_reset="earliest")
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topic, p) for p in range(4)])
            await consumer.seek_to_beginning()
            messages: list = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while _count(messages) < N and loop.time() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    messages.extend(records)
            return messages
        finally:
            await consumer.stop()

    got_p = _by_id(asyncio.run(consume(settings.topics.predictions)), Prediction)
    got_l = _by_id(asyncio.run(consume(settings.topics.labels)), Label)
    assert [got_p[p.event_id][0] for p in predictions] == predictions
    assert [got_l[l.event_id][0] for l in labels] == labels
    assert all(got_p[p.event_id][1] == got_l[p.event_id][1] for p in predictions)


def test_single_prediction_from_fields_defaults_the_timestamp(settings):
    with Publisher(settings) as publisher:
        publisher.publish_prediction(event_id="x1", model="m", model_version=1, features={"a": 1}, prediction=0)
    [message] = read_topic(settings, settings.topics.predictions, count=1, timeout_s=30)
    [record] = events.decode(Prediction, message.value)
    assert record.event_id == "x1" and record.timestamp > 1_700_000_000
    assert message.key == b"x1"


def test_invalid_event_is_refused_before_sending(settings):
    with Publisher(settings) as publisher:
        with pytest.raises(events.ValidationError, match="model_version"):
            publisher.publish_prediction(event_id="x", model="m", model_version="one", features={"a": 1},
                                         prediction=0)


def _count(messages) -> int:
    return sum(len(events.decode_batch(Prediction if b'"prediction"' in m.value else Label, m.value).records)
               for m in messages)
