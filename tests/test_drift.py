"""Drift detection: no false alarm on a stationary stream, detection (and its
delay) after an abrupt shift, the false-alarm budget across features."""

from __future__ import annotations

import numpy as np
import pytest

from driftline.events import LabeledRecord, Prediction
from driftline.policy import DetectorSpec, MonitorPolicy
from driftline.streams.drift import ConceptDriftDetector, NumericDriftTest, per_test_alpha
from driftline.streams.model_monitor import ModelMonitor

N = 50_000
FEATURES = [f"f{j}" for j in range(10)]
SHIFT_AT = 25_137  # off the test-window grid, like a real change
BATCH = 100


def _profile(seed: int) -> dict:
    """A reference profile in the registry's format, from separate training data."""
    rng = np.random.default_rng(seed)
    feats = {}
    for name in FEATURES:
        x = rng.normal(size=20_000)
        feats[name] = {"type": "numeric", "count": 20_000, "missing_share": 0.0, "min": float(x.min()),
                       "max": float(x.max()), "mean": float(x.mean()), "std": float(x.std()),
                       "quantiles": np.quantile(x, np.linspace(0, 1, 101)).tolist()}
    feats["plan"] = {"type": "categorical", "count": 20_000, "missing_share": 0.0,
                     "frequencies": {"basic": 0.5, "pro": 0.3, "team": 0.2}}
    return {"rows": 20_000, "features": feats,
            "prediction": {"type": "categorical", "count": 20_000, "frequencies": {"0": 0.5, "1": 0.5}}}


def _stream(seed: int, shift_feature: int | None = None, shift: float = 0.5, cat_shift: bool = False,
            error_after: float | None = None):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, len(FEATURES)))
    if shift_feature is not None:
        x[SHIFT_AT:, shift_feature] += shift
    probs = np.array([0.5, 0.3, 0.2])
    plan = rng.choice(3, p=probs, size=N)
    if cat_shift:
        plan[SHIFT_AT:] = rng.choice(3, p=[0.4, 0.3, 0.3], size=N - SHIFT_AT)
    names = np.array(["basic", "pro", "team"])[plan]
    pred = (x[:, 0] > 0).astype(int)
    err_rate = np.full(N, 0.2)
    if error_after is not None:
        err_rate[SHIFT_AT:] = error_after
    label = np.where(rng.random(N) < err_rate, 1 - pred, pred)
    lat = rng.gamma(4.0, 5.0, size=N)
    rows = x.tolist()
    preds, joined = [], []
    for i in range(N):
        feats = dict(zip(FEATURES, rows[i]))
        feats["plan"] = str(names[i])
        p = Prediction(f"e{i}", "churn", 1, float(i), feats, int(pred[i]), None, float(lat[i]))
        preds.append(p)
        joined.append(LabeledRecord(p.event_id, "churn", 1, feats, p.prediction, int(label[i]), p.timestamp,
                                    p.timestamp + 60.0))
    return preds, joined


def _run(preds, joined, profile, policy=None):
    """Feed predictions and (one batch later) their labels; return (event index, alert)."""
    mon = ModelMonitor("churn", policy or MonitorPolicy(), lambda v: profile)
    alerts, requests = [], []
    for s in range(0, N, BATCH):
        end = s + BATCH - 1  # the last event the monitor has seen
        for out in (mon.observe_predictions(preds[s:s + BATCH], now=float(s)),
                    mon.observe_joined(joined[s:s + BATCH], now=float(s))):
            alerts += [(end, a) for a in out.alerts]
            requests += [(end, r) for r in out.retrain_requests]
    return mon, alerts, requests


