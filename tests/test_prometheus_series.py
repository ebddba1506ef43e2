"""Prometheus series without processes: the retirement rule of a version's
series (explicit clock), the per-version series of a real ModelMonitor's
snapshot against the README's table, and the dashboard and alert rules
loading and querying only documented series and labels. The live check
(both daemons scraped after a real run, retirement after a promotion) is
in tests/test_e2e.py."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from driftline.events import MetricsSnapshot
from driftline.model_series import ModelSeries
from tests import prometheus_checks as checks


def _snap(version, last_seen, model="churn"):
    return MetricsSnapshot(model, version, last_seen, {"accuracy": 0.9}, {"accuracy": 0.8},
                           {"predictions": 5, "joined": 4, "last_seen": last_seen, "label_coverage": 0.5})


def _versions(series, now):
    return [(s.model, s.model_version) for s in series.live(now)]


def test_a_version_no_longer_served_loses_its_series_after_the_grace_period():
    series = ModelSeries(grace_s=30)
    series.update("churn", [_snap(1, 100.0)])
    series.update("other", [_snap(1, 100.0, "other")])
    assert _versions(series, 1000.0) == [("churn", 1), ("other", 1)]  # a quiet only version stays
    series.update("churn", [_snap(1, 100.0), _snap(2, 120.0)])  # version 2 promoted and served
    assert _versions(series, 129.0) == [("churn", 1), ("churn", 2), ("other", 1)]
    assert _versions(series, 130.0) == [("churn", 1), ("churn", 2), ("other", 1)]  # exactly the grace: kept
    assert _versions(series, 130.5) == [("churn", 2), ("other", 1)]
    series.update("churn", [_snap(1, 131.0), _snap(2, 120.0)])  # traffic for version 1 again (a rollback)
    assert _versions(series, 131.0) == [("churn", 1), ("churn", 2), ("other", 1)]
    assert _versions(series, 160.5) == [("churn", 1), ("other", 1)]
    series.forget("churn")
    assert _versions(series, 160.5) == [("other", 1)]
    with pytest.raises(ValueError, match="grace_s"):
        ModelSeries(grace_s=-1)


def _families(series):
    registry = CollectorRegistry()
    registry.register(series)
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        name = family.name + "_total" if family.type == "counter" else family.name
        out[name] = [s.labels for s in family.samples if not s.name.endswith("_created")]
    return out


def test_a_real_monitor_snapshot_exports_the_documented_series_with_its_values():
    from driftline.events import LabeledRecord, Prediction
    from driftline.policy import MonitorPolicy
    from driftline.streams.model_monitor import ModelMonitor

    rng = np.random.default_rng(5)
    policy = MonitorPolicy(task="classification", warmup=50, drift_window=100, window=100)
    profile = {"features": {"x": {"type": "numeric", "count": 5000,
                                  "quantiles": np.quantile(rng.normal(size=5000), np.linspace(0, 1, 101)).tolist()},
                            "plan": {"type": "categorical", "count": 5000, "frequencies": {"a": 0.5, "b": 0.5}}}}
    mon = ModelMonitor("churn", policy, lambda v: profile)
    counter = itertools.count()
    for step in range(6):
        preds = [Prediction(f"e{next(counter)}", "churn", 1, 100.0 + step,
                            {"x": float(rng.normal()), "plan": "ab"[int(rng.integers(2))]},
                            int(rng.integers(2)), {"0": 0.4, "1": 0.6}, 2.0 + step) for _ in range(100)]
        mon.observe_predictions(preds, now=100.0 + step)
        mon.observe_joined([LabeledRecord(p.event_id, "churn", 1, p.features, p.prediction, int(rng.integers(2)),
                                          p.timestamp, p.timestamp + 2.5, p.probabilities, None) for p in preds],
                           now=100.0 + step)
    mon.observe_expired(1, 150, now=106.0)
    (snap,) = mon.snapshots(now=107.0)
    series = ModelSeries()
    series.update("churn", [snap])
    families = _families(series)
    documented = {r.name: r for r in checks.readme_series() if r.source == "monitor"}
    per_version = {name for name, row in documented.items() if "version" in row.labels}
    regression = {name for name, row in documented.items() if "regression" in row.what}
    estimated = {name for name, row in documented.items() if "calibrator" in row.what}  # none here
    assert set(families) == per_version - regression - estimated | {"driftline_model_serving_version"}
    for name, samples in families.items():
        assert checks.label_names(samples) == documented[name].labels, name
    fams = {f.name: f for f in series.collect(now=107.0)}

    def value(name, **labels):
        (sample,) = [s for s in fams[name].samples if all(s.labels.get(k) == v for k, v in labels.items())]
        return sample.value

    assert value("driftline_model_predictions", model="churn") == 600
    assert value("driftline_model_labeled", model="churn") == 600
    assert value("driftline_label_coverage_ratio") == pytest.approx(600 / 750)
    assert value("driftline_label_delay_seconds", quantile="0.5") == pytest.approx(2.5)
    assert value("driftline_prediction_latency_seconds", quantile="0.5") == pytest.approx(
        snap.stats["latency_p50_ms"] / 1000)
    for feature, test in (("x", "ks"), ("plan", "chi2")):
        drift = snap.stats["drift"][feature]
        assert drift["test"] == test and drift["threshold"] > 0
        assert value("driftline_feature_drift_statistic", feature=feature, test=test) == drift["statistic"]
        assert value("driftline_feature_drift_threshold", feature=feature, test=test) == drift["threshold"]
    assert value("driftline_model_accuracy", window="cumulative") == snap.cumulative["accuracy"]


def test_dashboard_and_rules_load_and_query_only_documented_series():
    dashboard = json.loads(checks.DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["templating"]["list"][0]["name"] == "model"
    rules = yaml.safe_load(checks.RULES.read_text(encoding="utf-8"))
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert {"DriftlineMonitorDown", "DriftlineConsumerLagGrowing", "DriftlineDriftAlertRate",
            "DriftlineRetrainFailures"} <= alerts
    # every series documented in the README, with the labels the README lists
    documented = {r.name: [dict.fromkeys(r.labels, "x")] for r in checks.readme_series()}
    assert checks.unexported(checks.dashboard_exprs() + checks.rules_exprs(), documented) == []
    # the checker does catch an unknown series, an unknown matcher label and an unknown grouping label
    assert len(checks.unexported(['driftline_nope{model="a"}', 'driftline_alerts_total{colour="x"}',
                                  "sum by (colour) (driftline_alerts_total)"], documented)) == 3


def test_readme_table_lists_every_series_once():
    rows = checks.readme_series()
    names = [r.name for r in rows]
    assert len(names) == len(set(names))
    assert {r.source for r in rows} == {"monitor", "worker", "both"}
    for row in rows:  # Prometheus conventions
        assert row.name.startswith("driftline_")
        if "_total" in row.name:
            assert row.name.endswith("_total")
        assert not row.name.endswith(("_ms", "_milliseconds", "_percent"))
