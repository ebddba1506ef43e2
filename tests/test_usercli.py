"""User CLI through the real broker: the commands run as subprocesses and the
topics are read back (publish) or written first (alerts, metrics)."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time

import pytest
from kafka import KafkaProducer

from driftline import events
from driftline.events import Alert, Label, MetricsSnapshot, Prediction
from tests.kafka_helpers import read_records

CLI = [sys.executable, "-m", "driftline"]


def run_cli(args, env, input_text=None, timeout=60):
    return subprocess.run(CLI + args, env=env, input=input_text, capture_output=True, text=True, timeout=timeout)


class LineReader:
    """Read a pipe's lines on a thread so a test can wait with a timeout."""

    def __init__(self, pipe):
        self.lines: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._pump, args=(pipe,), daemon=True)
        self.thread.start()

    def _pump(self, pipe):
        for line in pipe:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, text, timeout=30.0):
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                break
            seen.append(line)
            if text in line:
                return seen
        raise AssertionError(f"{text!r} not seen; got {seen}")


def read_events_of(settings, topic_name, record_type, expected):
    """Decoded records until ``expected`` of them (bulk messages hold several)."""
    def enough(messages):
        return sum(len(events.decode(record_type, m.value)) for m in messages) >= expected

    return read_records(settings, topic_name, record_type, until=enough, timeout_s=30)


def produce(settings, topic, records):
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_list)
    try:
        for record in records:
            producer.send(topic, events.encode(record))
        producer.flush()
    finally:
        producer.close()


def alert(model, kind="data_drift", subject="age", ts=1_700_000_000.0):
    return Alert(alert_id=events.new_id(), model=model, model_version=1, kind=kind, subject=subject,
                 detector="ks", value=0.42, threshold=0.05, timestamp=ts, message=f"{subject} drifted")


# -- publish ------------------------------------------------------------------------------


def test_publish_csv_predictions_sends_valid_rows_and_reports_bad_lines(settings, test_env, tmp_path):
    path = tmp_path / "predictions.csv"
    path.write_text(
        "event_id,model,model_version,timestamp,prediction,proba_yes,proba_no,latency_ms,age,plan,vip\n"
        "e1,churn,1,2024-01-01T00:00:00,yes,0.8,0.2,3.5,42,pro,true\n"
        "e2,churn,x,1700000000,no,0.1,0.9,,17,,false\n"            # line 3: bad model_version
        "e3,churn,1,1700000001,no,0.3,0.7,1.0,18.5,free,false\n"
        "e4,churn,1,1700000002,yes,1.5,0.2,,30,pro,true\n"          # line 5: probability > 1
        "e5,churn,2,1700000003,1,,,,55,basic,false\n"
    )
    result = run_cli(["publish", "predictions", str(path)], test_env)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if "refused" in line]
    assert len(errors) == 2
    assert f"{path}:3: refused: model_version" in errors[0]
    assert f"{path}:5: refused: probabilities.yes" in errors[1]
    assert "sent 3 predictions" in result.stdout and "refused 2 of 5" in result.stdout

    got = {p.event_id: p for p in read_events_of(settings, "predictions", Prediction, 3)}
    assert sorted(got) == ["e1", "e3", "e5"]
    assert got["e1"].features == {"age": 42, "plan": "pro", "vip": True}
    assert got["e1"].probabilities == {"yes": 0.8, "no": 0.2}
    assert got["e1"].latency_ms == 3.5
    assert got["e1"].timestamp == 1704067200.0  # naive ISO-8601 means UTC
    assert got["e3"].features == {"age": 18.5, "plan": "free", "vip": False}
    assert got["e5"].prediction == 1 and got["e5"].model_version == 2 and got["e5"].probabilities is None
    assert got["e5"].latency_ms is None


