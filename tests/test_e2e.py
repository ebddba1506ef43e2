"""The whole loop through a real broker with the monitor and the worker as
separate OS processes: an injected concept drift produces an alert, a retrain
request, a new promoted version in the registry and a model event, and the
monitor then scores the new version. Both /metrics endpoints are scraped.
After the drift two features the labels do not depend on shift too (a data
drift), and ``driftline report`` is checked on the finished run
(tests/test_report.py)."""

from __future__ import annotations

import itertools
import time

import pandas as pd
import pytest

from driftline import events
from driftline.broker import free_port
from driftline.demo import FEATURES, Daemon, agrawal_frame, agrawal_rows, scrape_metrics
from driftline.events import Alert, MetricsSnapshot, ModelEvent, RetrainRequest
from driftline.policy import Policy
from driftline.sdk import Publisher
from tests import prometheus_checks
from tests.kafka_helpers import read_records
from tests.test_report import check_report_of_run

MODEL = "agrawal"
POLICY = {
    "monitor": {"window": 300, "warmup": 200, "cooldown_s": 60, "concept_drift": "adwin",
                "metric_thresholds": {"accuracy": 0.8}, "retrain_on": ["concept_drift", "metric"],
                "retrain_cooldown_s": 120, "label_ttl_s": 300},
    # The run starts 5 s after the first request and trains on the newest
    # 800 joined pairs: by then those are all from after the drift.
    "retrain": {"window_rows": 800, "min_rows": 300, "debounce_s": 5, "estimator": "gradient_boosting",
                "promotion_metric": "accuracy", "margin": 0.05},
}
PRE, POST, AFTER = 1500, 1500, 600
#: Agrawal's functions 0 and 2 read age and elevel only: shifting home years
#: and the loan changes the inputs' distribution (data drift), not the labels.
SHIFTED = {"hyears": lambda v: v + 15, "loan": lambda v: v * 1.6}


def shifted(rows):
    return [({k: SHIFTED[k](v) if k in SHIFTED else v for k, v in x.items()}, y) for x, y in rows]


GRACE_S = 5  # seconds a retired version keeps its Prometheus series


