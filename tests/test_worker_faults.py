"""Nothing lost, whatever fails: the worker as a real process while its
PostgreSQL registry (through :class:`tests.fault_helpers.TcpProxy`) or its
broker (a dedicated embedded tansu, restarted on the same port) goes away.

Short retry back-offs through the worker's options keep these fast.
"""

from __future__ import annotations

import os
import re
import time
from urllib.parse import urlsplit

import pandas as pd
import pytest

from driftline.broker import EmbeddedBroker, free_port
from driftline.config import load_settings
from driftline.events import ModelEvent
from driftline.topics import create_topics
from driftline.registry import open_registry
from driftline.retrain.trainer import train_frame

from .fault_helpers import TcpProxy
from .kafka_helpers import read_records
from .registry_fixtures import PG_URL, postgres_unreachable, registry_settings_for
from .test_worker_daemon import _committed, _seed, _versions
from .worker_helpers import WorkerProcess, make_records, publish_records, publish_requests, read_status, request, \
    wait_until

OUTCOMES = ("promoted", "rejected", "failed")
#: 7 tries, pauses 0.5 + 1 + 4 x 1.5 = 7.5 s: an outage of ~3 s is ridden out, one of 15 s is not
RETRY = ["--retry-attempts", "7", "--retry-backoff-s", "0.5", "--retry-max-backoff-s", "1.5"]


def _outcomes(settings, request_id, quiet_s=1.0, **kwargs) -> list[ModelEvent]:
    events_ = read_records(settings, "model_events", ModelEvent, quiet_s=quiet_s, **kwargs)
    return [e for e in events_ if e.request_id == request_id and e.event in OUTCOMES]


def _wait_outcome(settings, request_id, timeout=90) -> list[ModelEvent]:
    """Every outcome event of ``request_id`` once there is one (plus 1 s, so
    a duplicate sent right after would be seen too)."""
    marker = f'"{request_id}"'.encode()
    read_records(settings, "model_events", ModelEvent, quiet_s=timeout, timeout_s=timeout,
                 until=lambda msgs: any(marker in m.value and any(f'"{k}"'.encode() in m.value for k in OUTCOMES)
                                        for m in msgs))
    time.sleep(1)
    found = _outcomes(settings, request_id)
    assert found, f"no outcome event for {request_id} within {timeout}s"
    return found


@pytest.fixture
def pg_registry(settings, tmp_path, request):
    """(proxy, settings with the registry reached directly, worker env with
    the registry reached through the proxy) — a fresh PostgreSQL schema."""
    reason = postgres_unreachable()
    if reason:
        pytest.skip(reason)
    direct = registry_settings_for("postgres", tmp_path, base=settings, request=request)
    target = urlsplit(PG_URL)
    proxy = TcpProxy(target.hostname, target.port or 5432).start()
    proxied = direct.registry.replace(f"@{target.hostname}:{target.port or 5432}/", f"@127.0.0.1:{proxy.port}/", 1)
    assert proxied != direct.registry
    yield proxy, direct, proxied
    proxy.stop()


def _env(test_env, direct, proxied):
    return {**test_env, "DRIFTLINE_REGISTRY": proxied, "DRIFTLINE_REGISTRY_ARTIFACTS": direct.registry_artifacts}


