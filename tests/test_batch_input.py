"""The batch route of :mod:`driftline.streams.batch_input` on a real broker: what it
commits, after a kill -9, a failing handler, a second member and a clean stop."""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaProducer

from tests.process_helpers import stop

HERE = Path(__file__).parent
CHILD = [sys.executable, str(HERE / "batch_input_child.py")]


def test_the_faust_internals_the_batch_route_replaces_are_there():
    """The route overrides private parts of faust and aiokafka (pinned in
    pyproject.toml); an upgrade that moves them must fail here, not in production."""
    import aiokafka
    from faust.transport.consumer import Consumer
    from faust.transport.drivers import aiokafka as faust_aiokafka

    for name in ("_drain_messages", "_wait_next_records", "_new_offset", "_get_active_partitions", "perform_seek",
                 "on_partitions_revoked", "wait_empty", "_to_message", "_add_gap", "commit"):
        assert callable(getattr(Consumer, name)), name
    assert list(inspect.signature(Consumer._wait_next_records).parameters) == ["self", "timeout"]
    assert "self._acked = defaultdict(list)" in inspect.getsource(Consumer.__init__)
    assert "self._active_partitions" in inspect.getsource(Consumer._get_active_partitions)
    assert callable(faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer)
    assert "_new_consumer_thread" in vars(faust_aiokafka.Consumer)
    assert "self._fetch_max_wait_ms = fetch_max_wait_ms" in inspect.getsource(aiokafka.AIOKafkaConsumer.__init__)
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(aiokafka.AIOKafkaConsumer.start)


def test_a_resume_while_the_queue_is_full_reaches_fausts_own_partition_set():
    """faust resumes partitions after a rebalance by updating the active set
    in place; the fetch's hold (queue full) must not hand it a copy, or the
    resumed partitions are never fetched again (seen: two members under load)."""
    from faust.types import TP

    from driftline.streams.batch_input import batch_app_class

    app = batch_app_class()("resume-test", broker="kafka://127.0.0.1:1", store="memory://", autodiscover=False,
                            web_enabled=False)
    topic = app.topic("in", key_serializer="raw", value_serializer="raw")
    app.batch_agent(topic)(lambda batches: None)
    consumer = app.consumer
    batch_tp, other_tp = TP("in", 0), TP("other", 0)
    consumer._active_partitions = {other_tp}
    consumer._hold_batch_partitions = True  # as the fetch loop sets it with its queue full, then fetches:
    assert consumer._get_active_partitions() == {other_tp}  # the held fetch leaves the batch topic out
    consumer.resume_partitions({batch_tp})  # while the fetch waits: faust's recovery after a rebalance
    assert consumer._get_active_partitions() == {batch_tp, other_tp}


def _publish(settings, count: int) -> dict[tuple[str, int], int]:
    """``count`` messages per topic spread over 4 partitions; end offsets."""
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_list, acks="all", linger_ms=5)
    ends: dict[tuple[str, int], int] = {}
    for topic in (settings.topics.predictions, settings.topics.labels):
        for i in range(count):
            producer.send(topic, key=f"k{i}".encode(), value=b'{"n": %d}' % i, partition=i % 4)
            ends[(topic, i % 4)] = ends.get((topic, i % 4), 0) + 1
    producer.flush()
    producer.close()
    return ends


def _handled(log: Path) -> list[tuple[str, int, int]]:
    if not log.exists():
        return []
    rows = [line.split() for line in log.read_text().splitlines() if line.strip()]
    return [(t, int(p), int(o)) for t, p, o in rows]


