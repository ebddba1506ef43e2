"""`driftline broker` starts tansu, answers Kafka requests, and stops on
SIGTERM with exit code 0 and no orphan process; `driftline topics create`
is idempotent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from driftline.broker import BrokerError, EmbeddedBroker, free_port, wait_for_kafka


def _start_broker_cli(port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "driftline", "broker", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_broker_command_starts_answers_and_stops_cleanly(stop_signal):
    port = free_port()
    process = _start_broker_cli(port)
    try:
        line = process.stdout.readline().strip()  # printed once the broker answers
        assert line == f"127.0.0.1:{port}"
        wait_for_kafka(line, timeout=10)
        children = psutil.Process(process.pid).children(recursive=True)
        assert any("tansu" in c.name() for c in children)
        process.send_signal(stop_signal)
        assert process.wait(timeout=20) == 0
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"orphans left behind: {alive}"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_broker_command_refuses_a_busy_port():
    with EmbeddedBroker() as broker:
        result = subprocess.run([sys.executable, "-m", "driftline", "broker", "--port", str(broker.port)],
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == f"driftline: error: port {broker.port} on 127.0.0.1 is already in use"


def test_context_manager_stops_the_process():
    broker = EmbeddedBroker()
    with broker:
        pid = broker.process.pid
        assert psutil.pid_exists(pid)
    assert broker.process is None
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_invalid_port():
    with pytest.raises(BrokerError, match="between 1 and 65535"):
        EmbeddedBroker(port=70000)


def test_topics_create_is_idempotent(bootstrap_servers, topic_prefix):
    env = {**os.environ, "DRIFTLINE_BOOTSTRAP_SERVERS": bootstrap_servers, "DRIFTLINE_TOPIC_PREFIX": topic_prefix}
    command = [sys.executable, "-m", "driftline", "topics", "create", "--partitions", "3"]
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert first.stdout.count("\tcreated") == 8
    assert second.stdout.count("\texists") == 8

    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers)
    try:
        assert consumer.partitions_for_topic(f"{topic_prefix}predictions") == {0, 1, 2}
    finally:
        consumer.close()


def test_bad_configuration_is_one_line_not_a_traceback():
    env = {**os.environ, "DRIFTLINE_BOOTSTRAP_SERVERS": "nohost"}
    result = subprocess.run([sys.executable, "-m", "driftline", "topics", "create"], capture_output=True,
                            text=True, env=env, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "driftline: error: DRIFTLINE_BOOTSTRAP_SERVERS contains 'nohost': expected host:port with a port from 1 to 65535"
    ]


def test_broker_does_not_outlive_a_killed_parent():
    """A test run or demo killed with SIGKILL must not leave tansu running."""
    code = ("import time; from driftline.broker import EmbeddedBroker; "
            "b = EmbeddedBroker().start(); print(b.process.pid, flush=True); time.sleep(120)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        broker_pid = int(parent.stdout.readline())
        broker = psutil.Process(broker_pid)
        parent.kill()
        parent.wait(10)
        broker.wait(timeout=10)  # raises TimeoutExpired if it outlives its parent
    finally:
        if parent.poll() is None:
            parent.kill()