def test_registry_outage_is_retried_failed_readably_and_redelivered_after_restart(settings, test_env, tmp_path,
                                                                                pg_registry):
    proxy, direct, proxied = pg_registry
    _seed(direct, policy={"retrain": {"estimator": "logistic_regression", "debounce_s": 0.0}})
    env = _env(test_env, direct, proxied)
    status = ["--status-file", str(tmp_path / "status.json")]
    with WorkerProcess(env, tmp_path / "first.log", *RETRY, *status) as worker:
        worker.wait_for_log("event=worker_started")

        # 1. the registry goes away before the worker's first run, for less than the retries last
        proxy.stop()
        publish_requests(settings, [request("churn", "o-1", "drift")])
        worker.wait_for_log('event=run_retry model=churn request_ids=o-1 attempt=1', timeout=60)
        assert (_committed(settings, "wtest") or 0) == 0  # no outcome yet: not committed past it
        assert _outcomes(settings, "o-1") == []
        proxy.start()
        first = _wait_outcome(settings, "o-1")
        assert [(e.event, e.version) for e in first] == [("promoted", 2)]
        wait_until(lambda: _committed(settings, "wtest") == 1, timeout=30, what="offset 1 committed")

        # 2. an outage longer than the retries: a failed event with a readable reason
        proxy.stop()
        began = time.monotonic()
        publish_requests(settings, [request("churn", "o-2", "drift")])
        second = _wait_outcome(settings, "o-2")
        assert [e.event for e in second] == ["failed"]
        reason = second[0].reason
        assert re.fullmatch(rf"registry unreachable at postgresql://127\.0\.0\.1:{proxy.port}/test: "
                            r"connection refused after 7 attempts over \d+ s", reason), reason
        spent = int(reason.rsplit(" over ", 1)[1].split()[0])
        assert 7 <= spent <= time.monotonic() - began  # 7.5 s of back-off
        wait_until(lambda: _committed(settings, "wtest") == 2, timeout=30, what="offset 2 committed")

        # 3. killed while retrying: the request stays uncommitted...
        publish_requests(settings, [request("churn", "o-3", "drift")])
        worker.wait_for_log('event=run_retry model=churn request_ids=o-3 attempt=1', timeout=60)
        worker.kill9()
    assert _committed(settings, "wtest") == 2
    assert _outcomes(settings, "o-3") == []
    # ...and is processed after a restart once the registry is back
    proxy.start()
    with WorkerProcess(env, tmp_path / "second.log", *RETRY, *status) as again:
        third = _wait_outcome(settings, "o-3", timeout=120)
        assert [e.event for e in third] in (["promoted"], ["rejected"])
        wait_until(lambda: _committed(settings, "wtest") == 3, timeout=30, what="offset 3 committed")
        assert again.terminate() == 0
    by_request = [v.request_id for v in _versions(direct, "churn")]
    assert by_request == [None, "o-1", "o-3"]  # each registered once, none for the failed o-2
    assert "Traceback" not in worker.log() and "psycopg" not in worker.log()


def test_registry_reset_during_a_run_is_retried_to_one_version(settings, test_env, tmp_path, pg_registry):
    proxy, direct, proxied = pg_registry
    _seed(direct, policy={"retrain": {"estimator": "logistic_regression", "debounce_s": 0.0}})
    status_file = tmp_path / "status.json"
    with WorkerProcess(_env(test_env, direct, proxied), tmp_path / "worker.log", *RETRY,
                       "--status-file", str(status_file), pause_s=3) as worker:
        worker.wait_for_log("event=worker_started")
        publish_requests(settings, [request("churn", "r-1", "drift")])
        wait_until(lambda: any(a.get("phase") == "paused" for a in read_status(status_file).get("active", [])),
                   timeout=60, what="run paused before fitting")
        assert proxy.stop() >= 1  # the run's live connection is reset, new ones refused
        worker.wait_for_log('event=run_retry model=churn request_ids=r-1', timeout=30)
        assert (_committed(settings, "wtest") or 0) == 0
        proxy.start()
        outcome = _wait_outcome(settings, "r-1")
        assert [(e.event, e.version) for e in outcome] == [("promoted", 2)]
        wait_until(lambda: _committed(settings, "wtest") == 1, timeout=30, what="offset 1 committed")
        assert worker.terminate() == 0
    versions = _versions(direct, "churn")
    assert [(v.version, v.request_id) for v in versions] == [(1, None), (2, "r-1")]
    assert versions[1].aliases == ["champion"]


def _on(broker, tmp_path, topic_prefix):
    """Settings and child environment for a test's own broker."""
    settings = load_settings(environ={}, bootstrap_servers=broker.bootstrap_servers, topic_prefix=topic_prefix,
                             registry=str(tmp_path / "registry"))
    create_topics(settings, partitions=4)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update(DRIFTLINE_BOOTSTRAP_SERVERS=settings.bootstrap_servers, DRIFTLINE_TOPIC_PREFIX=topic_prefix,
               DRIFTLINE_REGISTRY=settings.registry, PYTHONUNBUFFERED="1")
    return settings, env