def _committed(settings, group: str) -> dict[tuple[str, int], int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def read() -> dict:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=group,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            out = {}
            for topic in (settings.topics.predictions, settings.topics.labels):
                for p in range(4):
                    out[(topic, p)] = (await consumer.committed(TopicPartition(topic, p))) or 0
            return out
        finally:
            await consumer.stop()

    return asyncio.run(read())


def _start(env: dict, log_path: Path, **extra: str) -> subprocess.Popen:
    stderr = open(log_path.with_suffix(".stderr"), "ab")
    return subprocess.Popen(CHILD, env={**env, **extra}, stdout=subprocess.DEVNULL, stderr=stderr)


def _wait_for(predicate, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"child exited with {proc.returncode}")
        time.sleep(0.2)
    raise AssertionError("timed out")


@pytest.fixture
def batch_env(test_env, tmp_path):
    return dict(test_env, BATCH_GROUP=f"batch-{uuid.uuid4().hex[:8]}", BATCH_LOG=str(tmp_path / "handled.log"),
                BATCH_LOGLEVEL=os.environ.get("BATCH_LOGLEVEL", "WARNING"))


def test_kill_9_commits_only_what_was_handled_and_a_restart_handles_the_rest(settings, batch_env, tmp_path):
    ends = _publish(settings, 1500)
    total = sum(ends.values())
    log = Path(batch_env["BATCH_LOG"])
    slow = _start(batch_env, log, BATCH_SLEEP="0.3")
    try:
        _wait_for(lambda: len(_handled(log)) > total // 4, 120, slow)
        time.sleep(1.5)  # past a commit interval
    finally:
        slow.kill()
        slow.wait()
    before = _handled(log)
    committed = _committed(settings, batch_env["BATCH_GROUP"])
    highest: dict[tuple[str, int], int] = {}
    for topic, part, offset in before:
        highest[(topic, part)] = max(highest.get((topic, part), -1), offset)
    assert sum(committed.values()) > 0
    assert len(before) < total  # killed mid-stream
    for key, offset in committed.items():
        assert offset <= highest.get(key, -1) + 1, (key, offset, highest.get(key))

    again = _start(batch_env, log)
    try:
        _wait_for(lambda: len(set(_handled(log))) >= total, 120, again)
        time.sleep(1.5)
    finally:
        assert stop(again) == 0
    handled = _handled(log)
    expected = {(t, p, o) for (t, p), end in ends.items() for o in range(end)}
    assert set(handled) == expected
    # what the restart handled again is exactly what had not been committed
    redone = handled[len(before):]
    assert all(o >= committed[(t, p)] for t, p, o in redone)
    assert len(redone) == total - sum(committed.values())
    # a clean stop commits everything handled
    assert _committed(settings, batch_env["BATCH_GROUP"]) == ends


def test_a_failing_handler_crashes_the_app_and_commits_nothing_of_its_batch(settings, batch_env):
    ends = _publish(settings, 400)
    log = Path(batch_env["BATCH_LOG"])
    failing = _start(batch_env, log, BATCH_FAIL_AT="3", BATCH_SLEEP="0.2")
    try:
        failing.wait(90)
    finally:
        stop(failing)
    assert failing.returncode != 0
    handled = set(_handled(log))
    committed = _committed(settings, batch_env["BATCH_GROUP"])
    for (topic, part), offset in committed.items():
        assert all((topic, part, o) in handled for o in range(offset)), (topic, part, offset)
    assert sum(committed.values()) < sum(ends.values())


def test_two_members_split_the_partitions_and_handle_each_offset(settings, batch_env, tmp_path):
    ends = _publish(settings, 1000)
    total = sum(ends.values())
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    first = _start(dict(batch_env, BATCH_LOG=str(logs[0])), logs[0], BATCH_SLEEP="0.5")
    second = None
    try:
        _wait_for(lambda: len(_handled(logs[0])) > 0, 120, first)
        second = _start(dict(batch_env, BATCH_LOG=str(logs[1])), logs[1], BATCH_SLEEP="0.5")
        _wait_for(lambda: len(set(_handled(logs[0])) | set(_handled(logs[1]))) >= total, 180, first)
        time.sleep(1.5)
    finally:
        assert stop(first) == 0
        if second is not None:
            assert stop(second) == 0
    handled_a, handled_b = _handled(logs[0]), _handled(logs[1])
    expected = {(t, p, o) for (t, p), end in ends.items() for o in range(end)}
    assert set(handled_a) | set(handled_b) == expected
    assert handled_b, "the second member got no partitions"
    assert _committed(settings, batch_env["BATCH_GROUP"]) == ends
