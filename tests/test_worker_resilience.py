"""Clear failures and the retry/log-limiting parts of the worker, in-process:
too few rows (worker runs and ``driftline train``), which errors are
"unreachable" and how they read, the broker watch's lines, the kafka-python
log limiter. The daemon under real faults is in test_worker_faults.py."""

from __future__ import annotations

import logging
import time

import pandas as pd
import pytest

from driftline.broker import free_port
from driftline.cli import main as cli_main
from driftline.config import load_settings
from driftline.events import ModelEvent
from driftline.registry import open_registry
from driftline.registry.errors import PublishError, RegistryError
from driftline.retrain.data import build_frame
from driftline.retrain.resilience import KafkaLogLimiter, RetryPolicy, Unavailable, broker_watch, safe_url, unavailable
from driftline.retrain.trainer import RunError, Trainer, train_frame

from .kafka_helpers import read_records
from .worker_helpers import make_records, publish_records


def _frame(records):
    return pd.DataFrame([{**r.features, "label": r.label} for r in records])


def test_empty_and_tiny_windows_fail_with_too_few_rows(settings):
    reg = open_registry(settings, publish=True)
    try:
        train_frame(reg, "thin", _frame(make_records("thin", 60, seed=1)), "label", estimator="logistic_regression")
        assert len(build_frame([])) == 0  # an empty window is a frame of 0 rows, not a numpy casting error
        trainer = Trainer(settings, reg)
        trainer.reader.quiet_ms = 300
        empty = trainer.run("thin", ["e-1"], "drift")
        publish_records(settings, make_records("thin", 7, seed=2))
        tiny = trainer.run("thin", ["e-2"], "drift")
    finally:
        reg.close()
    assert (empty.outcome, tiny.outcome) == ("failed", "failed")
    assert empty.reason.startswith("too few rows (got 0, need 200): 0 usable of 0 read from "), empty.reason
    assert tiny.reason.startswith("too few rows (got 7, need 200): 7 usable of 7 read from "), tiny.reason
    events_ = read_records(settings, "model_events", ModelEvent, quiet_s=1.0,
                           until=lambda msgs: sum(b'"failed"' in m.value for m in msgs) >= 2)
    failed = {e.request_id: e.reason for e in events_ if e.event == "failed"}
    assert failed == {"e-1": empty.reason, "e-2": tiny.reason}


def test_train_refuses_an_empty_or_tiny_table(settings, test_env, tmp_path, monkeypatch, capsys):
    for key, value in test_env.items():
        if key.startswith("DRIFTLINE_"):
            monkeypatch.setenv(key, value)
    header_only = tmp_path / "empty.csv"
    header_only.write_text("x1,x2,label\n")
    tiny = tmp_path / "tiny.csv"
    _frame(make_records("m", 6, seed=4)).to_csv(tiny, index=False)
    assert cli_main(["train", "m", "--data", str(header_only), "--target", "label"]) == 1
    assert "driftline: error: too few rows (got 0, need 10): 0 read" in capsys.readouterr().err
    assert cli_main(["train", "m", "--data", str(tiny), "--target", "label"]) == 1
    assert "driftline: error: too few rows (got 6, need 10): 6 read" in capsys.readouterr().err
    with open_registry(settings) as reg:
        assert reg.list_models() == []  # nothing was created for data that cannot train
        with pytest.raises(RunError, match=r"too few rows \(got 9, need 10\)"):
            frame = _frame(make_records("m", 10, seed=5))
            frame.loc[0, "label"] = None  # one row dropped by cleaning: 9 left
            train_frame(reg, "m", frame, "label")


def test_retry_policy_and_safe_urls():
    assert RetryPolicy(5, 2.0, 30.0).delays() == [2.0, 4.0, 8.0, 16.0]
    assert RetryPolicy(6, 0.5, 1.5).delays() == [0.5, 1.0, 1.5, 1.5, 1.5]
    assert RetryPolicy(1, 1.0, 1.0).delays() == []
    with pytest.raises(ValueError, match="--retry-attempts must be at least 1"):
        RetryPolicy(0).check()
    with pytest.raises(ValueError, match="--retry-max-backoff-s must be at least --retry-backoff-s"):
        RetryPolicy(3, 5.0, 1.0).check()
    assert safe_url("postgresql://u:pw@h:5432/db?options=-csearch_path%3Dx&password=pw") == "postgresql://h:5432/db"
    assert safe_url("postgresql+psycopg://h/db") == "postgresql://h/db"
    assert safe_url("host=h password=pw") == "<registry database>"


def test_retry_options_are_checked_at_start_up():
    from driftline.retrain.worker import WorkerConfigError, WorkerOptions

    WorkerOptions(retry_attempts=1, retry_backoff_s=0.0, retry_max_backoff_s=0.0).check()
    for options, message in [
        (WorkerOptions(retry_attempts=0), r"--retry-attempts must be at least 1 \(got 0\)"),
        (WorkerOptions(retry_backoff_s=-1.0), r"--retry-backoff-s must be 0 or more \(got -1.0\)"),
        (WorkerOptions(retry_backoff_s=5.0, retry_max_backoff_s=1.0), r"--retry-max-backoff-s must be at least"),
        (WorkerOptions(publish_timeout_s=0.0), r"--publish-timeout-s must be above 0"),
        (WorkerOptions(broker_log_interval_s=0.0), r"--broker-log-interval-s must be above 0"),
    ]:
        with pytest.raises(WorkerConfigError, match=message):
            options.check()