def test_broker_restart_on_the_same_port_under_a_running_worker(tmp_path, topic_prefix):
    from driftline.registry.publish import EventPublisher

    broker = EmbeddedBroker(port=free_port()).start()
    publisher = None
    try:
        settings, env = _on(broker, tmp_path, topic_prefix)
        _seed(settings, policy={"retrain": {"estimator": "logistic_regression", "debounce_s": 0.0}})
        reg = open_registry(settings, publish=True)
        try:  # a model without labeled data: its runs fail, and the worker publishes that itself
            reg.set_policy("thin", {"retrain": {"estimator": "logistic_regression", "debounce_s": 0.0}})
            train_frame(reg, "thin", pd.DataFrame([{**r.features, "label": r.label}
                                                   for r in make_records("thin", 50, seed=3)]), "label")
        finally:
            reg.close()
        publisher = EventPublisher(settings, timeout_s=20)  # an idempotent producer that lives through the reset
        publisher.publish(ModelEvent(event="failed", model="probe", timestamp=time.time(), reason="before"))
        with WorkerProcess(env, tmp_path / "worker.log", "--retry-backoff-s", "0.5", "--retry-max-backoff-s", "2",
                           "--publish-timeout-s", "10") as worker:
            worker.wait_for_log("event=worker_started")
            publish_requests(settings, [request("churn", "b-1", "drift"), request("thin", "t-1")])
            assert [e.event for e in _wait_outcome(settings, "b-1")] == ["promoted"]
            assert [e.event for e in _wait_outcome(settings, "t-1")] == ["failed"]
            wait_until(lambda: _committed(settings, "wtest") == 2, timeout=30, what="offset 2 committed")

            before = len(worker.log().splitlines())
            broker.stop()
            time.sleep(10)
            during = worker.log().splitlines()[before:]
            broker.start()
            create_topics(settings, partitions=4)  # tansu kept nothing
            assert worker.proc.poll() is None, worker.log()[-3000:]
            assert sum("event=broker_down" in line for line in during) == 1, during
            assert len(during) <= 10, "\n".join(during)

            # the same producer objects keep working: a new producer id after UnknownProducerIdError
            publisher.publish(ModelEvent(event="failed", model="probe", timestamp=time.time(), reason="after"))
            publish_records(settings, make_records("churn", 400, seed=13))
            publish_requests(settings, [request("churn", "b-2", "drift"), request("thin", "t-2")])
            assert [e.event for e in _wait_outcome(settings, "b-2", timeout=120)] in (["promoted"], ["rejected"])
            failed = _wait_outcome(settings, "t-2")
            assert [e.event for e in failed] == ["failed"]
            assert failed[0].reason.startswith("too few rows (got 0, need 200)"), failed[0].reason
            worker.wait_for_log("event=broker_up", timeout=10)
            assert worker.terminate() == 0
        log = worker.log()
        assert "Traceback" not in log, log[-3000:]
        probes = [e.reason for e in read_records(settings, "model_events", ModelEvent, quiet_s=1.0)
                  if e.model == "probe"]
        assert probes == ["after"]  # the broker forgot "before"; "after" got through
    finally:
        if publisher is not None:
            publisher.close()
        broker.stop()


def test_an_outcome_the_broker_cannot_take_keeps_the_request_open_until_it_is_back(tmp_path, topic_prefix):
    broker = EmbeddedBroker(port=free_port()).start()
    try:
        settings, env = _on(broker, tmp_path, topic_prefix)
        _seed(settings, policy={"retrain": {"estimator": "logistic_regression", "debounce_s": 0.0}})
        status_file = tmp_path / "registry" / "worker-status.json"
        with WorkerProcess(env, tmp_path / "worker.log", "--retry-attempts", "2", "--retry-backoff-s", "0.5",
                           "--retry-max-backoff-s", "3", "--publish-timeout-s", "2", pause_s=3) as worker:
            worker.wait_for_log("event=worker_started")
            publish_requests(settings, [request("churn", "p-1", "drift")])
            wait_until(lambda: any(a.get("phase") == "paused" for a in read_status(status_file).get("active", [])),
                       timeout=60, what="run paused before fitting")
            broker.stop()
            # registered and promoted in the registry, but neither event can get out
            worker.wait_for_log('event=run_postponed model=churn request_ids=p-1', timeout=60)
            assert [(v.version, v.request_id) for v in _versions(settings, "churn")] == [(1, None), (2, "p-1")]
            assert worker.proc.poll() is None
            broker.start()
            create_topics(settings, partitions=4)  # tansu kept nothing: only what is delivered from now on counts
            outcome = _wait_outcome(settings, "p-1", timeout=90)
            assert [(e.event, e.version, e.details.get("republished")) for e in outcome] == [("promoted", 2, True)]
            assert worker.terminate() == 0
        versions = _versions(settings, "churn")
        assert [(v.version, v.request_id) for v in versions] == [(1, None), (2, "p-1")]
        assert versions[1].aliases == ["champion"]
        assert "Traceback" not in worker.log()
    finally:
        broker.stop()