def publish_garbage(settings, topic):
    """One message that is not JSON: the daemon reading ``topic`` dead-letters it
    (driftline_dead_letters_total)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_list)
    producer.send(topic, key=b"garbage", value=b"this is not json")
    producer.flush()
    producer.close()


def publish(settings, estimator, version, rows, prefix):
    """Predict with ``estimator`` and publish predictions, then labels."""
    frame = pd.DataFrame([x for x, _ in rows], columns=list(FEATURES))
    predicted = estimator.predict(frame)
    ids = [f"{prefix}-{i}" for i in range(len(rows))]
    with Publisher(settings) as publisher:
        publisher.publish_predictions([
            {"event_id": i, "model": MODEL, "model_version": version, "timestamp": events.now(), "features": x,
             "prediction": int(p), "latency_ms": 1.0} for i, (x, _), p in zip(ids, rows, predicted)])
        publisher.flush()
        publisher.publish_labels([{"event_id": i, "model": MODEL, "label": y, "timestamp": events.now()}
                                  for i, (_, y) in zip(ids, rows)])
    return sum(int(p) == y for p, (_, y) in zip(predicted, rows)) / len(rows)


def snapshot_for(version, joined_at_least):
    def done(messages):
        for message in messages:
            for snap in events.decode(MetricsSnapshot, message.value):
                if snap.model_version == version and snap.stats.get("joined", 0) >= joined_at_least:
                    return True
        return False
    return done


def latest_snapshot(settings, version):
    snaps = [s for s in read_records(settings, "metrics", MetricsSnapshot, quiet_s=1, timeout_s=10)
             if s.model_version == version]
    return max(snaps, key=lambda s: s.stats.get("joined", 0))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_drift_to_alert_to_retrain_to_promotion_and_monitoring_of_the_new_version(settings, test_env, tmp_path):
    from driftline.registry import open_registry
    from driftline.retrain.trainer import train_frame

    with open_registry(settings, publish=True) as reg:
        reg.create_model(MODEL)
        reg.set_policy(MODEL, Policy.from_dict(POLICY))
        v1 = train_frame(reg, MODEL, agrawal_frame(0, 1500, seed=100), "label")
        assert v1.version == 1
        champion = reg.load(f"{MODEL}@champion")

    ports = {"monitor": free_port(), "worker": free_port()}
    daemons = []
    try:
        daemons.append(Daemon("monitor", ["monitor", "--metrics-port", str(ports["monitor"]), "--data-dir",
                                          str(tmp_path / "monitor"), "--snapshot-interval", "1",
                                          "--session-timeout", "6", "--series-grace-s", str(GRACE_S)],
                                  test_env, tmp_path / "monitor.log"))
        daemons.append(Daemon("worker", ["worker", "--metrics-port", str(ports["worker"]), "--session-timeout-ms",
                                         "6000", "--heartbeat-interval-ms", "1000", "--quiet-ms", "500",
                                         "--shutdown-grace-s", "5"], test_env, tmp_path / "worker.log"))

        # 1. before the drift: version 1 is right, the monitor scores it and stays quiet
        before = list(itertools.islice(agrawal_rows(0, seed=1), PRE))
        assert publish(settings, champion.estimator, 1, before, "pre") > 0.95
        read_records(settings, "metrics", MetricsSnapshot, until=snapshot_for(1, PRE), timeout_s=90)
        publish_garbage(settings, settings.topics.predictions)
        assert read_records(settings, "alerts", Alert, quiet_s=1, timeout_s=5) == []
        assert read_records(settings, "retrain_requests", RetrainRequest, quiet_s=1, timeout_s=5) == []

        # 2. the drift: the labels switch to Agrawal's function 2, version 1 drops to ~coin flip
        after = shifted(itertools.islice(agrawal_rows(2, seed=2), POST))
        assert publish(settings, champion.estimator, 1, after, "post") < 0.65

        def performance_alert(messages):
            return any(a.kind in ("concept_drift", "metric") for m in messages for a in events.decode(Alert, m.value))

        alerts = read_records(settings, "alerts", Alert, until=performance_alert, timeout_s=60)
        assert {a.model for a in alerts} == {MODEL}
        assert {a.kind for a in alerts} & {"concept_drift", "metric"}
        assert all(a.model_version == 1 for a in alerts)

        requests = read_records(settings, "retrain_requests", RetrainRequest, until=lambda m: len(m) > 0,
                                timeout_s=60)
        # version 1 with its drift statistics: the prediction test (self-referenced
        # here: the profile holds the predictions as numbers) has a statistic once
        # every prediction of version 1 is processed
        deadline = time.monotonic() + 30
        families_v1 = prometheus_checks.scrape(ports["monitor"])
        while "driftline_prediction_drift_statistic" not in families_v1 and time.monotonic() < deadline:
            time.sleep(0.5)
            families_v1 = prometheus_checks.scrape(ports["monitor"])
        assert prometheus_checks.versions_of(families_v1, MODEL) == {"1"}
        assert requests[0].model == MODEL and requests[0].reason in ("drift", "metric")
        assert set(requests[0].alert_ids) <= {a.alert_id for a in alerts} and requests[0].alert_ids

        def promoted(messages):
            return any(e.event == "promoted" and e.version == 2
                       for m in messages for e in events.decode(ModelEvent, m.value))

        model_events = read_records(settings, "model_events", ModelEvent, until=promoted, timeout_s=120)
        promotion = next(e for e in model_events if e.event == "promoted" and e.version == 2)
        request_ids = {r.request_id for r in requests}
        assert promotion.model == MODEL and promotion.request_id in request_ids
        assert promotion.metrics["candidate_accuracy"] > promotion.metrics["champion_accuracy"] + 0.05

        with open_registry(settings, publish=False) as reg:
            new = reg.resolve(f"{MODEL}@champion")
            assert new.version == 2 and new.status == "ready"
            assert new.request_id in request_ids and new.lineage["parent_version"] == 1
            loaded = reg.load(f"{MODEL}@champion")

        # 3. serving switches to version 2; the monitor scores the new version
        later = shifted(itertools.islice(agrawal_rows(2, seed=3), AFTER))
        served = publish(settings, loaded.estimator, 2, later, "v2")
        assert served > 0.9
        read_records(settings, "metrics", MetricsSnapshot, until=snapshot_for(2, AFTER), timeout_s=90)
        snap = latest_snapshot(settings, 2)
        assert snap.stats["joined"] == AFTER
        assert snap.cumulative["accuracy"] == pytest.approx(served)  # exactly what serving saw

        # 4. Prometheus: both daemons expose what happened
        monitor = scrape_metrics(ports["monitor"])
        worker = scrape_metrics(ports["worker"])
        assert monitor['driftline_events_processed_total{component="monitor",kind="joined"}'] == PRE + POST + AFTER
        assert monitor['driftline_events_processed_total{component="monitor",kind="input_message"}'] >= 2 * (
            PRE + POST + AFTER) / 1000  # (bulk messages hold at most 1,000 events)
        for stage in ("join", "models"):
            assert monitor[f'driftline_monitor_cpu_seconds_total{{stage="{stage}"}}'] > 0
        all_alerts = read_records(settings, "alerts", Alert, quiet_s=1, timeout_s=10)
        assert {a.subject for a in all_alerts if a.kind == "data_drift"} == set(SHIFTED)
        assert sum(v for k, v in monitor.items() if k.startswith("driftline_alerts_total")) == len(all_alerts)
        assert monitor[f'driftline_model_accuracy{{model="{MODEL}",version="2",window="cumulative"}}'] \
            == pytest.approx(served)
        assert worker[f'driftline_retrain_runs_total{{model="{MODEL}",outcome="promoted"}}'] == 1
        assert worker[f'driftline_retrain_duration_seconds_count{{model="{MODEL}"}}'] == 1
        assert worker['driftline_events_processed_total{component="worker",kind="retrain_request"}'] >= 1
        lag = {k: v for k, v in worker.items() if k.startswith('driftline_consumer_lag{component="worker"')}
        assert len(lag) == 4 and all(settings.topics.retrain_requests in k for k in lag)  # one per partition

        # 5. the README's table, the dashboard and the alert rules against the live series
        publish_garbage(settings, settings.topics.retrain_requests)  # last: the test reads that topic above
        deadline = time.monotonic() + 30
        families_worker = prometheus_checks.scrape(ports["worker"])
        while "driftline_dead_letters_total" not in families_worker and time.monotonic() < deadline:
            time.sleep(0.5)
            families_worker = prometheus_checks.scrape(ports["worker"])
        families_end = prometheus_checks.scrape(ports["monitor"])
        families_monitor = {name: families_v1.get(name, []) + families_end.get(name, [])
                            for name in set(families_v1) | set(families_end)}
        assert prometheus_checks.undocumented_or_missing(families_monitor, families_worker) == []
        lag_topics = {s["topic"] for s in families_monitor["driftline_consumer_lag"] if s["component"] == "monitor"}
        assert {settings.topics.predictions, settings.topics.labels} < lag_topics  # stage 1 ...
        assert any(t.endswith("-observations") for t in lag_topics)  # ... and stage 2
        assert {s["reason"] for s in families_worker["driftline_dead_letters_total"]} == {"unreadable"}
        everything = {**families_worker, **families_monitor}
        optional = {row.name: [dict.fromkeys(row.labels, "x")] for row in prometheus_checks.readme_series()
                    if prometheus_checks.optional(row)}  # regression series: documented, not in this run
        exprs = prometheus_checks.dashboard_exprs() + prometheus_checks.rules_exprs()
        assert prometheus_checks.unexported(exprs, {**optional, **everything}) == []

        # 6. version 1 is no longer served: its series go after the grace period, version 2's stay
        deadline = time.monotonic() + 60
        while prometheus_checks.versions_of(families_end, MODEL) != {"2"} and time.monotonic() < deadline:
            time.sleep(0.5)
            families_end = prometheus_checks.scrape(ports["monitor"])
        assert prometheus_checks.versions_of(families_end, MODEL) == {"2"}
        serving = [s for s in families_end["driftline_model_serving_version"] if s["model"] == MODEL]
        assert serving == [{"model": MODEL}]
        assert scrape_metrics(ports["monitor"])[f'driftline_model_serving_version{{model="{MODEL}"}}'] == 2
    except BaseException:
        for daemon in daemons:  # shown by pytest with the failure
            print(f"---- {daemon.name} log (last lines) ----\n{daemon.tail(60)}")
        raise
    finally:
        for daemon in daemons:
            daemon.terminate()
        for daemon in daemons:
            daemon.stop()
    for daemon in daemons:
        assert not daemon.running

    # 5. the report of the run names the shifted features and both versions
    check_report_of_run(test_env, tmp_path / "report", MODEL, drifted=set(SHIFTED), versions={1, 2})
