"""ModelMonitor analytics: exact metrics vs scikit-learn, alerts, cooldowns,
retrain requests, warm-up, state round trip (no Kafka here: driftline.streams.stage2
feeds these objects; the pipeline tests cover the broker)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from sklearn import metrics as skm

from driftline.events import Alert, LabeledRecord, MetricsSnapshot, Prediction, RetrainRequest
from driftline.policy import DetectorSpec, MonitorPolicy
from driftline.streams.metrics import ClassificationMetrics, ExactSum, RegressionMetrics, class_key
from driftline.streams.model_monitor import ModelMonitor
from driftline.streams.state import StateError

MODEL = "churn"


def _joined(labels, preds, probs=None, version=1, start=0):
    out = []
    for i, (y, p) in enumerate(zip(labels, preds)):
        out.append(LabeledRecord(f"e{start + i}", MODEL, version, {"x": 1.0}, p, y, 100.0 + i, 103.0 + i,
                                 None if probs is None else probs[i], None))
    return out


def _feed_joined(mon, records, rng, now=1000.0):
    """Feed in random batch sizes (1..300), as a consumer would."""
    i = 0
    while i < len(records):
        k = int(rng.integers(1, 300))
        mon.observe_joined(records[i:i + k], now=now)
        i += k


def _close(a, b, tol):
    assert a is not None and abs(a - b) <= tol, (a, b)


def test_binary_metrics_equal_sklearn():
    rng = np.random.default_rng(3)
    n = 12_345
    y = rng.integers(0, 2, n)
    p1 = np.clip(0.5 + (y - 0.5) * 0.4 + rng.normal(0, 0.25, n), 0.0, 1.0)
    pred = (p1 > 0.5).astype(int)
    # Probability keys are strings, labels ints: the documented mapping.
    probs = [{"1": float(a), "0": float(1 - a)} for a in p1]
    mon = ModelMonitor(MODEL, MonitorPolicy(task="classification"), lambda v: None)
    _feed_joined(mon, _joined([int(v) for v in y], [int(v) for v in pred], probs), rng)
    snap = mon.snapshots(now=2000.0)[0]
    c = snap.cumulative
    P = np.column_stack([1 - p1, p1])
    _close(c["accuracy"], skm.accuracy_score(y, pred), 1e-9)
    _close(c["precision"], skm.precision_score(y, pred), 1e-9)
    _close(c["recall"], skm.recall_score(y, pred), 1e-9)
    _close(c["f1"], skm.f1_score(y, pred), 1e-9)
    _close(c["log_loss"], skm.log_loss(y, P), 1e-9)  # includes p=0 and p=1 (clipped like sklearn)
    _close(c["roc_auc"], skm.roc_auc_score(y, p1), 1e-3)
    # Rolling window: the last `window` pairs, exact (AUC too).
    w = mon.policy.window
    r = snap.rolling
    _close(r["accuracy"], skm.accuracy_score(y[-w:], pred[-w:]), 1e-9)
    _close(r["f1"], skm.f1_score(y[-w:], pred[-w:]), 1e-9)
    _close(r["log_loss"], skm.log_loss(y[-w:], P[-w:], labels=[0, 1]), 1e-9)
    _close(r["roc_auc"], skm.roc_auc_score(y[-w:], p1[-w:]), 1e-9)
    assert snap.stats["joined"] == n
    assert snap.stats["label_delay_p50_s"] == pytest.approx(3.0)
    # The snapshot is a valid contract record.
    assert MetricsSnapshot.from_dict(json.loads(json.dumps(snap.to_dict()))) == snap


def test_binary_string_and_bool_labels_positive_class_rule():
    rng = np.random.default_rng(4)
    n = 3000
    y = rng.integers(0, 2, n)
    pred = np.where(rng.random(n) < 0.8, y, 1 - y)
    p1 = np.clip(0.3 + 0.4 * pred + rng.normal(0, 0.1, n), 0, 1)
    # "no"/"yes": positive = "yes" (greater in sorted order, like LabelBinarizer).
    words = np.array(["no", "yes"])
    mon = ModelMonitor(MODEL, MonitorPolicy(), lambda v: None)
    _feed_joined(mon, _joined(list(words[y]), list(words[pred]),
                              [{"yes": float(a), "no": float(1 - a)} for a in p1]), rng)
    c = mon.snapshots(1.0)[0].cumulative
    _close(c["precision"], skm.precision_score(words[y], words[pred], pos_label="yes"), 1e-9)
    _close(c["roc_auc"], skm.roc_auc_score(y, p1), 1e-3)
    # Booleans with Python-style "True"/"False" probability keys: positive = True.
    mon = ModelMonitor(MODEL, MonitorPolicy(), lambda v: None)
    _feed_joined(mon, _joined([bool(v) for v in y], [bool(v) for v in pred],
                              [{"True": float(a), "False": float(1 - a)} for a in p1]), rng)
    c = mon.snapshots(1.0)[0].cumulative
    _close(c["recall"], skm.recall_score(y, pred), 1e-9)
    _close(c["log_loss"], skm.log_loss(y, np.column_stack([1 - p1, p1])), 1e-9)
    # An explicit positive label overrides the rule.
    mon = ModelMonitor(MODEL, MonitorPolicy(), lambda v: None, positive_label="no")
    _feed_joined(mon, _joined(list(words[y]), list(words[pred])), rng)
    c = mon.snapshots(1.0)[0].cumulative
    _close(c["recall"], skm.recall_score(words[y], words[pred], pos_label="no"), 1e-9)
    assert c["log_loss"] is None and c["roc_auc"] is None  # no probabilities given


def test_multiclass_metrics_equal_sklearn():
    rng = np.random.default_rng(5)
    n, k = 9_000, 4
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.2
    P = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pred = P.argmax(axis=1)
    names = np.array(["a", "b", "c", "d"])
    probs = [{names[j]: float(P[i, j]) for j in range(k)} for i in range(n)]
    mon = ModelMonitor(MODEL, MonitorPolicy(), lambda v: None)
    _feed_joined(mon, _joined(list(names[y]), list(names[pred]), probs), rng)
    c = mon.snapshots(1.0)[0].cumulative
    _close(c["accuracy"], skm.accuracy_score(y, pred), 1e-9)
    for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score), ("f1", skm.f1_score)):
        _close(c[name], fn(y, pred, average="macro"), 1e-9)
    _close(c["log_loss"], skm.log_loss(y, P), 1e-9)
    _close(c["roc_auc"], skm.roc_auc_score(y, P, multi_class="ovr", average="macro"), 1e-3)


def test_regression_metrics_equal_sklearn():
    rng = np.random.default_rng(6)
    n = 10_000
    y = rng.normal(1e4, 3.0, n)  # large mean, small spread: R² needs care
    pred = y + rng.normal(0.5, 1.5, n)
    mon = ModelMonitor(MODEL, MonitorPolicy(), lambda v: None)  # task auto -> regression
    _feed_joined(mon, _joined([float(v) for v in y], [float(v) for v in pred]), rng)
    snap = mon.snapshots(1.0)[0]
    c = snap.cumulative
    assert snap.stats["task"] == "regression"
    _close(c["mae"], skm.mean_absolute_error(y, pred), 1e-9)
    _close(c["rmse"], skm.root_mean_squared_error(y, pred), 1e-9)
    _close(c["r2"], skm.r2_score(y, pred), 1e-9)
    w = mon.policy.window
    _close(snap.rolling["r2"], skm.r2_score(y[-w:], pred[-w:]), 1e-9)


def test_cumulative_metrics_merge_and_order_independence():
    """Partial states (other partitions/processes) merge to exactly the whole."""
    rng = np.random.default_rng(7)
    n = 5000
    y = [class_key(int(v)) for v in rng.integers(0, 3, n)]
    p = [class_key(int(v)) for v in rng.integers(0, 3, n)]
    probs = [{"0": 0.2, "1": 0.5, "2": 0.3} for _ in range(n)]
    whole = ClassificationMetrics()
    whole.update(y, p, probs)
    parts = [ClassificationMetrics() for _ in range(3)]
    order = rng.permutation(n)
    for i, part in zip(np.array_split(order, 3), parts):
        part.update([y[j] for j in i], [p[j] for j in i], [probs[j] for j in i])
    merged = parts[2]
    merged.merge(parts[0])
    merged.merge(parts[1])
    assert merged.get() == whole.get()
    yr, pr = rng.normal(size=n), rng.normal(size=n)
    a, b, c = RegressionMetrics(), RegressionMetrics(), RegressionMetrics()
    a.update(yr, pr)
    b.update(yr[::-1][:2000], pr[::-1][:2000])
    c.update(yr[::-1][2000:], pr[::-1][2000:])
    b.merge(c)
    assert b.get() == a.get()
    s = ExactSum()
    s.add(np.array([1e300, 1.0, -1e300, 5e-324]))
    assert s.value() == 1.0


def _predictions(n, rng, version=1, latency=10.0, shift=0.0, start=0):
    x = rng.normal(size=(n, 3))
    x[:, 0] += shift
    return [Prediction(f"p{start + i}", MODEL, version, float(start + i),
                       {"a": float(x[i, 0]), "b": float(x[i, 1]), "c": float(x[i, 2]), "k": "u" if i % 3 else "v"},
                       int(x[i, 1] > 0), None, latency) for i in range(n)]


def test_latency_alert_fires_when_p95_passes_limit_and_cooldown_holds():
    rng = np.random.default_rng(8)
    policy = MonitorPolicy(latency_p95_ms=50.0, warmup=100, window=500, cooldown_s=60.0)
    mon = ModelMonitor(MODEL, policy, lambda v: None)
    alerts = []
    for step in range(20):
        alerts += mon.observe_predictions(_predictions(100, rng, latency=20.0, start=step * 100), now=step).alerts
    assert [a for a in alerts if a.kind == "latency"] == []
    slow = []
    for step in range(20, 40):
        slow += [a for a in mon.observe_predictions(_predictions(100, rng, latency=80.0, start=step * 100),
                                                    now=step).alerts if a.kind == "latency"]
    assert len(slow) == 1  # one per cooldown (60 s; this ran 20 s)
    alert = slow[0]
    assert (alert.subject, alert.detector, alert.threshold) == ("latency_p95_ms", "rolling_p95", 50.0)
    assert alert.value > 50.0 and "p95" in alert.message
    assert Alert.from_dict(alert.to_dict()) == alert
    # After the cooldown the still-slow stream alerts again.
    later = mon.observe_predictions(_predictions(100, rng, latency=80.0, start=9000), now=100.0).alerts
    assert [a.kind for a in later] == ["latency"]
    snap = mon.snapshots(now=101.0)[0]
    assert snap.stats["latency_p95_ms"] == pytest.approx(80.0)


def test_outlier_rate_alert_against_profile_range():
    rng = np.random.default_rng(9)
    profile = {"rows": 10000, "features": {
        name: {"type": "numeric", "count": 10000, "min": -4.0, "max": 4.0,
               "quantiles": np.quantile(rng.normal(size=10000), np.linspace(0, 1, 101)).tolist()}
        for name in ("a", "b", "c")}}
    profile["features"]["k"] = {"type": "categorical", "count": 10000, "frequencies": {"u": 0.67, "v": 0.33}}
    policy = MonitorPolicy(warmup=100, window=500, outlier_rate=0.05, prediction_drift=False)
    mon = ModelMonitor(MODEL, policy, lambda v: profile)
    quiet = []
    for step in range(10):
        quiet += mon.observe_predictions(_predictions(100, rng, start=step * 100), now=step).alerts
    assert quiet == []
    # 10% of events far outside the reference range of feature "b".
    bad = []
    for step in range(10, 20):
        batch = _predictions(100, rng, start=step * 100)
        for e in batch[:10]:
            e.features["b"] = 50.0
        bad += mon.observe_predictions(batch, now=step).alerts
    kinds = {a.kind for a in bad}
    assert "outliers" in kinds
    alert = next(a for a in bad if a.kind == "outliers")
    assert alert.threshold == 0.05 and alert.value > 0.05 and alert.detector == "range"
    assert mon.snapshots(30.0)[0].stats["drift"]["b"]["outliers"] == 100


def test_metric_threshold_alert_triggers_retrain_request_with_cooldown():
    rng = np.random.default_rng(10)
    policy = MonitorPolicy(warmup=200, window=400, metric_thresholds={"accuracy": 0.7, "log_loss": 2.0},
                           cooldown_s=10.0, retrain_cooldown_s=100.0,
                           concept_drift=DetectorSpec("adwin", {"delta": 1e-9}))
    mon = ModelMonitor(MODEL, policy, lambda v: None)
    good = rng.integers(0, 2, 2000)
    out = []
    for s in range(0, 2000, 100):
        out.append(mon.observe_joined(_joined(list(good[s:s + 100]), list(good[s:s + 100]), start=s), now=s / 100))
    assert all(not o.alerts and not o.retrain_requests for o in out)
    requests, alerts = [], []
    for s in range(2000, 6000, 100):
        y = rng.integers(0, 2, 100)
        pred = np.where(rng.random(100) < 0.5, y, 1 - y)
        o = mon.observe_joined(_joined(list(y), list(pred), start=s), now=s / 100)
        alerts += o.alerts
        requests += o.retrain_requests
    metric_alerts = [a for a in alerts if a.kind == "metric"]
    assert metric_alerts and metric_alerts[0].subject == "accuracy" and metric_alerts[0].threshold == 0.7
    assert metric_alerts[0].value < 0.7
    # 40 s of bad data, retrain cooldown 100 s: exactly one request, naming its alerts.
    assert len(requests) == 1
    req = requests[0]
    assert req.reason in ("metric", "drift") and req.alert_ids
    assert set(req.alert_ids) <= {a.alert_id for a in alerts}
    assert RetrainRequest.from_dict(req.to_dict()) == req
    # Alert cooldown 10 s: at most one metric alert per 10 s.
    times = [a.timestamp for a in metric_alerts]
    assert all(b - a >= 10.0 for a, b in zip(times, times[1:]))


def _promotion_run(warmup):
    rng = np.random.default_rng(11)
    policy = MonitorPolicy(warmup=warmup, drift_window=100, window=300, latency_p95_ms=30.0,
                           expected_run_length=1e4, cooldown_s=1e9)
    mon = ModelMonitor(MODEL, policy, lambda v: None)
    before = []
    for step in range(30):
        before += mon.observe_predictions(_predictions(100, rng, start=step * 100), now=step).alerts
    # Version 2 is promoted: different inputs, and a cold start (slow first 200 predictions).
    mon.on_promoted(2, now=30.0)
    after = []
    for step in range(30, 60):
        slow = 100.0 if step < 32 else 20.0
        after += mon.observe_predictions(_predictions(100, rng, version=2, shift=3.0, latency=slow,
                                                      start=step * 100), now=step).alerts
    return mon, before, after, rng


def test_new_version_and_promotion_warm_up_do_not_alert():
    mon, before, after, rng = _promotion_run(warmup=300)
    assert before == [] and after == []
    snaps = {s.model_version: s for s in mon.snapshots(now=61.0)}
    assert snaps[2].stats["predictions"] == 3000 and snaps[1].stats["predictions"] == 3000
    # Version 2's detectors started fresh against its own past; the same shift within
    # version 1 is drift.
    late = []
    for step in range(60, 70):
        late += mon.observe_predictions(_predictions(100, rng, shift=3.0, start=step * 100), now=step).alerts
    assert ("data_drift", "a") in {(a.kind, a.subject) for a in late}
    assert all(a.model_version == 1 for a in late)
    # Without a warm-up the cold start of the promoted version does alert.
    _, _, no_warmup, _ = _promotion_run(warmup=1)
    assert [(a.model_version, a.kind) for a in no_warmup] == [(2, "latency")]


def test_promotion_of_a_known_version_restarts_its_warm_up():
    rng = np.random.default_rng(14)
    policy = MonitorPolicy(warmup=300, window=300, latency_p95_ms=30.0, cooldown_s=1e9)
    mon = ModelMonitor(MODEL, policy, lambda v: None)
    for step in range(10):
        mon.observe_predictions(_predictions(100, rng, start=step * 100), now=step)
    mon.on_promoted(1, now=10.0)  # e.g. a rollback back to version 1
    quiet = []
    for step in range(10, 13):
        quiet += mon.observe_predictions(_predictions(100, rng, latency=100.0, start=step * 100), now=step).alerts
    assert quiet == []
    loud = mon.observe_predictions(_predictions(300, rng, latency=100.0, start=5000), now=14.0).alerts
    assert [a.kind for a in loud] == ["latency"]


def test_state_round_trip_continues_identically_and_stays_small():
    rng = np.random.default_rng(12)
    policy = MonitorPolicy(warmup=200, drift_window=200, latency_p95_ms=40.0,
                           metric_thresholds={"accuracy": 0.6}, outlier_detector="both")
    n = 20_000
    x = rng.normal(size=(n, 10))
    x[12_000:, 4] += 1.0  # drift after the checkpoint
    names = [f"f{j}" for j in range(10)]
    preds = [Prediction(f"e{i}", MODEL, 1, float(i), dict(zip(names, x[i].tolist())), int(x[i, 0] > 0),
                        {"1": 0.6, "0": 0.4}, float(20 + 30 * (i > 15_000))) for i in range(n)]
    labels = np.where(np.arange(n) < 14_000, (x[:, 0] > 0), rng.random(n) < 0.5).astype(int)
    joined = [LabeledRecord(p.event_id, MODEL, 1, p.features, p.prediction, int(labels[i]), p.timestamp,
                            p.timestamp + 5, p.probabilities, p.latency_ms) for i, p in enumerate(preds)]

    def run(mon, lo, hi):
        found = []
        for s in range(lo, hi, 250):
            for o in (mon.observe_predictions(preds[s:s + 250], now=s / 10),
                      mon.observe_joined(joined[s:s + 250], now=s / 10)):
                found += [(a.kind, a.subject, a.value, a.timestamp) for a in o.alerts]
                found += [("request", r.reason, tuple(sorted(r.alert_ids)) != (), r.timestamp)
                          for r in o.retrain_requests]
        mon.observe_predictions(preds[hi:hi + 7], now=hi / 10)  # leave a partial chunk buffered
        return found

    a = ModelMonitor(MODEL, policy, lambda v: None)
    run(a, 0, 10_000)
    blob = a.to_state()
    # Fits a Kafka message (1 MB default) with room to spare; HST on: the largest case.
    assert isinstance(blob, bytes) and len(blob) < 500_000, len(blob)
    json.loads(blob)  # plain JSON
    b = ModelMonitor.from_state(blob, policy, lambda v: None)
    rest_a, rest_b = run(a, 10_007, n - 7), run(b, 10_007, n - 7)
    assert rest_a == rest_b
    assert {k for k, *_ in rest_a} >= {"data_drift", "latency", "metric", "request"}
    sa, sb = a.snapshots(now=5000.0), b.snapshots(now=5000.0)
    assert [s.to_dict() for s in sa] == [s.to_dict() for s in sb]


def test_state_refuses_pickle_and_untrusted_types():
    mon = ModelMonitor(MODEL, MonitorPolicy(), lambda v: None)
    with pytest.raises(StateError):
        ModelMonitor.from_state(pickle.dumps({"format": 1}), MonitorPolicy(), lambda v: None)
    good = json.loads(mon.to_state())
    evil = dict(good, versions=[{"__river__": "subprocess.Popen", "attrs": {}}])
    with pytest.raises(StateError, match="trusted"):
        ModelMonitor.from_state(json.dumps(evil).encode(), MonitorPolicy(), lambda v: None)
    with pytest.raises(StateError, match="format"):
        ModelMonitor.from_state(json.dumps(dict(good, format=99)).encode(), MonitorPolicy(), lambda v: None)
    with pytest.raises(StateError):
        ModelMonitor.from_state(json.dumps(dict(good, versions=[{"model": "x"}])).encode(), MonitorPolicy(),
                                lambda v: None)


def test_expired_predictions_give_label_coverage_and_events_of_other_models_are_refused():
    rng = np.random.default_rng(13)
    mon = ModelMonitor(MODEL, MonitorPolicy(), lambda v: None)
    mon.observe_predictions(_predictions(100, rng), now=1.0)
    mon.observe_joined(_joined([1] * 75, [1] * 75), now=2.0)
    mon.observe_expired(1, 25, now=3.0)
    stats = mon.snapshots(now=4.0)[0].stats
    assert stats["label_coverage"] == 0.75 and stats["expired"] == 25
    assert stats["prediction_distribution"] and abs(sum(stats["prediction_distribution"].values()) - 1) < 1e-12
    other = _predictions(1, rng)[0]
    other.model = "other"
    with pytest.raises(ValueError, match="other"):
        mon.observe_predictions([other], now=5.0)


def test_half_space_trees_flag_low_density_inputs():
    """outlier_detector="hst": River's HalfSpaceTrees flags inputs inside the
    reference range but in a region the reference never populated."""
    rng = np.random.default_rng(15)
    policy = MonitorPolicy(warmup=100, window=500, outlier_rate=0.05, outlier_detector="hst",
                           prediction_drift=False, data_drift=DetectorSpec("ks", {"reference_size": 1000}),
                           expected_run_length=1e12)

    def batch(start, odd_share):
        x = rng.uniform(0.0, 1.0, size=(100, 2))
        odd = rng.random(100) < odd_share
        # Normal inputs live near the diagonal; odd ones in the empty corner (each value in range).
        x[:, 1] = np.where(odd, 1.0 - x[:, 0], np.clip(x[:, 0] + rng.normal(0, 0.03, 100), 0, 1))
        x[odd, 0] = rng.uniform(0.85, 1.0, odd.sum())
        x[odd, 1] = rng.uniform(0.0, 0.15, odd.sum())
        return [Prediction(f"h{start + i}", MODEL, 1, 0.0, {"a": float(x[i, 0]), "b": float(x[i, 1])}, 1,
                           None, None) for i in range(100)]

    mon = ModelMonitor(MODEL, policy, lambda v: None)
    quiet = []
    for step in range(40):
        quiet += mon.observe_predictions(batch(step * 100, 0.0), now=step).alerts
    assert quiet == []
    loud = []
    for step in range(40, 50):
        loud += mon.observe_predictions(batch(step * 100, 0.3), now=step).alerts
    assert [(a.kind, a.detector) for a in loud][:1] == [("outliers", "hst")]
    # Range flags alone see nothing: every value is inside the reference range.
    assert all(f["outliers"] == 0 for f in mon.snapshots(now=60.0)[0].stats["drift"].values())


@pytest.mark.parametrize("task", ["classification", "regression", "auto"])
def test_every_task_setting_runs_predictions_and_prediction_drift(task):
    rng = np.random.default_rng(16)
    policy = MonitorPolicy(task=task, warmup=50, drift_window=100, prediction_drift=True)
    mon = ModelMonitor(MODEL, policy, lambda v: None)
    regression = task == "regression"
    for step in range(20):
        batch = _predictions(100, rng, start=step * 100)
        for e in batch:
            e.prediction = float(rng.normal()) if regression else e.prediction
        mon.observe_predictions(batch, now=step)
    snap = mon.snapshots(now=30.0)[0]
    dist = snap.stats["prediction_distribution"]
    assert (set(dist) == {"p05", "p50", "p95"}) if regression else (set(dist) == {"0", "1"})
    assert mon.versions[1].pred_test.tests >= 5


@pytest.mark.parametrize("concept,data", [("adwin", "adwin"), ("ddm", "kswin"), ("eddm", "page_hinkley"),
                                          ("hddm_a", "psi"), ("hddm_w", "chi2"), ("fhddm", "ks"),
                                          ("page_hinkley", "ks")])
def test_state_round_trip_for_every_detector(concept, data):
    rng = np.random.default_rng(17)
    policy = MonitorPolicy(warmup=100, drift_window=100, concept_drift=DetectorSpec(concept),
                           data_drift=DetectorSpec(data), cooldown_s=1e-9, expected_run_length=1e3)
    n = 3000
    preds = _predictions(n, rng, shift=0.0)
    for e in preds[n // 2:]:
        e.features["a"] += 1.5
    labels = [e.prediction if rng.random() < (0.9 if i < n // 2 else 0.5) else 1 - e.prediction
              for i, e in enumerate(preds)]
    joined = [LabeledRecord(e.event_id, MODEL, 1, e.features, e.prediction, y, e.timestamp, e.timestamp + 1)
              for e, y in zip(preds, labels)]

    def run(mon, lo, hi):
        found = []
        for s in range(lo, hi, 100):
            for o in (mon.observe_predictions(preds[s:s + 100], now=s), mon.observe_joined(joined[s:s + 100], now=s)):
                found += [(a.kind, a.subject, a.detector, a.value) for a in o.alerts]
        return found

    a = ModelMonitor(MODEL, policy, lambda v: None)
    run(a, 0, 1200)
    b = ModelMonitor.from_state(a.to_state(), policy, lambda v: None)
    rest = run(a, 1200, n)
    assert rest == run(b, 1200, n)
    assert {k for k, *_ in rest} & {"data_drift", "concept_drift"}


def test_one_call_larger_than_the_rolling_window():
    """A consumer may hand over more joined pairs than the window at once
    (a bulk message after a pause): metrics stay exact."""
    rng = np.random.default_rng(11)
    n = 3_000  # > the default window of 1,000
    y = rng.integers(0, 2, n)
    p1 = np.clip(0.5 + (y - 0.5) * 0.4 + rng.normal(0, 0.25, n), 0.0, 1.0)
    pred = (p1 > 0.5).astype(int)
    probs = [{"1": float(a), "0": float(1 - a)} for a in p1]
    mon = ModelMonitor(MODEL, MonitorPolicy(task="classification"), lambda v: None)
    mon.observe_joined(_joined([int(v) for v in y], [int(v) for v in pred], probs), now=1000.0)
    snap = mon.snapshots(now=2000.0)[0]
    w = mon.policy.window
    _close(snap.cumulative["accuracy"], skm.accuracy_score(y, pred), 1e-9)
    _close(snap.cumulative["log_loss"], skm.log_loss(y, np.column_stack([1 - p1, p1])), 1e-9)
    _close(snap.rolling["accuracy"], skm.accuracy_score(y[-w:], pred[-w:]), 1e-9)
    _close(snap.rolling["roc_auc"], skm.roc_auc_score(y[-w:], p1[-w:]), 1e-9)


def _river_confusion_scores(counts, keys, positive):
    """What streams/confusion.py computed with River's own classes before."""
    from river import metrics as river_metrics

    from driftline.streams.labels import positive_class

    cm = river_metrics.ConfusionMatrix()
    rows, cols = np.nonzero(counts)
    for i, j in zip(rows.tolist(), cols.tolist()):
        cm.update(keys[i], keys[j], w=float(counts[i, j]))
    seen = [keys[i] for i in sorted(set(rows.tolist()) | set(cols.tolist()))]
    out = {"accuracy": river_metrics.Accuracy(cm=cm).get()}
    if len(seen) <= 2:
        pos = positive_class(seen, positive)
        out.update(precision=river_metrics.Precision(cm=cm, pos_val=pos).get(),
                   recall=river_metrics.Recall(cm=cm, pos_val=pos).get(),
                   f1=river_metrics.F1(cm=cm, pos_val=pos).get())
    else:
        out.update(precision=river_metrics.MacroPrecision(cm=cm).get(),
                   recall=river_metrics.MacroRecall(cm=cm).get(), f1=river_metrics.MacroF1(cm=cm).get())
    return out