@pytest.mark.parametrize("reference", ["profile", "self"])
def test_stationary_stream_raises_no_alert(reference):
    # The default budget (ARL 1e6 events) allows about 0.05 false alarms per
    # 50,000 events, so some seeds do alarm: seed 1 with a self-reference
    # raises one (p=3.99e-5 < alpha=4.17e-5); over 32 other seeded runs
    # (1.6M events) we saw 2, in line with the budget.
    preds, joined = _stream(seed=0)
    profile = _profile(seed=2) if reference == "profile" else None
    mon, alerts, requests = _run(preds, joined, profile)
    assert alerts == [] and requests == []
    snap = mon.snapshots(now=float(N))[0]
    # The tests really ran: every feature was tested about N / drift_window times.
    drift = snap.stats["drift"]
    assert set(drift) == set(FEATURES) | {"plan"}
    assert all(v["p_value"] is not None for v in drift.values())
    v = mon.versions[1]
    expected_tests = (N - 500 - (0 if profile else 2000)) // 500
    assert all(f.test.tests == expected_tests for f in v.features.values())


@pytest.mark.parametrize("reference", ["profile", "self"])
def test_abrupt_shift_in_one_feature_is_detected_with_bounded_delay(reference, capsys):
    preds, joined = _stream(seed=3, shift_feature=3, shift=0.5)
    profile = _profile(seed=4) if reference == "profile" else None
    _, alerts, requests = _run(preds, joined, profile)
    assert [a for i, a in alerts if i < SHIFT_AT] == []
    drift = [(i, a) for i, a in alerts if a.kind == "data_drift"]
    assert {a.subject for _, a in drift} == {"f3"}
    first, alert = drift[0]
    delay = first - SHIFT_AT
    # A shifted window must complete: at most two windows (the one holding the
    # shift point and the next), rounded up to the feeding batch.
    assert 0 <= delay <= 2 * 500 + BATCH, delay
    assert alert.detector == "ks" and alert.value > alert.threshold > 0
    assert "f3" in alert.message and "p=" in alert.message
    # Data drift is not in retrain_on by default: no retrain request.
    assert requests == []
    with capsys.disabled():
        print(f"\n[drift] {reference}: 0.5 sd shift in f3 detected after {delay} events")


def test_categorical_shift_is_detected():
    preds, joined = _stream(seed=5, cat_shift=True)
    _, alerts, _ = _run(preds, joined, _profile(seed=6))
    assert [a for i, a in alerts if i < SHIFT_AT] == []
    hits = [(i, a) for i, a in alerts if a.kind == "data_drift"]
    assert hits and {a.subject for _, a in hits} == {"plan"}
    assert hits[0][1].detector == "chi2" and hits[0][0] - SHIFT_AT <= 2 * 500 + BATCH


def test_concept_drift_raises_alert_and_retrain_request():
    preds, joined = _stream(seed=7, error_after=0.4)
    _, alerts, requests = _run(preds, joined, _profile(seed=8))
    assert [a for i, a in alerts if i < SHIFT_AT] == []
    concept = [(i, a) for i, a in alerts if a.kind == "concept_drift"]
    assert concept, alerts
    first, alert = concept[0]
    assert alert.detector == "adwin" and alert.subject == "error"
    # Recent error rate against the version's overall rate (0.2 before the change).
    assert alert.value > alert.threshold and 0.18 < alert.threshold < 0.25
    assert first - SHIFT_AT <= 1000
    assert requests and requests[0][1].reason == "drift" and alert.alert_id in requests[0][1].alert_ids
    # The inputs did not change: no data drift.
    assert not [a for _, a in alerts if a.kind == "data_drift"]


@pytest.mark.parametrize("name", ["adwin", "ddm", "hddm_a", "page_hinkley"])
def test_river_concept_detectors_quiet_before_and_detect_after_error_increase(name):
    rng = np.random.default_rng(21)
    half = 20_000
    errors = np.r_[rng.random(half) < 0.2, rng.random(half) < 0.4].astype(float)
    det = ConceptDriftDetector(DetectorSpec(name), "classification")
    hits = det.update(errors)
    assert [h for h in hits if h < half] == []
    assert hits and hits[0] - half < 2500  # DDM is the slowest here (~1700)


def test_adwin_ignores_an_error_decrease():
    rng = np.random.default_rng(22)
    errors = np.r_[rng.random(10_000) < 0.4, rng.random(10_000) < 0.1].astype(float)
    assert ConceptDriftDetector(DetectorSpec("adwin"), "classification").update(errors) == []


