"""A monitor state saved by an earlier Driftline still loads and continues.

``tests/data/monitor_state_v1.json`` was written by the monitor as it was
before its alerts moved into :mod:`driftline.streams.checks` (one class per
alert kind): two models (classification with estimation before labels,
regression) run a deterministic stream to the middle, save their state (with
events still buffered), then run the rest. The fixture holds the saved bytes
and what the rest produced (alerts without their random ids, retrain reasons,
snapshots). Today's code must load those bytes, write them back unchanged and
produce the same rest.

Regenerate only from a checkout of that earlier code::

    python -m tests.test_monitor_state_compat
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from driftline.events import LabeledRecord, Prediction
from driftline.policy import DetectorSpec, MonitorPolicy
from driftline.streams import state as state_codec
from driftline.streams.model_monitor import ModelMonitor

FIXTURE = Path(__file__).parent / "data" / "monitor_state_v1.json"
SAVE_AT = 24  # steps before the saved state; the fixture holds what steps SAVE_AT.. produced
STEPS = 60
BATCH = 45  # not a multiple of the monitor's chunk: the saved state has buffered events


def _policies() -> dict[str, MonitorPolicy]:
    common = dict(window=200, warmup=100, cooldown_s=8.0, drift_window=100, expected_run_length=1e4,
                  data_drift=DetectorSpec("ks", {"reference_size": 300}), latency_p95_ms=40.0,
                  outlier_rate=0.03, retrain_cooldown_s=20.0,
                  retrain_on=("concept_drift", "metric", "data_drift", "latency"))
    return {
        "churn": MonitorPolicy(task="classification", outlier_detector="both", metric_thresholds={"accuracy": 0.8},
                               estimated_thresholds={"accuracy": 0.85}, estimated_cooldown_s=4.0, **common),
        "price": MonitorPolicy(task="auto", metric_thresholds={"mae": 0.6},
                               concept_drift=DetectorSpec("page_hinkley"), **common),
    }


def _estimation() -> dict:
    from sklearn.linear_model import LogisticRegression

    from driftline.registry.calibration import fit_estimation

    rng = np.random.default_rng(0)
    X = rng.normal(size=(1200, 2))
    y = (X[:, 0] + 0.5 * rng.normal(size=1200) > 0).astype(int)
    model = LogisticRegression().fit(X[:600], y[:600])
    return fit_estimation(model, X[600:], y[600:], "classification")


def _step(model: str, step: int) -> tuple[list[Prediction], list[LabeledRecord]]:
    """One batch of predictions and their joined records; from step 30 on the
    inputs, labels and latencies change."""
    rng = np.random.default_rng(1000 * (model == "price") + step)
    late = step >= 30
    x = rng.normal(size=(BATCH, 2))
    if late:
        x[:, 0] += 1.5
    preds, joined = [], []
    for i in range(BATCH):
        eid = f"{model}-{step}-{i}"
        version = 2 if step % 11 == 5 else 1
        feats = {"x0": float(x[i, 0]), "x1": float(x[i, 1]), "plan": ("a", "b", "c")[i % 3] if not late or i % 4
                 else "z"}
        latency = float(rng.uniform(5, 60 if late else 30))
        t = float(step)
        if model == "churn":
            p1 = float(1 / (1 + np.exp(-2 * x[i, 0])))
            pred = int(p1 > 0.5)
            label = pred if rng.random() < (0.6 if late else 0.9) else 1 - pred
            probs = {"0": 1 - p1, "1": p1}
        else:
            pred = float(x[i, 0] + x[i, 1] + 0.1 * rng.normal())
            label = pred + float(rng.normal() * (1.5 if late else 0.3))
            probs = None
        preds.append(Prediction(eid, model, version, t, feats, pred, probs, latency))
        joined.append(LabeledRecord(eid, model, version, feats, pred, label, t, t + 2.0, probs, latency))
    return preds, joined


def _run(mon: ModelMonitor, model: str, steps: range) -> list:
    """Feed steps; joined records arrive one step after their predictions."""
    out = []
    for step in steps:
        preds, _ = _step(model, step)
        res = mon.observe_predictions(preds, now=float(step))
        if step > 0:
            res.extend(mon.observe_joined(_step(model, step - 1)[1], now=float(step) + 0.5))
        if step % 7 == 3:
            mon.observe_expired(1, 3, now=float(step))
        if step == 40:
            mon.on_promoted(1, now=float(step))
        if step % 10 == 9:
            res.extend(mon.flush(now=float(step) + 0.9))
            out.append(["snapshots", [_snapshot(s) for s in mon.snapshots(now=float(step) + 0.95)]])
        out.append(["alerts", [[a.model_version, a.kind, a.subject, a.detector, a.value, a.threshold, a.timestamp,
                                a.message] for a in res.alerts]])
        out.append(["retrain", [[r.reason, r.model_version, r.timestamp, r.message, len(r.alert_ids)]
                                for r in res.retrain_requests]])
    return out


def _snapshot(snap) -> list:
    return [snap.model_version, snap.timestamp, snap.cumulative, snap.rolling, snap.stats]


def _plain(value):
    """What the fixture's JSON holds (state codec: tuples as lists, numpy as numbers)."""
    return state_codec.loads(state_codec.dumps(value))


def _same(a, b) -> bool:
    """Equal, floats to 1e-12 relative: NumPy's vectorised log and BLAS's dot
    round the last bit differently on other CPUs (and memory alignments)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _first_difference(a, b, path: str = "") -> str:
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return next((_first_difference(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b))
                     if not _same(x, y)), path)
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return next((_first_difference(a[k], b[k], f"{path}.{k}") for k in a if not _same(a[k], b[k])), path)
    return f"{path}: {a!r} != {b!r}"


def _profile_for(model: str, estimation: dict | None):
    return (lambda v: {"estimation": estimation}) if model == "churn" else (lambda v: None)


def generate() -> dict:
    estimation = _estimation()
    policies = _policies()
    models = {}
    for model, policy in policies.items():
        mon = ModelMonitor(model, policy, _profile_for(model, estimation), chunk=32)
        _run(mon, model, range(SAVE_AT))
        saved = mon.to_state()
        models[model] = {"state": saved.decode(), "rest": _plain(_run(mon, model, range(SAVE_AT, STEPS)))}
    return {"estimation": estimation, "models": models}


def test_a_state_saved_by_the_earlier_monitor_loads_and_continues_identically():
    fixture = state_codec.loads(FIXTURE.read_bytes())
    policies = _policies()
    kinds = set()
    for model, expected in fixture["models"].items():
        saved = expected["state"].encode()
        mon = ModelMonitor.from_state(saved, policies[model], _profile_for(model, fixture["estimation"]))
        assert mon.to_state() == saved  # the same layout, written back byte for byte
        rest = _plain(_run(mon, model, range(SAVE_AT, STEPS)))
        assert _same(rest, expected["rest"]), _first_difference(rest, expected["rest"])
        kinds |= {alert[1] for kind, items in rest if kind == "alerts" for alert in items}
    # the fixture exercises every alert kind
    assert kinds == {"data_drift", "concept_drift", "prediction_drift", "metric", "latency", "outliers",
                     "estimated_performance"}


if __name__ == "__main__":
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_bytes(json.dumps(json.loads(state_codec.dumps(generate())), indent=None).encode())
    print(f"wrote {FIXTURE}")
