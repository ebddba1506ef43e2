"""The join state in RocksDB (``--state rocksdb``, the default) on a real broker.

* kill -9 in the middle of a stream, with a large join history: the
  restarted monitor reads only the changelog's tail (the records its local
  store had not persisted), not the history, and every total is exact;
* a changelog emptied while the monitor was down (re-created, as after a
  broker that lost its data): the local store, ahead of it, is discarded
  with a line saying why, not trusted.

The history is 60,000 events (120,000 changelog records): 1,000,000 takes
minutes to publish and join here; bench/monitor.py's restart section
measures that size.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict

import orjson
from kafka import KafkaProducer

from driftline.sdk import partition_for
from driftline.streams.reset import changelog_topics, reset_state
from tests.log_helpers import parse_logfmt
from tests.test_monitor_faults import _applied, _start, _wait_healthy
from tests.process_helpers import stop
from tests.test_monitor_pipeline import latest_snapshots, make_events
from driftline.broker import free_port

PARTITIONS = 4  # the settings fixture's topics
BULK = 100  # events per message


def _publish(settings, first: int, n: int, labels: bool = True, predictions: bool = True) -> None:
    """Events ``first`` .. ``first + n - 1`` of model ``alpha`` as bulk messages
    (co-partitioned by event_id, as the SDK does); labels after predictions."""
    preds, labs = make_events(first + n, models=("alpha",), prefix="e")
    preds, labs = preds[first:], labs[first:]
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_list, acks="all", linger_ms=5,
                             max_request_size=4 * 1024 * 1024)
    try:
        for wanted, topic, records in ((predictions, settings.topics.predictions, preds),
                                       (labels, settings.topics.labels, labs)):
            if not wanted:
                continue
            by_partition = defaultdict(list)
            for record in records:
                by_partition[partition_for(record["event_id"], PARTITIONS)].append(record)
            for partition, items in by_partition.items():
                for start in range(0, len(items), BULK):
                    producer.send(topic, key=b"bulk", value=orjson.dumps(items[start:start + BULK]),
                                  partition=partition)
        producer.flush()
    finally:
        producer.close()


def _wait_applied(port: int, proc, joined: float, timeout_s: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout_s
    counts: dict = {}
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"monitor exited with {proc.returncode}"
        counts = _applied(port)
        if counts.get("applied_joined", 0) >= joined:
            return counts
        time.sleep(0.2)
    raise AssertionError(f"not applied in time: {counts}")


def _ready_lines(tmp_path, name: str) -> list[dict]:
    """The ``join_state_ready`` lines of a monitor's log: one per set of
    partitions it started serving, with the changelog records it replayed."""
    text = (tmp_path / f"{name}.log").read_text()
    return [parse_logfmt(line) for line in text.splitlines() if "event=join_state_ready" in line]


def test_kill_9_with_a_large_join_history_replays_only_the_changelog_tail(settings, test_env, tmp_path):
    history, more = 60_000, 20_000
    port = free_port()
    proc = _start(tmp_path, test_env, "first", "--metrics-port", str(port), "--batch-size", "50")
    try:
        _wait_healthy(port, proc)
        _publish(settings, 0, history)
        _wait_applied(port, proc, history)
        _publish(settings, history, more)
        _wait_applied(port, proc, history + more // 4, timeout_s=60)  # in the middle of the second wave
        proc.kill()  # SIGKILL: no flush, no commit, no close
        proc.wait(10)
    finally:
        stop(proc, 20)
    port = free_port()
    again = _start(tmp_path, test_env, "again", "--metrics-port", str(port))
    try:
        _wait_healthy(port, again, timeout_s=90)
        # every total exact: nothing lost, nothing counted twice
        latest_snapshots(settings, {"alpha": {"predictions": history + more, "joined": history + more}})
        ready = _ready_lines(tmp_path, "again")
        assert ready and {line["store"] for line in ready} == {"rocksdb"}, ready
        replayed = sum(int(line["replayed"]) for line in ready)
        # the changelog holds two records per event (waiting prediction, joined
        # marker) for at least the 60,000 events before the kill; the restart
        # read only what its store had not yet persisted: batches in flight
        assert replayed < 5_000, ready
        entries = sum(int(line["entries"]) for line in ready)
        assert entries >= history // 2, ready  # the history was there, locally, without being read again
    finally:
        stop(again, 20)


def test_a_local_store_ahead_of_an_emptied_changelog_is_discarded(settings, test_env, tmp_path):
    port = free_port()
    proc = _start(tmp_path, test_env, "first", "--metrics-port", str(port))
    try:
        _wait_healthy(port, proc)
        _publish(settings, 0, 400, labels=False)  # 400 predictions waiting for their labels
        deadline = time.monotonic() + 60
        while _applied(port).get("applied_prediction", 0) < 400:
            assert time.monotonic() < deadline, _applied(port)
            time.sleep(0.2)
        time.sleep(1.0)  # the state's changelog delivered and persisted
    finally:
        stop(proc, 20)
    # the changelog goes away (and faust creates it again, empty): the local store is ahead of it
    join_changelog = changelog_topics(f"{settings.topic_prefix}monitor")[0]
    reset_state(settings, f"{settings.topic_prefix}monitor", tmp_path / "no-such-dir", topics=[join_changelog])
    assert os.listdir(tmp_path / "data" / "join-state")  # the local store is still there
    port = free_port()
    again = _start(tmp_path, test_env, "again", "--metrics-port", str(port))
    try:
        _wait_healthy(port, again, timeout_s=90)
        _publish(settings, 0, 400, predictions=False)  # their labels: no prediction is known any more
        _publish(settings, 400, 100)  # and new pairs, joined as usual
        latest_snapshots(settings, {"alpha": {"predictions": 500, "joined": 100}})
        log = (tmp_path / "again.log").read_text()
        discarded = [line for line in log.splitlines() if "discarded: the local store holds changelog offsets" in line]
        assert len(discarded) == PARTITIONS, log[-3000:]  # each partition held waiting predictions
        assert "the changelog was emptied or created again" in discarded[0]
        assert "ConsistencyError" not in log
        ready = _ready_lines(tmp_path, "again")
        assert sum(int(line["replayed"]) for line in ready) == 0, ready
    finally:
        stop(again, 20)


def test_a_second_process_on_the_same_data_dir_is_refused_at_once(settings, test_env, tmp_path):
    # RocksDB would refuse it only mid-rebalance, once partitions are assigned
    port = free_port()
    first = _start(tmp_path, test_env, "first", "--metrics-port", str(port))
    try:
        _wait_healthy(port, first)
        second = _start(tmp_path, test_env, "second")
        assert second.wait(60) == 1
        log = (tmp_path / "second.log").read_text()
        assert f"--data-dir '{tmp_path / 'data'}' is in use by another monitor process (pid {first.pid})" in log
        assert "Traceback" not in log
        _wait_healthy(port, first)  # the first one goes on
    finally:
        stop(first, 30)