def test_false_alarm_budget_is_shared_by_all_features():
    # Bonferroni: alpha = window / (ARL * tests per window).
    assert per_test_alpha(1e6, 12, 500) == pytest.approx(500 / 12e6)
    assert per_test_alpha(1e6, 24, 500) == pytest.approx(per_test_alpha(1e6, 12, 500) / 2)
    preds, joined = _stream(seed=9)
    mon, _, _ = _run(preds[:2000], joined[:2000], None)
    vm = mon.versions[1]
    # 10 numeric + 1 categorical feature + the prediction.
    assert vm.alpha() == pytest.approx(500 / (1e6 * 12))
    tight = ModelMonitor("churn", MonitorPolicy(expected_run_length=1e8), lambda v: None)
    tight.observe_predictions(preds[:100], now=0.0)
    tight.flush(now=0.0)
    assert tight.versions[1].alpha() == pytest.approx(vm.alpha() / 100)


def test_ks_p_values_are_valid_under_no_change():
    """The per-window p-values are (conservatively) uniform, so the budget holds."""
    rng = np.random.default_rng(23)
    p_values = []
    for _ in range(60):
        test = NumericDriftTest(window=500, reference_size=2000)
        test.update(rng.normal(size=2000), alpha=1e-12)
        for _ in range(25):
            test.update(rng.normal(size=500), alpha=1e-12)
            p_values.append(test.last_p_value)
    p_values = np.array(p_values)
    assert (p_values < 0.05).mean() <= 0.06
    assert (p_values < 0.01).mean() <= 0.015
    # ...and not vacuous: a 0.3 sd shift gives small p-values.
    test = NumericDriftTest(window=500, reference_size=2000)
    test.update(rng.normal(size=2000), alpha=1e-12)
    test.update(rng.normal(0.3, 1.0, size=500), alpha=1e-12)
    assert test.last_p_value < 1e-3


def test_registry_profile_with_discrete_bool_and_text_features():
    """The reference profile as the registry builds it (driftline.registry.profile.build_profile)."""
    pd = pytest.importorskip("pandas")
    from driftline.registry.profile import build_profile

    rng = np.random.default_rng(31)

    def draw(n, shift=False):
        return pd.DataFrame({
            "amount": rng.lognormal(3.0, 1.0, n),
            "visits": rng.poisson(4.0 if shift else 2.0, n),  # discrete: many ties
            "vip": rng.random(n) < 0.3,
            "plan": rng.choice(["basic", "pro"], n, p=[0.7, 0.3]),
        })

    train = draw(20_000)
    profile = build_profile(train, predictions=(train["amount"] > 20).astype(int).to_numpy())
    policy = MonitorPolicy(expected_run_length=1e6)

    def events(df, start):
        rows = df.to_dict("records")
        return [Prediction(f"r{start + i}", "churn", 1, 0.0,
                           {"amount": r["amount"], "visits": int(r["visits"]), "vip": bool(r["vip"]),
                            "plan": r["plan"]}, int(r["amount"] > 20), None, None) for i, r in enumerate(rows)]

    mon = ModelMonitor("churn", policy, lambda v: profile)
    quiet = []
    live = events(draw(30_000), 0)
    for s in range(0, len(live), 500):
        quiet += mon.observe_predictions(live[s:s + 500], now=float(s)).alerts
    assert quiet == []
    tests = {name: f.test for name, f in mon.versions[1].features.items()}
    assert type(tests["visits"]).__name__ == "NumericDriftTest" and tests["visits"].quantiles is not None
    assert type(tests["vip"]).__name__ == "CategoricalDriftTest" and tests["vip"].from_profile
    shifted = events(draw(2000, shift=True), 30_000)
    loud = []
    for s in range(0, len(shifted), 500):
        loud += mon.observe_predictions(shifted[s:s + 500], now=1e6 + s).alerts
    assert {(a.kind, a.subject) for a in loud} >= {("data_drift", "visits")}
