"""Performance estimation before labels (CBPE, DLE) through the real
monitor analytics, checked against scikit-learn on the same windows; the
estimation map's round trip through the registry and its refusal when changed."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from driftline.config import load_settings
from driftline.policy import MonitorPolicy, Policy
from driftline.registry import open_registry
from driftline.registry.calibration import TAG, ClassCalibration, LossEstimator, fit_estimation
from driftline.registry.errors import ArtifactIntegrityError, UntrustedArtifactError
from driftline.streams.model_monitor import ModelMonitor
from tests.estimation_data import bananas, events, flip_labels, hard_window, logistic_regression

WINDOW = 500


@pytest.fixture(scope="module")
def fitted():
    X, y, train, holdout, pool = bananas()
    model = logistic_regression(X.iloc[train], y[train])
    return X, y, model, fit_estimation(model, X.iloc[holdout], y[holdout], "classification"), pool


@pytest.fixture
def registry(tmp_path):
    reg = open_registry(load_settings(environ={}, registry=str(tmp_path / "registry")), publish=False)
    yield reg
    reg.close()


def _monitor(reg, name: str, **policy) -> ModelMonitor:
    return ModelMonitor(name, MonitorPolicy(window=WINDOW, warmup=1, **policy),
                        profile_for=lambda v: reg.get_profile(name, v))


def test_estimated_accuracy_under_covariate_shift_before_labels(fitted, registry):
    X, y, model, estimation, pool = fitted
    assert estimation["method"] == "isotonic" and estimation["ece"] < 0.05  # 1590 holdout rows
    registry.register_version("bananas", model, estimation=estimation)
    monitor = _monitor(registry, "bananas")
    rows = hard_window(model, X, pool, WINDOW, seed=1)
    preds, joined, predicted = events(model, X, rows, y[rows], "bananas")
    monitor.observe_predictions(preds, now=1.0)
    snap = monitor.snapshots(now=2.0)[0]
    assert snap.stats["joined"] == 0 and snap.rolling == {}  # no label published yet
    est = snap.stats["estimated"]
    realized = accuracy_score(y[rows], predicted)
    unshifted = accuracy_score(y[pool], model.predict(X.iloc[pool]))
    assert unshifted - realized > 0.04  # the window is really harder than the reference
    assert est["n"] == WINDOW and est["method"] == "cbpe"
    assert abs(est["accuracy"] - realized) <= 0.03, (est["accuracy"], realized)
    lo, hi = est["accuracy_ci"]
    assert lo < realized < hi and hi - lo == pytest.approx(2 * 1.96 * np.sqrt(est["accuracy"] * (1 - est["accuracy"]) / WINDOW))
    # the others are looser (fewer rows behind each; observed gaps 0.01-0.08 on this window)
    assert abs(est["roc_auc"] - roc_auc_score(y[rows], model.predict_proba(X.iloc[rows])[:, 1])) <= 0.1
    for metric, fn in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
        assert abs(est[metric] - fn(y[rows], predicted)) <= 0.1, metric

    # The labels arrive: realized metrics and the gap over the same rows.
    monitor.observe_joined(joined, now=3.0)
    snap = monitor.snapshots(now=4.0)[0]
    assert snap.rolling["accuracy"] == pytest.approx(realized)
    gap = snap.stats["estimation_gap"]
    assert gap["metric"] == "accuracy" and len(gap["windows"]) == 1
    assert gap["windows"][0] == pytest.approx(est["accuracy"] - realized, abs=1e-9)


def test_label_flip_is_not_seen_by_estimation_but_by_realized_accuracy(fitted, registry):
    """Concept drift: the inputs are as at training time, the labels of half
    the input space are swapped. The estimate cannot see it (it only sees
    inputs and confidences); the realized accuracy and the gap series do."""
    X, y, model, estimation, pool = fitted
    registry.register_version("bananas", model, estimation=estimation)
    monitor = _monitor(registry, "bananas")
    rows = pool[:WINDOW]
    labels = flip_labels(X, y, rows)
    preds, joined, predicted = events(model, X, rows, labels, "bananas")
    monitor.observe_predictions(preds, now=1.0)
    estimated = monitor.snapshots(now=2.0)[0].stats["estimated"]["accuracy"]
    before = accuracy_score(y[rows], predicted)  # what the model scores without the flip
    after = accuracy_score(labels, predicted)
    assert abs(estimated - before) <= 0.03 and before - after > 0.2
    monitor.observe_joined(joined, now=3.0)
    snap = monitor.snapshots(now=4.0)[0]
    assert snap.rolling["accuracy"] == pytest.approx(after)
    assert snap.stats["estimation_gap"]["windows"][0] == pytest.approx(estimated - after, abs=1e-9)
    assert snap.stats["estimation_gap"]["windows"][0] > 0.2  # the series says: do not trust the estimate now


def test_estimated_performance_alert_and_retrain_request(fitted, registry):
    X, y, model, estimation, pool = fitted
    registry.register_version("bananas", model, estimation=estimation)
    monitor = _monitor(registry, "bananas", estimated_thresholds={"accuracy": 0.78},
                       estimated_cooldown_s=100.0, retrain_on=("estimated_performance",))
    rows = hard_window(model, X, pool, WINDOW, seed=2)
    preds, _, _ = events(model, X, rows, y[rows], "bananas")
    more, _, _ = events(model, X, rows, y[rows], "bananas", prefix="m")
    out = monitor.observe_predictions(preds[:WINDOW - 100], now=1.0)
    out.extend(monitor.flush(now=1.0))
    assert out.alerts == []  # the window is not full yet
    # a window wholly after the one-event warm-up
    out = monitor.observe_predictions(preds[WINDOW - 100:] + more[:50], now=2.0)
    out.extend(monitor.flush(now=2.0))
    est = monitor.snapshots(now=2.0)[0].stats["estimated"]["accuracy"]
    assert est < 0.78
    [alert] = out.alerts
    assert (alert.kind, alert.subject, alert.detector) == ("estimated_performance", "accuracy", "cbpe")
    assert alert.value == pytest.approx(est) and alert.threshold == 0.78
    [request] = out.retrain_requests
    assert request.reason == "metric" and request.alert_ids == [alert.alert_id]
    # its own cooldown: 100 s, not the policy's 600 s
    assert monitor.observe_predictions(more, now=50.0).alerts + monitor.flush(now=50.0).alerts == []
    late = monitor.observe_predictions(more, now=150.0).alerts + monitor.flush(now=150.0).alerts
    assert [a.kind for a in late] == ["estimated_performance"]


def test_policy_validates_estimated_settings():
    policy = Policy.from_dict({"monitor": {"estimated_thresholds": {"accuracy": 0.8}, "estimated_cooldown_s": 60,
                                           "retrain_on": ["estimated_performance"]}})
    assert policy.monitor.estimated_thresholds == {"accuracy": 0.8}
    assert Policy.from_dict(policy.to_dict()) == policy
    with pytest.raises(ValueError, match="monitor.estimated_thresholds.log_loss"):
        Policy.from_dict({"monitor": {"estimated_thresholds": {"log_loss": 0.8}}})


def test_monitor_state_round_trip_keeps_estimation(fitted, registry):
    X, y, model, estimation, pool = fitted
    registry.register_version("bananas", model, estimation=estimation)
    monitor = _monitor(registry, "bananas")
    preds, joined, _ = events(model, X, pool[:300], y[pool[:300]], "bananas")
    monitor.observe_predictions(preds, now=1.0)
    monitor.observe_joined(joined[:200], now=1.0)
    restored = ModelMonitor.from_state(monitor.to_state(), monitor.policy, lambda v: registry.get_profile("bananas", v))
    assert restored.snapshots(2.0)[0].stats["estimated"] == monitor.snapshots(2.0)[0].stats["estimated"]
    assert restored.snapshots(2.0)[0].stats["estimation_gap"] == monitor.snapshots(2.0)[0].stats["estimation_gap"]


def test_calibration_round_trips_and_is_refused_when_tampered_with(fitted, registry, tmp_path):
    X, y, model, estimation, pool = fitted
    version = registry.register_version("bananas", model, estimation=estimation)
    assert version.tags[TAG]
    loaded = registry.get_estimation("bananas", 1)
    assert isinstance(loaded, ClassCalibration) and loaded.classes == ["0", "1"] and loaded.ece == estimation["ece"]
    raw = model.predict_proba(X.iloc[pool[:50]])
    assert np.array_equal(loaded.calibrate(raw)[:, 1],
                          np.interp(raw[:, 1], estimation["maps"]["1"]["x"], estimation["maps"]["1"]["y"]))

    # Someone edits the stored map (better-looking confidences).
    db = sqlite3.connect(tmp_path / "registry" / "registry.db")
    profile = json.loads(db.execute("SELECT profile FROM versions WHERE model = 'bananas'").fetchone()[0])
    profile["estimation"]["maps"]["1"]["y"] = [min(1.0, v + 0.1) for v in profile["estimation"]["maps"]["1"]["y"]]
    db.execute("UPDATE versions SET profile = ? WHERE model = 'bananas'", (json.dumps(profile),))
    db.commit()
    db.close()
    with pytest.raises(ArtifactIntegrityError, match="checksum mismatch"):
        registry.get_estimation("bananas", 1)
    served = registry.get_profile("bananas", 1)
    assert served is not None and "estimation" not in served
    monitor = _monitor(registry, "bananas")
    preds, _, _ = events(model, X, pool[:100], y[pool[:100]], "bananas")
    monitor.observe_predictions(preds, now=1.0)
    assert "estimated" not in monitor.snapshots(2.0)[0].stats


def test_regression_estimated_mae_under_covariate_shift(registry, tmp_path):
    data = load_diabetes(as_frame=True)
    X, y = data.data, data.target.to_numpy()
    idx = np.random.default_rng(0).permutation(len(y))
    train, holdout, pool = idx[:180], idx[180:310], idx[310:]
    model = Ridge().fit(X.iloc[train], y[train])
    registry.register_version("diabetes", model, estimation=fit_estimation(model, X.iloc[holdout], y[holdout],
                                                                            "regression"))
    assert isinstance(registry.get_estimation("diabetes", 1), LossEstimator)
    # covariate shift: windows drawn toward high body-mass index
    bmi = X.iloc[pool]["bmi"].to_numpy()
    weight = np.exp(2 * (bmi - bmi.mean()) / bmi.std())
    rows = pool[np.random.default_rng(3).choice(len(pool), 70, replace=False, p=weight / weight.sum())]
    assert X.iloc[rows]["bmi"].mean() > X.iloc[pool]["bmi"].mean() + 0.5 * bmi.std()
    from driftline.events import Prediction

    yhat = model.predict(X.iloc[rows])
    preds = [Prediction(f"r{i}", "diabetes", 1, 1.0, {k: float(v) for k, v in f.items()}, float(p))
             for i, (f, p) in enumerate(zip(X.iloc[rows].to_dict("records"), yhat))]
    monitor = ModelMonitor("diabetes", MonitorPolicy(window=100, warmup=1, task="regression"),
                           lambda v: registry.get_profile("diabetes", v))
    monitor.observe_predictions(preds, now=1.0)
    est = monitor.snapshots(2.0)[0].stats["estimated"]
    realized = float(np.mean(np.abs(y[rows] - yhat)))
    assert est["method"] == "dle" and est["n"] == 70
    assert abs(est["mae"] - realized) <= 0.15 * realized, (est["mae"], realized)


def test_tampered_loss_estimator_model_is_refused(registry, tmp_path):
    """The DLE model is a skops file: a changed one is refused even when
    the outer checksum was recomputed to match."""
    import base64

    from driftline.registry.calibration import load, payload_sha256

    data = load_diabetes(as_frame=True)
    model = Ridge().fit(data.data[:200], data.target[:200])
    payload = fit_estimation(model, data.data[200:], data.target[200:].to_numpy(), "regression")
    blob = bytearray(base64.b64decode(payload["model"]))
    blob[len(blob) // 2] ^= 1
    payload["model"] = base64.b64encode(bytes(blob)).decode()
    with pytest.raises(ArtifactIntegrityError):
        load(payload, payload_sha256(payload))
    payload["model"] = base64.b64encode(b"\x80\x04K\x01.").decode()
    payload["model_sha256"] = __import__("hashlib").sha256(b"\x80\x04K\x01.").hexdigest()
    with pytest.raises(UntrustedArtifactError):
        load(payload, payload_sha256(payload))


def test_train_and_register_keep_an_estimation_map(fitted, registry):
    import pandas as pd
    import skops.io as sio

    from driftline.retrain.trainer import train_frame

    X, y, model, _, pool = fitted
    frame = X.assign(label=y)
    train_frame(registry, "bananas", frame.iloc[:2000], "label")
    cal = registry.get_estimation("bananas", 1)
    assert isinstance(cal, ClassCalibration) and cal.classes == ["0", "1"]
    assert 0 <= cal.ece < 0.1 and registry.get_version("bananas", 1).tags[TAG] == cal.sha256

    diabetes = load_diabetes(as_frame=True).frame
    train_frame(registry, "diabetes", diabetes, "target", estimator="gradient_boosting_regressor")
    assert isinstance(registry.get_estimation("diabetes", 1), LossEstimator)

    # `driftline registry register` path: a skops file plus labelled reference data
    data = sio.dumps(model)
    reference = pd.DataFrame(X.iloc[pool]).assign(label=y[pool])
    version = registry.register_artifact("outside", data, reference=reference, target="label")
    assert isinstance(registry.get_estimation("outside", version.version), ClassCalibration)
    assert registry.register_artifact("outside", data, reference=reference.drop(columns="label")).tags.get(TAG) is None


def test_driftline_metrics_line_shows_estimates_beside_realized(fitted, registry):
    from driftline.usercli import format_snapshot

    X, y, model, estimation, pool = fitted
    registry.register_version("bananas", model, estimation=estimation)
    monitor = _monitor(registry, "bananas")
    preds, joined, _ = events(model, X, pool[:WINDOW], y[pool[:WINDOW]], "bananas")
    monitor.observe_predictions(preds, now=1.0)
    line = format_snapshot(monitor.snapshots(2.0)[0])
    assert "est:accuracy=0." in line and " accuracy=" not in line and "gap=" not in line  # no labels yet
    monitor.observe_joined(joined, now=3.0)
    snap = monitor.snapshots(4.0)[0]
    line = format_snapshot(snap)
    assert f"gap={snap.stats['estimation_gap']['last']:+.3f}" in line and "est:roc_auc=" in line
    assert f" accuracy={snap.cumulative['accuracy']:.4g}/" in line  # realized, beside the estimate


def test_monitor_state_holds_the_windows_not_the_map(fitted, registry):
    """The map is read from the registry again on restore (it can be large);
    a version whose map changed meanwhile starts its windows afresh."""
    from driftline.streams import state as state_codec

    X, y, model, estimation, pool = fitted
    registry.register_version("bananas", model, estimation=estimation)
    monitor = _monitor(registry, "bananas")
    preds, _, _ = events(model, X, pool[:300], y[pool[:300]], "bananas")
    monitor.observe_predictions(preds, now=1.0)
    saved = monitor.to_state()
    [version_state] = state_codec.loads(saved)["versions"]
    assert "estimation" not in version_state["profile"] and version_state["estimation"]["state"]
    other = dict(estimation, ece=0.5)
    restored = ModelMonitor.from_state(saved, monitor.policy, lambda v: {"estimation": other})
    assert restored.snapshots(2.0)[0].stats["estimated"]["n"] == 0 and restored.versions[1].estimation.model.ece == 0.5
    assert "estimated" not in ModelMonitor.from_state(saved, monitor.policy, lambda v: None).snapshots(2.0)[0].stats


def test_odd_predictions_are_left_out_of_the_estimate_not_fatal(fitted, registry):
    """Rows without probabilities, with keys spelt another way, with a class
    the calibrator does not know or a boolean for a 0/1 model: the first two
    count as their canonical form, the rest are left out of the window."""
    from driftline.events import Prediction

    X, y, model, estimation, pool = fitted
    registry.register_version("bananas", model, estimation=estimation)
    monitor = _monitor(registry, "bananas")
    f = {"1": 0.0, "2": 0.0}
    odd = [Prediction("a", "bananas", 1, 1.0, f, 1, None), Prediction("b", "bananas", 1, 1.0, f, 1, {"1.0": 0.8, "0.0": 0.2}),
           Prediction("c", "bananas", 1, 1.0, f, 7, {"0": 0.5, "1": 0.5}), Prediction("d", "bananas", 1, 1.0, f, True,
                                                                                     {"0": 0.1, "1": 0.9}),
           Prediction("e", "bananas", 1, 1.0, f, 1.0, {"0": 0.3, "1": 0.7})]
    monitor.observe_predictions(odd, now=1.0)
    est = monitor.snapshots(2.0)[0].stats["estimated"]
    cal = registry.get_estimation("bananas", 1)
    assert est["n"] == 2  # "b" (canonical keys "1"/"0") and "e" (1.0 is class "1")
    assert est["accuracy"] == pytest.approx(float(cal.calibrate_positive(np.array([0.8, 0.7])).mean()))