def test_unreachable_dependencies_read_as_one_line_without_secrets():
    import psycopg

    port = free_port()
    url = f"postgresql://app:s3cret@127.0.0.1:{port}/reg?options=-csearch_path%3Dx"
    settings = load_settings(environ={}, bootstrap_servers=f"127.0.0.1:{free_port()}", registry=url,
                             registry_artifacts="/tmp/none")
    try:
        psycopg.connect(url, connect_timeout=3)
    except psycopg.OperationalError as error:
        raw = error
    down = unavailable(raw, settings)
    assert str(down) == f"registry unreachable at postgresql://127.0.0.1:{port}/reg: connection refused"
    assert down.what == "registry" and "s3cret" not in str(down)
    try:  # what the registry raises when it cannot connect: the driver error is its context
        try:
            raise raw
        except psycopg.OperationalError:
            raise RegistryError("cannot connect to the registry database") from None
    except RegistryError as wrapped:
        assert str(unavailable(wrapped, settings)) == str(down)
    from kafka.errors import KafkaTimeoutError

    try:
        try:
            raise KafkaTimeoutError("Timeout after waiting for 2000 ms")
        except KafkaTimeoutError as cause:
            raise PublishError("the registry change was saved, but ...") from cause
    except PublishError as error:
        broker = unavailable(error, settings)
    assert broker.what == "broker"
    assert str(broker) == (f"broker unreachable at {settings.bootstrap_servers}: "
                           "KafkaTimeoutError (Timeout after waiting for 2000 ms)")
    assert isinstance(broker, Unavailable)
    # a run's own failures are not "unreachable": they are not retried
    assert unavailable(RunError("too few rows (got 0, need 200)"), settings) is None
    assert unavailable(ValueError("bad"), settings) is None
    assert unavailable(RegistryError("model 'x' is not registered"), settings) is None


def test_broker_watch_says_down_once_then_once_per_interval_then_up(caplog):
    answers = iter([True, False, False, False, False, True, True])
    watch = broker_watch(["h:1"], interval_s=0.3, reachable=lambda server: next(answers))
    caplog.set_level(logging.INFO, logger="driftline.retrain.worker")
    watch.check()                     # up: nothing to say
    watch.check(); watch.check()      # down: one warning
    assert watch.down
    time.sleep(0.35)
    watch.check(); watch.check()      # still down after the interval: one reminder
    watch.check(); watch.check()      # back: one line
    lines = [r.getMessage().split()[0] for r in caplog.records if r.name == "driftline.retrain.worker"]
    assert lines == ["event=broker_down", "event=broker_still_down", "event=broker_up"]
    assert not watch.down
    assert "down_s=0.3" in caplog.records[-2].getMessage() or "down_s=0.4" in caplog.records[-2].getMessage()


def test_kafka_log_limiter_lets_one_line_through_per_interval():
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(self.format(record))

    handler = Keep()
    handler.addFilter(KafkaLogLimiter(interval_s=0.3))
    kafka_log = logging.getLogger("kafka.net.connection.test")
    kafka_log.setLevel(logging.INFO)  # CLI commands run in-process before may have silenced "kafka"
    ours = logging.getLogger("driftline.retrain.worker.test")
    for log in (kafka_log, ours):
        log.addHandler(handler)
        log.propagate = False
    try:
        for i in range(50):
            kafka_log.error("Connection failed: %s", i)
        ours.warning("our own line")
        time.sleep(0.35)
        try:
            raise ConnectionRefusedError("refused")
        except ConnectionRefusedError:
            kafka_log.exception("Connect attempt failed")
    finally:
        for log in (kafka_log, ours):
            log.removeHandler(handler)
            log.propagate = True
    assert seen[:2] == ["Connection failed: 0", "our own line"]
    assert len(seen) == 3 and "\n" not in seen[2]  # no traceback
    assert seen[2].startswith("Connect attempt failed [ConnectionRefusedError: refused] (49 more kafka-python lines")


def test_an_unreachable_registry_at_start_up_is_retried_then_named_without_its_password(test_env, tmp_path):
    import subprocess
    import sys

    from .worker_helpers import ROOT

    port = free_port()
    env = {**test_env, "DRIFTLINE_REGISTRY": f"postgresql://app:s3cret@127.0.0.1:{port}/reg?password=s3cret",
           "DRIFTLINE_REGISTRY_ARTIFACTS": str(tmp_path / "artifacts")}
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "driftline.retrain", "--retry-attempts", "3", "--retry-backoff-s", "0.3",
                           "--status-file", str(tmp_path / "status.json")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"driftline: error: cannot open the registry postgresql://127.0.0.1:{port}/reg: "
        "connection refused after 3 attempts")
    assert done.stderr.count("event=registry_unreachable") == 2  # tries 1 and 2; the third gives up
    assert "s3cret" not in done.stderr and time.monotonic() - began >= 0.9  # 0.3 + 0.6 s of back-off
