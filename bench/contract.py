"""Benchmark of the event contract and the publishing SDK.

1. Decode + validate cost per prediction event (10 features) against plain
   ``json.loads`` of the same bytes, in the same run, with and without the
   msgspec fast path (the contract's own validator alone). Goal: at most 3x.
2. SDK publish throughput against a raw kafka-python producer sending the
   same pre-encoded bytes, in the same run, on the embedded broker.
   Goal: at least 0.8x. Single-event and bulk calls are both shown, and a
   second baseline that serialises each event with ``json.dumps`` first, as
   an application without the SDK would.

Run: ``.venv/bin/python bench/contract.py [--events N]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._util import best_of, peak_rss_mb, row  # noqa: E402
from driftline import events  # noqa: E402
from driftline.broker import EmbeddedBroker  # noqa: E402
from driftline.config import load_settings  # noqa: E402
from driftline.events import Prediction  # noqa: E402
from driftline.sdk import Publisher  # noqa: E402
from driftline.topics import create_topics  # noqa: E402


def make_predictions(n: int, seed: int = 1) -> list[Prediction]:
    rng = random.Random(seed)
    return [
        Prediction(
            event_id=uuid.UUID(int=rng.getrandbits(128)).hex, model="churn", model_version=1,
            timestamp=1_700_000_000 + i * 0.01,
            features={f"f{j}": rng.gauss(0, 1) for j in range(10)},
            prediction=rng.choice([0, 1]), probabilities={"0": 0.4, "1": 0.6}, latency_ms=rng.random() * 10,
        )
        for i in range(n)
    ]


def bench_decode(predictions: list[Prediction]) -> None:
    payloads = [events.encode(p) for p in predictions]
    n = len(payloads)
    loads = json.loads

    def plain():
        for payload in payloads:
            loads(payload)

    def contract():
        decode_batch = events.decode_batch
        for payload in payloads:
            decode_batch(Prediction, payload)

    bulk = [events.encode_many(predictions[i : i + 500]) for i in range(0, n, 500)]

    def plain_bulk():
        for payload in bulk:
            loads(payload)

    def contract_bulk():
        for payload in bulk:
            events.decode_batch(Prediction, payload)

    t_plain = best_of(5, plain) / n * 1e6
    t_contract = best_of(5, contract) / n * 1e6
    t_plain_bulk = best_of(5, plain_bulk) / n * 1e6
    t_contract_bulk = best_of(5, contract_bulk) / n * 1e6
    # The contract's own validator alone (what decoding cost before the msgspec fast path).
    fast, events._FAST = events._FAST, {}
    try:
        t_validator = best_of(5, contract) / n * 1e6
        t_validator_bulk = best_of(5, contract_bulk) / n * 1e6
    finally:
        events._FAST = fast
    print(f"decode + validate, one prediction with 10 features ({n:,} events, best of 5)")
    print(row("json.loads (baseline), single messages", t_plain, "us/event"))
    print(row("events.decode_batch, single messages", t_contract, "us/event", t_plain, "x json.loads"))
    print(row("  without the msgspec fast path", t_validator, "us/event", t_plain, "x json.loads"))
    print(row("json.loads (baseline), bulk of 500", t_plain_bulk, "us/event"))
    print(row("events.decode_batch, bulk of 500", t_contract_bulk, "us/event", t_plain_bulk, "x json.loads"))
    print(row("  without the msgspec fast path", t_validator_bulk, "us/event", t_plain_bulk, "x json.loads"))
    print("  goal: at most 3x json.loads")


def bench_publish(predictions: list[Prediction]) -> None:
    from kafka import KafkaProducer

    with EmbeddedBroker() as broker:
        settings = load_settings(environ={}, bootstrap_servers=broker.bootstrap_servers, topic_prefix="bench.")
        create_topics(settings, partitions=4)
        topic = settings.topics.predictions
        payloads = [(p.event_id.encode(), events.encode(p)) for p in predictions]
        n = len(predictions)
        producer_options = dict(acks="all", linger_ms=5, batch_size=256 * 1024)

        dicts = [p.to_dict() for p in predictions]

        def timed(client, send_all) -> float:
            """Seconds from the first send until the broker acknowledged all."""
            started = time.perf_counter()
            send_all(client)
            client.flush()
            elapsed = time.perf_counter() - started
            client.close()
            return elapsed

        def new_producer():
            return KafkaProducer(bootstrap_servers=broker.bootstrap_servers, **producer_options)

        def send_encoded(producer):
            for key, value in payloads:
                producer.send(topic, key=key, value=value)

        def send_serialising(producer):
            # What an application without the SDK does: serialise, then send.
            for d in dicts:
                producer.send(topic, key=d["event_id"].encode(), value=json.dumps(d).encode())

        def publish_each(publisher):
            for p in predictions:
                publisher.publish_prediction(p)

        runs = {
            "raw": lambda: timed(new_producer(), send_encoded),
            "raw_json": lambda: timed(new_producer(), send_serialising),
            "single": lambda: timed(Publisher(settings), publish_each),
            "bulk": lambda: timed(Publisher(settings), lambda publisher: publisher.publish_predictions(predictions)),
        }

        # Interleave the runs so a busy moment on the machine hurts both sides.
        results: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(3):
            for name, run in runs.items():
                results[name].append(run())
        eps = {k: n / min(v) for k, v in results.items()}
        print(f"\npublish throughput on the embedded broker ({n:,} predictions, acks=all, best of 3)")
        print(row("raw KafkaProducer.send, pre-encoded (baseline)", eps["raw"], "events/s"))
        print(row("raw KafkaProducer.send + json.dumps per event", eps["raw_json"], "events/s", eps["raw"]))
        print(row("Publisher.publish_prediction (validate+encode)", eps["single"], "events/s", eps["raw"]))
        print(f"  {'':46} {'':12}            ({eps['single'] / eps['raw_json']:.2f} x raw + json.dumps)")
        print(row("Publisher.publish_predictions (bulk)", eps["bulk"], "events/s", eps["raw"]))
        print("  goal: at least 0.8x the raw producer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    args = parser.parse_args()
    predictions = make_predictions(args.events)
    bench_decode(predictions)
    bench_publish(predictions)
    print(f"\npeak RSS: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