def test_publish_jsonl_labels_with_bad_line_and_json_output(settings, test_env, tmp_path):
    path = tmp_path / "labels.jsonl"
    lines = [json.dumps({"event_id": f"e{i}", "model": "churn", "label": i % 2, "timestamp": 1_700_000_000 + i})
             for i in range(50)]
    lines.insert(10, "{not json")                                               # line 11
    lines.insert(20, json.dumps({"event_id": "bad", "model": "../etc", "label": 1}))  # line 21
    lines.insert(30, "")                                                        # blank lines are skipped
    path.write_text("\n".join(lines) + "\n")
    result = run_cli(["publish", "labels", str(path), "--json"], test_env)
    assert result.returncode == 1
    refused = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert [(r["line"], r["type"]) for r in refused] == [(11, "refused"), (21, "refused")]
    assert "not valid JSON" in refused[0]["error"] and refused[1]["error"].startswith("model:")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["sent"] == 50 and summary["refused"] == 2 and summary["rows"] == 52
    assert summary["topic"] == settings.topics.labels
    labels = read_events_of(settings, "labels", Label, 50)
    assert sorted(int(label.event_id[1:]) for label in labels) == list(range(50))
    assert all(label.label == int(label.event_id[1:]) % 2 for label in labels)


def test_publish_from_stdin_all_valid_exits_zero(settings, test_env):
    text = "".join(json.dumps({"event_id": f"s{i}", "model": "m", "model_version": 1, "timestamp": 1.0 * i,
                               "features": {"x": i}, "prediction": "a"}) + "\n" for i in range(20))
    result = run_cli(["publish", "predictions", "-", "--no-bulk"], test_env, input_text=text)
    assert result.returncode == 0, result.stderr
    assert "sent 20 predictions in 20 message(s)" in result.stdout
    got = read_events_of(settings, "predictions", Prediction, 20)
    assert sorted(p.features["x"] for p in got) == list(range(20))


