"""Log lines a person can read: structured lines from the real daemons.

The monitor (logfmt, the default) and the worker (JSON) run as processes on
the real broker; every line they write must parse, the events of interest
(alert, retrain request, dead letter, promotion, policy reload) are one line
each, and no client library writes INFO lines at the default level.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import time

from kafka import KafkaProducer

from driftline import events, logs
from driftline.broker import free_port
from driftline.events import Alert, ModelEvent, RetrainRequest
from driftline.policy import Policy
from driftline.sdk import partition_for
from tests.kafka_helpers import read_records
from tests.log_helpers import events_named, parse_logfmt, structured_lines
from tests.test_monitor_faults import _start, _wait_healthy
from tests.process_helpers import stop
from tests.worker_helpers import WorkerProcess, publish_requests, wait_until

CLIENTS = ("kafka", "aiokafka", "faust", "mode")


def _client_info(lines: list[dict]) -> list[dict]:
    return [f for f in lines if f.get("logger", "").split(".")[0] in CLIENTS and f.get("level") in ("info", "debug")]


def test_a_structured_line_parses_in_both_formats_and_masks_secrets():
    from driftline import redact

    redact.install(["s3cr3t pass"])
    try:
        for fmt, parse in (("logfmt", parse_logfmt), ("json", json.loads)):
            stream = io.StringIO()
            logs.configure("INFO", fmt, stream=stream)
            log = logging.getLogger("driftline.test")
            logs.log_event(log, "dead_letter", logging.WARNING, reason='field "age": must be finite\t(got NaN)',
                           topic="t.predictions", partition=2, offset=17, index=3, ids=["a", "b"],
                           counts={"joined": 4}, secret="s3cr3t pass", none=None)
            log.info("plain message with spaces %s", "and = signs")
            logging.getLogger("kafka.conn").info("connecting to node 1")  # below WARNING for clients
            logging.getLogger("aiokafka").warning("a client warning")
            lines = stream.getvalue().splitlines()
            assert len(lines) == 3, lines
            first, second, third = (parse(line) for line in lines)
            assert first["event"] == "dead_letter" and first["level"] == "warning"
            assert first["logger"] == "driftline.test" and first["ts"].endswith("Z")
            assert first["reason"].replace("\\x09", "\t") == 'field "age": must be finite\t(got NaN)'
            assert (first["partition"], first["offset"], first["index"]) == (("2", "17", "3") if fmt == "logfmt"
                                                                             else (2, 17, 3))
            assert first["ids"] == ("a,b" if fmt == "logfmt" else ["a", "b"])
            assert (json.loads(first["counts"]) if fmt == "logfmt" else first["counts"]) == {"joined": 4}
            assert first["secret"] == "***" and "none" not in first
            assert "s3cr3t" not in stream.getvalue()
            assert second["event"] == "plain message with spaces and = signs"
            assert third["logger"] == "aiokafka" and third["level"] == "warning"
        stream = io.StringIO()
        logs.configure("DEBUG", "logfmt", stream=stream)
        logging.getLogger("kafka.conn").info("connecting to node 1")
        assert parse_logfmt(stream.getvalue())["event"] == "connecting to node 1"
    finally:
        logs.reset()
        logging.getLogger().setLevel(logging.WARNING)


def test_the_broker_command_prints_its_address_first(tmp_path, test_env):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "driftline", "broker", "--port", str(port), "--topics"],
                            env=test_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = proc.stdout.readline()
        assert first == f"127.0.0.1:{port}\n"
    finally:
        proc.terminate()
        rest = proc.communicate(timeout=30)[0]
    assert "level=info" not in rest and " INFO " not in rest, rest  # nothing logged at INFO


def test_monitor_logs_one_line_per_alert_request_dead_letter_promotion_and_reload(settings, test_env, tmp_path):
    from driftline.registry import open_registry

    registry = open_registry(settings, publish=False)
    registry.create_model("churn", exist_ok=True)
    registry.set_policy("churn", Policy.from_dict({"monitor": {
        "window": 20, "warmup": 10, "metric_thresholds": {"accuracy": 0.9}, "retrain_on": ["metric"],
        "cooldown_s": 3600, "retrain_cooldown_s": 3600}}))
    registry.close()
    port = free_port()
    proc = _start(tmp_path, test_env, "monitor", "--metrics-port", str(port))
    log_path = tmp_path / "monitor.log"
    try:
        _wait_healthy(port, proc)
        now = time.time()
        predictions = [dict(event_id=f"e{i}", model="churn", model_version=1, timestamp=now, features={"x": i % 7},
                       prediction=1) for i in range(60)]
        labels = [dict(event_id=f"e{i}", model="churn", label=0, timestamp=now) for i in range(60)]  # all wrong
        producer = KafkaProducer(bootstrap_servers=settings.bootstrap_list, acks="all")
        for records, topic in ((predictions, settings.topics.predictions), (labels, settings.topics.labels)):
            for record in records:
                producer.send(topic, json.dumps(record).encode(), key=record["event_id"].encode())
        # a bulk message whose element 1 breaks the contract (no model)
        bulk = json.dumps([dict(predictions[0], event_id="b0"), {"event_id": "b1", "timestamp": now}]).encode()
        producer.send(settings.topics.predictions, bulk, key=b"b0", partition=partition_for("b0", 4))
        producer.flush()

        alerts = read_records(settings, "alerts", Alert, count=1, timeout_s=90)
        assert alerts
        wait_until(lambda: events_named(log_path.read_text(), "dead_letter")
                   and events_named(log_path.read_text(), "retrain_request"), what="dead letter and request lines")
        producer.send(settings.topics.model_events, events.encode(
            ModelEvent(event="promoted", model="churn", timestamp=time.time(), version=2, alias="champion")))
        producer.send(settings.topics.model_events, events.encode(
            ModelEvent(event="policy_changed", model="churn", timestamp=time.time())))
        producer.flush()
        producer.close()
        wait_until(lambda: events_named(log_path.read_text(), "policy_reloaded"), what="policy reload line")
    finally:
        stop(proc, 20)
    text = log_path.read_text()
    lines = structured_lines(text)  # every line parses as logfmt
    alerts = read_records(settings, "alerts", Alert, quiet_s=1)
    requests = read_records(settings, "retrain_requests", RetrainRequest, quiet_s=1)
    alert_lines = events_named(text, "alert")
    assert sorted(f["alert_id"] for f in alert_lines) == sorted(a.alert_id for a in alerts)
    assert {f["kind"] for f in alert_lines} == {"metric"} and alert_lines[0]["model"] == "churn"
    assert sorted(f["request_id"] for f in events_named(text, "retrain_request")) == sorted(
        r.request_id for r in requests)
    [dead] = events_named(text, "dead_letter")
    assert (dead["reason_class"], dead["topic"], dead["index"], dead["field"]) == (
        "invalid_field", settings.topics.predictions, "1", "model")
    assert dead["partition"] == str(partition_for("b0", 4)) and dead["offset"].isdigit()
    [promotion] = events_named(text, "promotion")
    assert (promotion["model"], promotion["version"], promotion["alias"]) == ("churn", "2", "champion")
    [reload] = events_named(text, "policy_reloaded")
    assert (reload["model"], reload["trigger"]) == ("churn", "policy_changed")
    assert not _client_info(lines), _client_info(lines)[:5]


def test_worker_logs_json_lines_with_one_dead_letter_line_per_bad_request(settings, test_env, tmp_path):
    env = dict(test_env, DRIFTLINE_LOG_FORMAT="json")
    log_path = tmp_path / "worker.log"
    with WorkerProcess(env, log_path) as worker:
        worker.wait_for_log('"event": "worker_started"')
        bad = json.dumps([{"request_id": "r1", "model": "churn", "reason": "manual", "timestamp": time.time()},
                          {"request_id": "r2", "model": "../etc", "reason": "manual",
                           "timestamp": time.time()}]).encode()
        publish_requests(settings, [bad])
        wait_until(lambda: events_named(worker.log(), "dead_letter", "json"), what="dead letter line")
        wait_until(lambda: events_named(worker.log(), "run_ended", "json"), what="run line")
        assert worker.terminate() == 0
    lines = structured_lines(log_path.read_text(), "json")  # every line is a JSON object
    [dead] = events_named(log_path.read_text(), "dead_letter", "json")
    assert (dead["reason_class"], dead["topic"], dead["partition"], dead["offset"], dead["index"], dead["field"]) \
        == ("invalid_field", settings.topics.retrain_requests, 0, 0, 1, "model")
    assert all(isinstance(f, dict) and {"ts", "level", "logger", "event"} <= set(f) for f in lines)
    assert not _client_info(lines), _client_info(lines)[:5]
