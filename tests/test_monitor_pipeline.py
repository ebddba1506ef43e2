"""The monitor end to end: real `python -m driftline.streams` processes on the real broker.

Ingest (single + bulk, bad records interleaved), the join in both orders, the
label TTL, the ``labeled`` topic, recovery after kill -9, and scale-out over
two processes. Metrics are checked against scikit-learn on the joined pairs
and against an uninterrupted in-process run of the same analytics.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from kafka import KafkaProducer
from sklearn.metrics import accuracy_score, f1_score, log_loss, precision_score, recall_score

from driftline.broker import free_port
from driftline.events import DeadLetter, LabeledRecord, MetricsSnapshot, decode
from driftline.policy import Policy
from driftline.sdk import Publisher, partition_for
from driftline.streams.model_monitor import ModelMonitor
from tests.log_helpers import parse_logfmt
from tests.kafka_helpers import read_records, read_topic

MODELS = ("alpha", "beta", "gamma")


@pytest.fixture
def monitors(tmp_path, test_env):
    """Start monitor processes; all are killed at the end, whatever happens."""
    procs: list[subprocess.Popen] = []

    def start(name: str, *extra: str) -> subprocess.Popen:
        log = open(tmp_path / f"{name}.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "driftline.streams", "--data-dir", str(tmp_path / f"data-{name}"),
             "--snapshot-interval", "0.5", "--session-timeout", "6", *extra],
            env=test_env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def make_events(n: int, models=MODELS, seed: int = 7, prefix: str = "e"):
    rng = random.Random(seed)
    predictions, labels = [], []
    for i in range(n):
        model = models[i % len(models)]
        p1 = round(rng.random(), 6)
        predicted = int(p1 >= 0.5)
        truth = predicted if rng.random() < 0.75 else 1 - predicted
        event_id = f"{prefix}{i}"
        predictions.append(dict(event_id=event_id, model=model, model_version=1, timestamp=1_700_000_000.0 + i,
                                features={f"f{k}": rng.gauss(0, 1) for k in range(3)}, prediction=predicted,
                                probabilities={"0": round(1 - p1, 6), "1": p1}, latency_ms=rng.uniform(1, 20)))
        labels.append(dict(event_id=event_id, model=model, label=truth, timestamp=1_700_000_100.0 + i))
    return predictions, labels


def latest_snapshots(settings, expected: dict[str, dict[str, int]], timeout_s: float = 150.0):
    """Read ``metrics`` until the newest snapshot of each model shows the
    expected stats; return the newest snapshot per model."""
    newest: dict[str, MetricsSnapshot] = {}

    def done(messages) -> bool:
        while done.seen < len(messages):
            for snap in decode(MetricsSnapshot, messages[done.seen].value):
                newest[snap.model] = snap
            done.seen += 1
        return all(m in newest and all(newest[m].stats.get(k) == v for k, v in want.items())
                   for m, want in expected.items())

    done.seen = 0
    read_topic(settings, settings.topics.metrics, until=done, timeout_s=timeout_s)
    assert done([]), {m: (newest[m].stats if m in newest else None) for m in expected}
    return newest


def sklearn_metrics(records: list[LabeledRecord]) -> dict[str, float]:
    y = [r.label for r in records]
    yhat = [r.prediction for r in records]
    proba = [r.probabilities["1"] for r in records]
    return {"accuracy": accuracy_score(y, yhat), "precision": precision_score(y, yhat),
            "recall": recall_score(y, yhat), "f1": f1_score(y, yhat), "log_loss": log_loss(y, proba, labels=[0, 1])}


def reference_run(model: str, records: list[LabeledRecord]) -> dict[str, float | None]:
    """The same analytics, uninterrupted, in this process."""
    monitor = ModelMonitor(model, Policy().monitor, lambda version: None)
    for start in range(0, len(records), 500):  # the pipeline's message size
        monitor.observe_joined(records[start:start + 500], time.time())
    return monitor.snapshots(time.time())[0].cumulative


def check_metrics(snapshot: MetricsSnapshot, records: list[LabeledRecord]) -> None:
    expected = sklearn_metrics(records)
    for name, value in expected.items():
        assert snapshot.cumulative[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    reference = reference_run(snapshot.model, records)
    for name in ("accuracy", "precision", "recall", "f1", "log_loss"):
        assert snapshot.cumulative[name] == pytest.approx(reference[name], rel=1e-9, abs=1e-12), name
    assert snapshot.cumulative["roc_auc"] == pytest.approx(reference["roc_auc"], abs=1e-3)


def joined_from(predictions, labels, model) -> list[LabeledRecord]:
    by_id = {label["event_id"]: label for label in labels}
    return [LabeledRecord(event_id=p["event_id"], model=p["model"], model_version=1, features=p["features"],
                          prediction=p["prediction"], label=by_id[p["event_id"]]["label"],
                          prediction_timestamp=p["timestamp"], label_timestamp=by_id[p["event_id"]]["timestamp"],
                          probabilities=p["probabilities"], latency_ms=p["latency_ms"])
            for p in predictions if p["model"] == model and p["event_id"] in by_id]


def test_ingest_join_ttl_dead_letters_and_labeled(settings, monitors):
    from driftline.registry import open_registry

    registry = open_registry(settings, publish=False)
    registry.create_model("short", exist_ok=True)
    registry.set_policy("short", Policy.from_dict({"monitor": {"label_ttl_s": 8}}))
    registry.close()

    predictions, labels = make_events(600)
    short_p, short_l = make_events(20, models=("short",), prefix="s")
    first, second = labels[:300], labels[300:]
    raw = KafkaProducer(bootstrap_servers=settings.bootstrap_list)
    good_in_bulk = dict(predictions[0])
    with Publisher(settings) as publisher:
        publisher.publish_labels(first, bulk=True)  # labels before their predictions ...
        publisher.publish_predictions(predictions[1:400], bulk=True)
        # bad records interleaved with good ones: not JSON, a bad element inside a bulk message
        raw.send(settings.topics.predictions, b"{not json", key=b"x")
        bulk = json.dumps([good_in_bulk, {"event_id": "bad-1", "model": "alpha"}]).encode()
        raw.send(settings.topics.predictions, bulk, key=b"e0", partition=partition_for("e0", 4))
        raw.send(settings.topics.labels, json.dumps({"event_id": "e5", "model": "alpha", "label": 1,
                                                     "timestamp": "yesterday"}).encode(), key=b"e5")
        raw.flush()
        for p in predictions[400:]:
            publisher.publish_prediction(**p)  # single-event messages
        publisher.publish_labels(second, bulk=False)  # ... and labels after them
        publisher.publish_predictions(short_p, bulk=True)
        publisher.publish_labels(short_l[:10], bulk=True)
    raw.close()

    monitors("one")
    per_model = {m: sum(1 for p in predictions if p["model"] == m) for m in MODELS}
    expected = {m: {"joined": n, "predictions": n, "expired": 0} for m, n in per_model.items()}
    expected["short"] = {"joined": 10, "predictions": 20, "expired": 10, "label_coverage": 0.5}
    snapshots = latest_snapshots(settings, expected)

    labeled = read_records(settings, "labeled", LabeledRecord, quiet_s=2)
    assert sorted(r.event_id for r in labeled) == sorted([p["event_id"] for p in predictions]
                                                         + [p["event_id"] for p in short_p[:10]])
    for model in MODELS:
        records = joined_from(predictions, labels, model)
        check_metrics(snapshots[model], records)
        by_id = {r.event_id: r for r in labeled}
        assert all(by_id[r.event_id] == r for r in records)

    # a late label for an expired prediction is refused, with the reason
    with Publisher(settings) as publisher:
        publisher.publish_labels(short_l[15:16], bulk=False)
    dead = read_records(settings, "dead_letter", DeadLetter, until=lambda m: len(m) >= 4, timeout_s=30)
    reasons = sorted((d.source_topic.rsplit(".", 1)[1], -1 if d.index is None else d.index,
                      d.reason.split(":")[0], d.field) for d in dead)
    assert reasons == [
        ("labels", -1, "event_id", "event_id"),  # the late label
        ("labels", -1, "timestamp", "timestamp"),
        ("predictions", -1, "<payload>", "<payload>"),
        ("predictions", 1, "[1].model_version", "model_version"),
    ], reasons
    late = [d for d in dead if d.field == "event_id"][0]
    # refused as late while the expired marker lives (one TTL), else as an orphan after its own TTL
    assert ("late label" in late.reason or "no prediction with event_id 's15'" in late.reason)
    assert json.loads(late.original_bytes())["event_id"] == "s15"


def _labeled_count(settings) -> int:
    return len(read_records(settings, "labeled", LabeledRecord, quiet_s=0.5, timeout_s=5))


@pytest.mark.slow
@pytest.mark.parametrize("split", [False, True], ids=["whole-reads", "reads-in-parts"])
def test_kill_9_mid_stream_and_restart_counts_every_event_once(settings, monitors, tmp_path, split):
    # reads-in-parts: stage 1 joins, publishes and writes each read in parts of
    # 37 events (--batch-events), so the kill may fall between two parts of a read
    n = 9000
    predictions, labels = make_events(n)
    with Publisher(settings) as publisher:
        publisher.publish_predictions(predictions, bulk=False)

    def publish_labels_slowly():  # the stream is still flowing when the process dies
        with Publisher(settings) as publisher:
            for start in range(0, n, 250):
                publisher.publish_labels(labels[start:start + 250], bulk=False)
                time.sleep(0.25)

    first = monitors("first", "--checkpoint-events", "200", *(["--batch-events", "37"] if split else []))
    # kill once stage 2 has written a checkpoint (its changelog has records) and joins are flowing
    changelog = f"{settings.topic_prefix}monitor-models-changelog"
    feeder = threading.Thread(target=publish_labels_slowly, daemon=True)
    joins_seen_at = None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        time.sleep(0.3)
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        if not feeder.is_alive():
            try:
                if read_topic(settings, changelog, quiet_s=0.3, timeout_s=3):
                    feeder.start()
            except AssertionError:  # the changelog topic is not created yet
                pass
        elif joins_seen_at is None:
            if _labeled_count(settings) > 0:
                joins_seen_at = len(read_topic(settings, changelog, quiet_s=0.3, timeout_s=3))
        elif len(read_topic(settings, changelog, quiet_s=0.3, timeout_s=3)) > joins_seen_at:
            break  # a checkpoint written after joins began
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    at_kill = _labeled_count(settings)
    assert 0 < at_kill < n, f"the kill was not mid-stream ({at_kill} joined of {n})"

    port = free_port()
    monitors("second", "--metrics-port", str(port))
    per_model = {m: sum(1 for p in predictions if p["model"] == m) for m in MODELS}
    snapshots = latest_snapshots(settings, {m: {"joined": c, "predictions": c, "expired": 0}
                                            for m, c in per_model.items()}, timeout_s=60)
    feeder.join(30)
    for model in MODELS:
        check_metrics(snapshots[model], joined_from(predictions, labels, model))

    # the restart restored checkpoints and applied only what they did not cover
    restored = {}
    for line in (tmp_path / "second.log").read_text().splitlines():
        if "event=checkpoint_restored" in line:
            fields = parse_logfmt(line)
            restored[fields["model"]] = json.loads(fields["restored"])["1"]
    assert restored, "the restarted monitor restored no checkpoint"
    counters = _scrape(port)
    applied = {kind: counters.get(f'driftline_events_processed_total{{component="monitor",kind="{kind}"}}', 0)
               for kind in ("applied_joined", "applied_prediction")}
    restored_joined = sum(r["joined"] for r in restored.values())
    restored_predictions = sum(r["predictions"] for r in restored.values())
    assert restored_predictions > 0, restored  # not a replay from zero
    assert applied["applied_joined"] + restored_joined == n, (applied, restored)
    assert applied["applied_prediction"] + restored_predictions == n, (applied, restored)


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("driftline_events_processed_total{"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


@pytest.mark.slow
def test_two_processes_over_four_partitions_match_one(settings, monitors):
    predictions, labels = make_events(4000, models=("alpha", "beta", "gamma", "delta", "eps"))
    ports = [free_port(), free_port()]
    monitors("a", "--metrics-port", str(ports[0]))
    monitors("b", "--metrics-port", str(ports[1]))
    time.sleep(8)  # let both join the group before the data arrives
    with Publisher(settings) as publisher:
        publisher.publish_predictions(predictions, bulk=True)
        publisher.publish_labels(labels, bulk=True)
    models = sorted({p["model"] for p in predictions})
    per_model = {m: sum(1 for p in predictions if p["model"] == m) for m in models}
    snapshots = latest_snapshots(settings, {m: {"joined": c, "predictions": c} for m, c in per_model.items()})
    for model in models:
        check_metrics(snapshots[model], joined_from(predictions, labels, model))
    handled = [_scrape(port).get('driftline_events_processed_total{component="monitor",kind="prediction"}', 0)
               for port in ports]
    assert all(h > 0 for h in handled), handled  # both processes did part of the work
    assert sum(handled) >= len(predictions)


def test_verified_end_offsets_reach_past_the_last_batch(settings):
    """Table recovery reads to these offsets: they must cover every record
    even where the broker's ListOffsets stops at the last batch's start
    (tansu; see bench/tansu_end_offsets.py)."""
    import asyncio

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from driftline.streams.offsets import verified_end_offsets

    topic = settings.topics.labeled

    async def scenario():
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=50)
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)
        await producer.start()
        await consumer.start()
        try:
            await (await producer.send(topic, b"first", partition=0))
            await asyncio.gather(*[await producer.send(topic, b"x", partition=0) for _ in range(10)])
            tps = [TopicPartition(topic, p) for p in range(4)]
            listed = await consumer.end_offsets(tps)
            return listed, await verified_end_offsets(settings.bootstrap_servers, listed)
        finally:
            await producer.stop()
            await consumer.stop()

    listed, verified = asyncio.run(scenario())
    assert [verified[tp] for tp in sorted(verified)] == [11, 0, 0, 0]
    assert all(verified[tp] >= listed[tp] for tp in listed)