def test_publish_csv_without_required_column_is_a_clear_error(test_env, tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("event_id,model_version,prediction,age\ne1,1,yes,3\n")
    result = run_cli(["publish", "predictions", str(path)], test_env)
    assert result.returncode == 1
    assert "CSV header lacks column(s) model" in result.stderr
    assert "Traceback" not in result.stderr


# -- alerts and metrics --------------------------------------------------------------------


def test_alerts_without_follow_prints_existing_filtered_by_model(settings, test_env):
    produce(settings, settings.topics.alerts,
            [alert("churn", subject="age"), alert("fraud", subject="amount"), alert("churn", "concept_drift", "error")])
    result = run_cli(["alerts", "--model", "churn", "--json", "--quiet-s", "2"], test_env)
    assert result.returncode == 0, result.stderr
    got = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted((a["kind"], a["subject"]) for a in got) == [("concept_drift", "error"), ("data_drift", "age")]
    assert all(a["model"] == "churn" for a in got)


def test_alerts_follow_prints_only_new_alerts_readably(settings, test_env):
    produce(settings, settings.topics.alerts, [alert("churn", subject="old_feature")])
    process = subprocess.Popen(CLI + ["alerts", "--follow", "--model", "churn", "--count", "2"], env=test_env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        LineReader(process.stderr).wait_for("following")
        produce(settings, settings.topics.alerts,
                [alert("other", subject="x"), alert("churn", subject="income"), alert("churn", "latency", "p95")])
        out, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    lines = sorted(out.strip().splitlines(), key=lambda line: "latency" in line)  # partitions interleave
    assert len(lines) == 2
    assert "churn v1" in lines[0] and "data_drift" in lines[0] and "income" in lines[0] and "value=0.42" in lines[0]
    assert "churn v1" in lines[1] and "latency" in lines[1] and "p95" in lines[1]
    assert "old_feature" not in out


def test_metrics_follow_from_beginning_json(settings, test_env):
    snapshots = [MetricsSnapshot(model="churn", model_version=v, timestamp=1_700_000_000.0 + v,
                                 cumulative={"accuracy": 0.9 - v / 10}, rolling={"accuracy": 0.8},
                                 stats={"joined": 100 * v}) for v in (1, 2, 3)]
    produce(settings, settings.topics.metrics, snapshots)
    result = run_cli(["metrics", "--follow", "--from-beginning", "--json", "--count", "3"], test_env)
    assert result.returncode == 0, result.stderr
    got = sorted((json.loads(line) for line in result.stdout.splitlines()), key=lambda s: s["model_version"])
    assert [s["model_version"] for s in got] == [1, 2, 3]
    assert got[1]["cumulative"] == {"accuracy": pytest.approx(0.7)} and got[2]["stats"] == {"joined": 300}
    readable = run_cli(["metrics", "--quiet-s", "2"], test_env)
    assert "churn v2" in readable.stdout and "accuracy=0.7/0.8" in readable.stdout


def test_follow_missing_topic_and_bad_model_name_are_user_errors(test_env):
    env = {**test_env, "DRIFTLINE_TOPIC_PREFIX": "nosuchprefix."}
    result = run_cli(["alerts", "--quiet-s", "1"], env)
    assert result.returncode == 1
    assert "topic 'nosuchprefix.alerts' does not exist" in result.stderr
    result = run_cli(["alerts", "--model", "../x"], test_env)
    assert result.returncode == 1 and "--model" in result.stderr and "Traceback" not in result.stderr


# -- status ----------------------------------------------------------------------------------


def test_status_lists_topics(settings, test_env):
    result = run_cli(["status", "--json"], test_env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    topics = {line["topic"]: line["present"] for line in lines if line["type"] == "topic"}
    assert topics == {name: True for name in settings.topics.all()}
    missing = run_cli(["status"], {**test_env, "DRIFTLINE_TOPIC_PREFIX": "absent."})
    assert missing.returncode == 1 and "absent.alerts" in missing.stdout and "MISSING" in missing.stdout


def test_status_shows_registry_champion_and_latest_version(settings, test_env):
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from driftline.registry import open_registry

    X = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([0, 0, 1, 1])
    with open_registry(settings, publish=False) as reg:
        first = reg.register_version("churn", LogisticRegression().fit(X, y), metrics={"accuracy": 0.91})
        reg.promote("churn", first.version)
        reg.register_version("churn", LogisticRegression().fit(X, y), metrics={"accuracy": 0.5},
                             status="rejected", reason="accuracy 0.5 < champion 0.91")
    # the worker's status file, written the way the worker writes it
    from driftline.retrain.trainer import RunResult
    from driftline.retrain.worker import StatusBoard, status_path

    StatusBoard(status_path(settings)).finished(RunResult(
        model="churn", request_ids=["r1"], trigger="drift", outcome="rejected", started_at=100.0, ended_at=103.5,
        version=2, reason="no better", rows=640).to_dict())
    result = run_cli(["status", "--json"], test_env)
    assert result.returncode == 0, result.stdout + result.stderr
    models = [json.loads(line) for line in result.stdout.splitlines() if json.loads(line)["type"] == "model"]
    assert len(models) == 1
    churn = models[0]
    assert (churn["model"], churn["champion"], churn["versions"], churn["latest"]) == ("churn", 1, 2, 2)
    assert churn["latest_status"] == "rejected" and churn["latest_reason"].startswith("accuracy 0.5")
    assert churn["champion_metrics"] == {"accuracy": 0.91}
    assert churn["last_run"]["outcome"] == "rejected" and churn["last_run"]["rows"] == 640
    readable = run_cli(["status"], test_env).stdout
    assert "churn" in readable and "champion v1" in readable and "latest v2 rejected" in readable
    assert "last run: rejected (trigger drift, 3.5s, 640 rows)" in readable


def test_publish_to_a_missing_topic_is_refused_and_not_created(settings, test_env, tmp_path):
    from driftline.topics import admin_client

    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"event_id": "e1", "model": "m", "model_version": 1, "features": {"a": 1},
                                "prediction": 1}) + "\n")
    env = {**test_env, "DRIFTLINE_TOPIC_PREFIX": settings.topic_prefix + "missing."}
    result = run_cli(["publish", "predictions", str(path)], env)
    assert result.returncode == 1
    assert f"topic '{settings.topic_prefix}missing.predictions' does not exist" in result.stderr
    admin = admin_client(settings)
    try:
        assert f"{settings.topic_prefix}missing.predictions" not in admin.list_topics()
    finally:
        admin.close()


def test_publish_from_redirected_stdin_sniffs_the_format(settings, test_env, tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("event_id,model,label,timestamp\nr1,m,yes,5\nr2,m,no,6\n")
    with open(path) as handle:
        result = subprocess.run(CLI + ["publish", "labels", "-"], env=test_env, stdin=handle,
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "INFO kafka" not in result.stderr  # client chatter stays out of the user's way
    labels = read_events_of(settings, "labels", Label, 2)
    assert sorted((label.event_id, label.label, label.timestamp) for label in labels) == [
        ("r1", "yes", 5.0), ("r2", "no", 6.0)]
