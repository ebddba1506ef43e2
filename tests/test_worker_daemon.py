"""The worker daemon as a real process: real broker, registry, scikit-learn.

Covers coalescing, dead letters, failed runs, schedules from a changed
policy, clean shutdown, the status view, committed offsets, start-up errors
and a kill -9 in the middle of a run.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request

import pandas as pd
from kafka import KafkaConsumer, TopicPartition

from driftline.broker import free_port
from driftline.events import DeadLetter, ModelEvent
from driftline.registry import open_registry
from driftline.retrain.trainer import train_frame

from .kafka_helpers import read_records
from .worker_helpers import (
    ROOT,
    WorkerProcess,
    make_records,
    publish_records,
    publish_requests,
    read_status,
    request,
    wait_until,
)


def _seed(settings, model="churn", policy=None, n=400):
    """Champion v1 trained on flipped labels, and ``n`` honest labeled records."""
    reg = open_registry(settings, publish=True)
    try:
        reg.set_policy(model, policy or {"retrain": {"estimator": "logistic_regression"}})
        bad = make_records(model, 300, seed=11, flip=True)
        train_frame(reg, model, pd.DataFrame([{**r.features, "label": r.label} for r in bad]), "label")
    finally:
        reg.close()
    publish_records(settings, make_records(model, n, seed=12))


def _versions(settings, model):
    reg = open_registry(settings)
    try:
        return reg.list_versions(model)
    finally:
        reg.close()


def _committed(settings, group, partition=0):
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_list, group_id=group, enable_auto_commit=False)
    try:
        return consumer.committed(TopicPartition(settings.topics.retrain_requests, partition))
    finally:
        consumer.close()


def test_worker_serves_coalesces_dead_letters_schedules_and_stops(settings, test_env, tmp_path):
    _seed(settings, policy={"retrain": {"estimator": "logistic_regression", "debounce_s": 3.0}})
    publish_requests(settings, [
        request("churn", "c-1", "drift"), request("churn", "c-2", "metric"), b"{not json",
        request("churn", "c-3", "drift"), b'{"request_id": "x", "model": "churn", "reason": "boredom", "timestamp": 1}',
        request("ghost", "g-1"),
    ])
    metrics_port = free_port()
    with WorkerProcess(test_env, tmp_path / "worker.log", "--metrics-port", str(metrics_port)) as worker:
        worker.wait_for_log("event=worker_started")
        events_ = read_records(settings, "model_events", ModelEvent, quiet_s=60, timeout_s=120,
                               until=lambda msgs: any(b'"c-1"' in m.value and b'"promoted"' in m.value for m in msgs)
                               and any(b'"g-1"' in m.value for m in msgs))
        promoted = [e for e in events_ if e.event == "promoted" and e.request_id == "c-1"]
        assert len(promoted) == 1 and promoted[0].version == 2
        assert promoted[0].metrics["candidate_accuracy"] > promoted[0].metrics["champion_accuracy"]
        failed = [e for e in events_ if e.event == "failed"]
        assert [(e.request_id, e.model) for e in failed] == [("g-1", "ghost")]
        assert "unknown model" in failed[0].reason
        versions = _versions(settings, "churn")
        assert [v.version for v in versions] == [1, 2]  # three requests, one run
        assert versions[1].lineage["request_ids"] == ["c-1", "c-2", "c-3"]
        letters = read_records(settings, "dead_letter", DeadLetter, count=2, quiet_s=30)
        assert sorted(letter.offset for letter in letters) == [2, 4]
        assert {letter.component for letter in letters} == {"worker"}
        assert any("reason" == letter.field and "boredom" in letter.reason for letter in letters)
        assert b"{not json" in [letter.original_bytes() for letter in letters]

        # a schedule arrives through a policy change; the worker picks it up without restart
        reg = open_registry(settings, publish=True)
        try:
            reg.set_policy("churn", {"retrain": {"estimator": "logistic_regression", "debounce_s": 0.0,
                                                 "schedule": {"interval_s": 2}}})
        finally:
            reg.close()
        scheduled = wait_until(lambda: [v for v in _versions(settings, "churn") if v.tags.get("trigger") == "schedule"],
                               timeout=90, what="a scheduled version")
        assert scheduled[0].request_id.startswith("schedule-churn-")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
            exposition = response.read().decode()
        assert 'driftline_retrain_runs_total{model="ghost",outcome="failed"} 1.0' in exposition
        assert 'driftline_events_processed_total{component="worker",kind="dead_letter"} 2.0' in exposition
        assert 'driftline_retrain_duration_seconds_count{model="churn"}' in exposition
        assert worker.terminate() == 0
        log = worker.log()
    assert "event=worker_stopped" in log and "event=requests_coalesced" in log
    # (kafka-python itself may log a traceback while closing a socket; ours must not crash)
    assert 'File "' + str(ROOT / "retrain") not in log and "run crashed" not in log
    # all six messages ended -> committed past them
    committed = _committed(settings, "wtest")
    assert committed == 6
    status = read_status(tmp_path / "registry" / "worker-status.json")
    assert status["state"] == "stopped"
    outcomes = [(r["model"], r["outcome"]) for r in status["runs"]]
    assert ("churn", "promoted") in outcomes and ("ghost", "failed") in outcomes
    shown = subprocess.run([sys.executable, "-m", "driftline", "worker", "--status"], cwd=ROOT, env=test_env,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "ghost" in shown.stdout and "promoted" in shown.stdout


def test_kill_9_during_training_reruns_the_request_once(settings, test_env, tmp_path):
    _seed(settings, policy={"retrain": {"estimator": "logistic_regression", "debounce_s": 0.0}})
    publish_requests(settings, [request("churn", "k-1", "drift")])
    status_file = tmp_path / "registry" / "worker-status.json"
    with WorkerProcess(test_env, tmp_path / "first.log", pause_s=300) as first:
        wait_until(lambda: any(a.get("phase") == "paused" and a["request_ids"] == ["k-1"]
                               for a in read_status(status_file).get("active", [])),
                   timeout=90, what="run paused in training")
        first.kill9()
    assert [v.version for v in _versions(settings, "churn")] == [1]
    with WorkerProcess(test_env, tmp_path / "second.log") as second:
        found = wait_until(lambda: [v for v in _versions(settings, "churn") if v.request_id == "k-1"],
                           timeout=120, what="version for k-1 after restart")
        second.wait_for_log("event=run_ended", timeout=60)
        assert second.terminate() == 0
    versions = _versions(settings, "churn")
    assert [v.version for v in versions] == [1, 2] and len(found) == 1
    assert versions[1].aliases == ["champion"] and versions[1].lineage["request_id"] == "k-1"
    assert _committed(settings, "wtest") == 1


def _start_fails(env, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "driftline.retrain", "--session-timeout-ms", "6000",
                           "--heartbeat-interval-ms", "1000", *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_configuration_errors_stop_the_worker_at_start_up(settings, test_env, tmp_path):
    bad_broker = _start_fails({**test_env, "DRIFTLINE_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"})
    assert bad_broker.returncode == 1 and "cannot reach the Kafka broker" in bad_broker.stderr

    no_topics = _start_fails({**test_env, "DRIFTLINE_TOPIC_PREFIX": "nothere."})
    assert no_topics.returncode == 1 and "nothere.retrain-requests" in no_topics.stderr

    reg = open_registry(settings)
    try:  # valid on its own, but a regressor scored with accuracy cannot work
        reg.set_policy("mixed", {"retrain": {"estimator": "linear_regression"}})
    finally:
        reg.close()
    bad_policy = _start_fails(test_env)
    assert bad_policy.returncode == 1 and "policy of model 'mixed' is invalid" in bad_policy.stderr

    bad_group = _start_fails(test_env, "--group-id", "../x")
    assert bad_group.returncode == 1 and "--group-id" in bad_group.stderr
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    bad_registry = _start_fails({**test_env, "DRIFTLINE_REGISTRY": str(blocker / "reg")})
    assert bad_registry.returncode == 1 and "cannot open the registry" in bad_registry.stderr
