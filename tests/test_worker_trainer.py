"""Retraining runs in-process: real broker, real registry (SQLite in a tmp
dir), real scikit-learn. The daemon itself is tested in test_worker_daemon.py."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from driftline.cli import main as cli_main
from driftline.events import ModelEvent
from driftline.policy import Policy
from driftline.registry import open_registry
from driftline.retrain.data import LabeledReader, build_frame, clean_frame, data_hash, split_holdout
from driftline.retrain.recipes import build_recipe, check_policy, is_improvement, score, RecipeError
from driftline.retrain.trainer import Trainer, train_frame
from driftline.retrain.worker import Coordinator, Ticket

from .kafka_helpers import read_records
from .worker_helpers import make_records, publish_records


def _frame(records):
    return pd.DataFrame([{**r.features, "label": r.label} for r in records])


# -- pure parts ---------------------------------------------------------------------------------


def test_cleaning_counts_and_types():
    X = pd.DataFrame({"a": [1.0, np.inf, 3.0, None, 5.0], "b": ["x", "y", None, "x", "y"],
                      "empty": [None] * 5})
    y = pd.Series(["p", "q", None, "p", "q"], dtype=object)
    data = clean_frame(X, y)
    r = data.report
    assert (r.rows_read, r.missing_label, r.non_finite, r.rows_used) == (5, 1, 1, 3)
    assert r.dropped_columns == ["empty"] and r.missing_values == 1  # a=None kept, imputed
    assert data.y.tolist() == ["p", "p", "q"] and list(data.X.columns) == ["a", "b"]
    assert data.X["a"].dtype == float and data.X["b"].tolist() == ["x", "x", "y"]


def test_holdout_is_newest_slice_and_hash_is_order_sensitive():
    records = make_records("m", 10)
    from driftline.retrain.data import WindowRow

    data = build_frame([WindowRow(0, i, r) for i, r in enumerate(records)])
    train, hold = split_holdout(data, 0.2)
    assert len(train) == 8 and hold.meta["event_id"].tolist() == ["m-0-8", "m-0-9"]
    again = build_frame([WindowRow(0, i, r) for i, r in enumerate(records)])
    assert data_hash(again) == data_hash(data)
    swapped = build_frame([WindowRow(0, i, r) for i, r in enumerate(records[::-1])])
    assert data_hash(swapped) != data_hash(data)


def test_improvement_respects_lower_is_better_and_margin():
    assert is_improvement(0.91, 0.90, "accuracy", 0.0)
    assert not is_improvement(0.91, 0.90, "accuracy", 0.02)
    assert is_improvement(0.20, 0.30, "rmse", 0.05)
    assert not is_improvement(0.30, 0.20, "mae", 0.0)
    assert is_improvement(0.5, None, "accuracy", 0.3) and not is_improvement(None, 0.1, "accuracy", 0.0)


def test_policy_contradictions_are_refused():
    with pytest.raises(RecipeError, match="linear_regression"):
        check_policy(Policy.from_dict({"retrain": {"estimator": "linear_regression"}}))
    with pytest.raises(RecipeError, match="model__nope"):
        check_policy(Policy.from_dict({"retrain": {"estimator": "logistic_regression",
                                                   "search": {"param_grid": {"model__nope": [1]}}}}))
    check_policy(Policy.from_dict({"retrain": {"estimator": "linear_regression", "promotion_metric": "rmse"}}))


def test_coordinator_coalesces_bursts_and_never_overlaps_a_model():
    import threading
    import time

    runs, active, overlap = [], set(), []
    lock = threading.Lock()
    first_started = threading.Event()

    def run(model, tickets):
        with lock:
            if model in active:
                overlap.append(model)
            active.add(model)
        runs.append((model, [t.request_id for t in tickets]))
        first_started.set()
        time.sleep(0.5)
        with lock:
            active.discard(model)

    coord = Coordinator(run, lambda model: 0.3, concurrency=2)
    for i in range(5):
        coord.submit(Ticket("a", f"r{i}", "manual"))
    assert first_started.wait(5)
    coord.submit(Ticket("a", "late", "manual"))  # arrives during the run: the next run
    deadline = time.monotonic() + 10
    while len(runs) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert coord.stop(5)
    assert runs == [("a", ["r0", "r1", "r2", "r3", "r4"]), ("a", ["late"])]
    assert overlap == []


# -- with broker and registry -----------------------------------------------------------------


@pytest.fixture
def reg(settings):
    registry = open_registry(settings, publish=True)
    yield registry
    registry.close()


def test_train_cli_registers_and_promotes_from_csv(settings, test_env, tmp_path, monkeypatch):
    records = make_records("churn", 300, seed=1)
    frame = _frame(records)
    frame.loc[5, "label"] = None
    frame.loc[7, "x1"] = np.inf
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    for key, value in test_env.items():
        if key.startswith("DRIFTLINE_"):
            monkeypatch.setenv(key, value)
    assert cli_main(["train", "churn", "--data", str(path), "--target", "label",
                     "--estimator", "logistic_regression"]) == 0
    reg = open_registry(settings)
    try:
        v1 = reg.resolve("churn@champion")
        assert v1.version == 1 and v1.status == "ready"
        assert v1.lineage["cleaning"]["missing_label"] == 1 and v1.lineage["cleaning"]["non_finite"] == 1
        assert v1.lineage["rows"] == 298
        assert set(v1.profile["features"]) == {"x1", "x2", "plan"}
        assert v1.profile["features"]["plan"]["type"] == "categorical"
        # the stored policy now names the recipe the worker will use for this model
        assert reg.get_policy("churn").retrain.estimator == "logistic_regression"
        # exact value vs scikit-learn on the same split
        clean = frame.drop(index=[5, 7]).reset_index(drop=True)
        X, y = clean[["plan", "x1", "x2"]], clean["label"].astype(int)
        cut = 298 - math.ceil(298 * 0.2)
        pipe = build_recipe("logistic_regression", X.iloc[:cut]).fit(X.iloc[:cut], y.iloc[:cut].tolist())
        expected = float((pipe.predict(X.iloc[cut:]) == y.iloc[cut:].to_numpy()).mean())
        assert v1.metrics["candidate_accuracy"] == pytest.approx(expected, abs=1e-12)
        loaded = reg.load("churn@champion").estimator
        assert loaded.predict(X.iloc[cut:]).tolist() == pipe.predict(X.iloc[cut:]).tolist()
    finally:
        reg.close()
    # a second train makes version 2 the champion
    assert cli_main(["train", "churn", "--data", str(path), "--target", "label"]) == 0
    reg = open_registry(settings)
    try:
        assert reg.resolve("churn@champion").version == 2
    finally:
        reg.close()
    events_ = read_records(settings, "model_events", ModelEvent, quiet_s=1.0,
                           until=lambda msgs: len(msgs) >= 5)
    assert [(e.event, e.version) for e in events_ if e.event in ("registered", "promoted")] == [
        ("registered", 1), ("promoted", 1), ("registered", 2), ("promoted", 2)]


def test_run_promotes_better_candidate_with_lineage_and_exact_scores(settings, reg):
    # champion trained on flipped labels: any honest refit beats it
    bad = _frame(make_records("churn", 300, seed=2, flip=True))
    train_frame(reg, "churn", bad, "label", estimator="logistic_regression")
    records = make_records("churn", 500, seed=3)
    publish_records(settings, records + make_records("other", 50, seed=4))
    trainer = Trainer(settings, reg, LabeledReader(settings, quiet_ms=500))
    result = trainer.run("churn", ["req-1", "req-2"], "drift")
    assert result.outcome == "promoted", result.reason
    v2 = reg.resolve("churn@champion")
    assert v2.version == 2 and v2.request_id == "req-1"
    lin = v2.lineage
    assert lin["rows"] == 500 and lin["parent_version"] == 1 and lin["request_ids"] == ["req-1", "req-2"]
    assert lin["window"]["topic"] == settings.topics.labeled
    assert sum(b - a + 1 for a, b in lin["window"]["offsets"].values()) >= 1
    assert lin["recipe"] == "clone:churn/1" and lin["cleaning"]["rows_used"] == 500
    # recompute independently: same rows, same split, same clone -> same numbers
    frame = _frame(records)
    X, y = frame[["plan", "x1", "x2"]], frame["label"]
    assert lin["data_hash"] == data_hash(build_frame_from(records))
    champion = reg.load("churn/1").estimator
    cut = 400
    candidate = clone(champion).fit(X.iloc[:cut], y.iloc[:cut].tolist())
    expect_c = float((candidate.predict(X.iloc[cut:]) == y.iloc[cut:].to_numpy()).mean())
    expect_h = float((champion.predict(X.iloc[cut:]) == y.iloc[cut:].to_numpy()).mean())
    assert v2.metrics["candidate_accuracy"] == pytest.approx(expect_c, abs=1e-12)
    assert v2.metrics["champion_accuracy"] == pytest.approx(expect_h, abs=1e-12)
    assert expect_c > expect_h
    assert v2.profile["rows"] == 500 and "prediction" in v2.profile
    # its calibration map was fitted on the 100 holdout rows only, and is checked on load
    assert v2.profile["estimation"]["rows"] == 100 and v2.profile["estimation"]["method"] == "sigmoid"
    assert reg.get_estimation("churn", 2).sha256 == v2.tags["estimation_sha256"]

    # the same request again: idempotent, nothing new
    again = trainer.run("churn", ["req-1"], "drift")
    assert again.outcome == "duplicate" and again.version == 2
    assert [v.version for v in reg.list_versions("churn")] == [1, 2]

    # a margin the candidate cannot reach: registered as rejected, with the reason
    reg.set_policy("churn", {"retrain": {"estimator": "logistic_regression", "margin": 0.5}})
    rejected = trainer.run("churn", ["req-3"], "metric")
    assert rejected.outcome == "rejected" and "margin 0.5" in rejected.reason
    v3 = reg.get_version("churn", 3)
    assert v3.status == "rejected" and reg.resolve("churn@champion").version == 2
    events_ = read_records(settings, "model_events", ModelEvent, quiet_s=1.0,
                           until=lambda msgs: any(b'"rejected"' in m.value for m in msgs))
    rej = [e for e in events_ if e.event == "rejected"][0]
    assert rej.request_id == "req-3" and "margin" in rej.reason
    assert set(rej.metrics) >= {"candidate_accuracy", "champion_accuracy"}
    promoted = [e for e in events_ if e.event == "promoted" and e.version == 2][0]
    assert promoted.metrics["champion_accuracy"] == pytest.approx(expect_h)


def build_frame_from(records):
    from driftline.retrain.data import WindowRow

    return build_frame([WindowRow(0, i, r) for i, r in enumerate(records)])


def test_failed_runs_publish_a_reason(settings, reg):
    train_frame(reg, "few", _frame(make_records("few", 100, seed=5)), "label", estimator="logistic_regression")
    train_frame(reg, "mono", _frame(make_records("mono", 100, seed=6)), "label", estimator="logistic_regression")
    publish_records(settings, make_records("few", 30, seed=7) + make_records("mono", 300, seed=8, single_class=True))
    trainer = Trainer(settings, reg, LabeledReader(settings, quiet_ms=500))
    few = trainer.run("few", ["f-1"], "drift")
    mono = trainer.run("mono", ["m-1"], "drift")
    ghost = trainer.run("ghost", ["g-1"], "manual")
    assert few.outcome == mono.outcome == ghost.outcome == "failed"
    assert "too few rows (got 30, need 200)" in few.reason and "min_rows=200" in few.reason
    assert "single class" in mono.reason
    assert "unknown model 'ghost'" in ghost.reason
    events_ = read_records(settings, "model_events", ModelEvent, quiet_s=1.0,
                           until=lambda msgs: sum(b'"failed"' in m.value for m in msgs) >= 3)
    failed = {e.request_id: e for e in events_ if e.event == "failed"}
    assert set(failed) == {"f-1", "m-1", "g-1"}
    assert failed["f-1"].details["rows"] == 30 and "too few rows" in failed["f-1"].reason
    assert [v.version for v in reg.list_versions("few")] == [1]


def test_search_and_regression_recipe(settings, reg):
    rng = np.random.default_rng(9)
    frame = pd.DataFrame({"a": rng.normal(size=400), "b": rng.normal(size=400)})
    frame["y"] = 3 * frame["a"] - frame["b"] + rng.normal(0, 0.1, 400)
    reg.set_policy("price", {"retrain": {"estimator": "linear_regression", "promotion_metric": "rmse",
                                         "search": {"param_grid": {"model__alpha": [0.1, 10.0]}, "cv": 2}}})
    result = train_frame(reg, "price", frame, "y")
    v1 = reg.get_version("price", 1)
    assert result.outcome == "promoted" and v1.params["best_params"] in ({"model__alpha": 0.1},
                                                                         {"model__alpha": 10.0})
    assert 0 < v1.metrics["candidate_rmse"] < 0.5
    assert score(reg.load("price/1").estimator, frame[["a", "b"]], frame["y"], "rmse") < 0.5


def test_reader_keeps_the_newest_rows_and_the_time_window(settings):
    from driftline import events as ev

    now = ev.now()
    old = make_records("w", 300, seed=20, start_ts=now - 10_000)
    new = make_records("w", 250, seed=21, start_ts=now - 1_000)
    publish_records(settings, old + new + make_records("x", 40, seed=22), chunk=100)
    from .worker_helpers import producer

    prod = producer(settings)  # a broken message that mentions the model: counted, not fatal
    prod.send(settings.topics.labeled, b'[{"model": "w", "event_id": 5}]')
    prod.flush(10)
    prod.close(10)
    reader = LabeledReader(settings, quiet_ms=500)
    newest = reader.read("w", window_rows=100)
    assert [row.record.event_id for row in newest.rows] == [r.event_id for r in new[-100:]]
    assert newest.unparseable == 1
    young = reader.read("w", window_rows=10_000, window_s=5_000)
    assert len(young.rows) == 250 and {r.record.model for r in young.rows} == {"w"}
    lineage = young.lineage()
    assert lineage["first_timestamp"] == new[0].label_timestamp
    assert lineage["last_timestamp"] == new[-1].label_timestamp


def test_train_refuses_a_continuous_target_for_a_classifier(reg):
    from driftline.retrain.trainer import RunError

    frame = pd.DataFrame({"a": np.arange(50.0), "y": np.arange(50.0) * 0.37})
    with pytest.raises(RunError, match="gradient_boosting_regressor"):
        train_frame(reg, "cont", frame, "y")
    result = train_frame(reg, "cont", frame, "y", estimator="linear_regression")
    assert result.outcome == "promoted" and reg.get_policy("cont").retrain.promotion_metric == "rmse"


def test_rerun_after_a_crash_between_register_and_promote_finishes_the_promotion(settings, reg):
    frame = _frame(make_records("half", 300, seed=30))
    train_frame(reg, "half", frame, "label", estimator="logistic_regression")
    fitted = reg.load("half/1").estimator
    # what a killed run leaves behind: registered with the decision, never promoted
    reg.register_version("half", fitted, tags={"decision": "promote", "trigger": "drift"}, request_id="h-1",
                         metrics={"candidate_accuracy": 0.9, "champion_accuracy": 0.8}, lineage={"rows": 300})
    assert reg.resolve("half@champion").version == 1
    result = Trainer(settings, reg, LabeledReader(settings, quiet_ms=200)).run("half", ["h-1"], "drift")
    assert result.outcome == "promoted" and result.version == 2
    assert reg.resolve("half@champion").version == 2
    assert [v.version for v in reg.list_versions("half")] == [1, 2]