def test_confusion_scores_are_rivers_to_the_last_bit():
    from driftline.streams.confusion import confusion_scores

    rng = np.random.default_rng(7)
    for trial in range(600):
        k = int(rng.integers(1, 7))
        keys = [f"c{i}" for i in rng.permutation(k)] if trial % 2 else [str(i) for i in range(k)]
        # sparse matrices: empty rows and columns, classes only predicted or only labelled
        counts = rng.integers(0, 50, size=(k, k)) * (rng.random((k, k)) < 0.6)
        positive = keys[-1] if trial % 3 == 0 else None
        ours = confusion_scores(counts, keys, positive)
        assert ours == _river_confusion_scores(counts, keys, positive), (counts, keys, positive)
    assert confusion_scores(np.zeros((2, 2), dtype=int), ["0", "1"], None) == \
        {"accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_average_ranks_and_chi2_are_scipy_stats_values():
    from scipy import stats

    from driftline.streams.auc import average_ranks
    from driftline.streams.drift import chi2_isf, chi2_sf

    rng = np.random.default_rng(3)
    for _ in range(300):
        values = np.round(rng.random(int(rng.integers(1, 200))), int(rng.integers(1, 4)))  # many ties
        assert np.array_equal(average_ranks(values), stats.rankdata(values))
        dof, x, q = int(rng.integers(1, 40)), float(rng.exponential(20)), float(rng.uniform(1e-9, 0.5))
        assert chi2_sf(x, dof) == float(stats.chi2.sf(x, dof))
        assert chi2_isf(q, dof) == float(stats.chi2.isf(q, dof))
    assert np.isnan(average_ranks(np.array([0.2, np.nan]))).all()


def test_the_monitors_analytics_load_neither_scikit_learn_pandas_nor_scipy_stats():
    # a fresh interpreter: what the monitor imports for its analytics and the default
    # policy's detectors (River's packages thin, driftline/river_modules.py)
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from driftline.streams import app\n"
        "app._import_analytics()\n"
        "from driftline.policy import MonitorPolicy\n"
        "from driftline.streams.model_monitor import ModelMonitor\n"
        "from driftline.events import Prediction, LabeledRecord\n"
        "policy = MonitorPolicy(warmup=10, outlier_detector='both')\n"
        "mon = ModelMonitor('m', policy, profile_for=lambda v: None)\n"
        "preds = [Prediction(f'e{i}', 'm', 1, 0.0, {'x': float(i % 7)}, i % 2, {'0': 0.4, '1': 0.6}, 5.0)"
        " for i in range(3000)]\n"
        "mon.observe_predictions(preds, now=1.0)\n"
        "mon.observe_joined([LabeledRecord(p.event_id, 'm', 1, p.features, p.prediction, i % 3 % 2, 0.0, 2.0,"
        " p.probabilities, None) for i, p in enumerate(preds)], now=2.0)\n"
        "state = ModelMonitor.from_state(mon.to_state(), policy, lambda v: None)\n"
        "assert state.snapshots(3.0)[0].cumulative['accuracy'] is not None\n"
        "print(sorted(m for m in ('sklearn', 'pandas', 'pyarrow', 'scipy.stats') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout


def test_a_thin_river_package_still_gives_everything_it_defines():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from driftline.river_modules import river_class\n"
        "river_class('river.drift.adwin.ADWIN')\n"
        "assert 'sklearn' not in sys.modules\n"
        "from river import drift\n"
        "from river.drift import KSWIN\n"  # defined by river/drift/__init__.py: it runs now
        "print(drift.KSWIN is KSWIN, drift.binary.DDM.__name__, drift.ADWIN.__module__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["True", "DDM", "river.drift.adwin"]
