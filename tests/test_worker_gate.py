"""The promotion gate in real runs: real registry (events on the real
broker), real scikit-learn, training data from a real segment store.

Every expected number is recomputed here independently with scikit-learn
on the rows the run must have used, so the tests fail if the gate fits on
the holdout, tunes on it, or records other scores.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.tree import DecisionTreeClassifier

from driftline import events
from driftline.events import LabeledRecord, ModelEvent
from driftline.registry import open_registry
from driftline.retrain.store import StoredRow, StoreWindowReader, TrainingStore, store_root
from driftline.retrain.trainer import Trainer, train_frame

from .kafka_helpers import read_records
from .worker_helpers import make_records


def numeric_records(model: str, n: int, *, seed: int, noise: float = 0.0, minority: int | None = None,
                    flip_from: int | None = None) -> list[LabeledRecord]:
    """x1, x2 numeric; label = x1 > 0, each label flipped with probability
    ``noise``; with ``minority`` only that many rows of class 1 (the rest 0);
    from index ``flip_from`` on every label is inverted (a changed concept)."""
    rng = np.random.default_rng(seed)
    start = events.now() - 10 * n
    out = []
    ones = 0
    for i in range(n):
        x1, x2 = float(rng.normal()), float(rng.normal())
        label = int(x1 > 0)
        if rng.random() < noise:
            label = 1 - label
        if minority is not None:
            label = 1 if (ones < minority and i % 7 == 0) else 0
            ones += label
        if flip_from is not None and i >= flip_from:
            label = 1 - label
        ts = start + 10 * i
        out.append(LabeledRecord(event_id=f"{model}-{seed}-{i}", model=model, model_version=1,
                                 features={"x1": x1, "x2": x2}, prediction=label, label=label,
                                 prediction_timestamp=ts - 1, label_timestamp=ts))
    return out


def _xy(records):
    X = pd.DataFrame([r.features for r in records]).reindex(columns=["x1", "x2"])
    return X, [r.label for r in records]


@pytest.fixture
def reg(settings):
    registry = open_registry(settings, publish=True)
    yield registry
    registry.close()


def _trainer(settings, reg, model, records):
    store = TrainingStore(store_root(settings))
    store.write_flush(settings.topics.labeled, {model: [StoredRow(i % 4, i, 0, r) for i, r in enumerate(records)]})
    return Trainer(settings, reg, StoreWindowReader(store, topic=settings.topics.labeled))


def _champion(reg, model, estimator, records, policy, flip=False):
    reg.create_model(model)
    reg.set_policy(model, policy)
    X, y = _xy(records)
    if flip:  # a champion that learned the opposite concept: any honest candidate beats it
        y = [1 - v for v in y]
    reg.register_version(model, estimator.fit(X, y), metrics={}, tags={"decision": "promote"})
    reg.promote(model, 1)


def test_deep_tree_on_noisy_labels_is_rejected_for_overfitting(settings, reg):
    records = numeric_records("tree", 500, seed=1, noise=0.3)
    _champion(reg, "tree", DecisionTreeClassifier(random_state=0), numeric_records("tree", 200, seed=2),
              {"retrain": {"min_rows": 100, "cv_folds": 5, "max_overfit_gap": 0.15, "margin": 0.0}})
    result = _trainer(settings, reg, "tree", records).run("tree", ["t-1"], "drift")
    assert result.outcome == "rejected", result.reason
    v2 = reg.get_version("tree", 2)
    assert v2.status == "rejected" and reg.resolve("tree@champion").version == 1
    # independently: the same tree on the same 400 oldest rows, the same 5 contiguous stratified folds
    X, y = _xy(records[:400])
    tree = DecisionTreeClassifier(random_state=0)
    folds = [float((clone(tree).fit(X.iloc[a], [y[i] for i in a]).predict(X.iloc[b]) == np.array(y)[b]).mean())
             for a, b in StratifiedKFold(5).split(X, y)]
    assert v2.metrics["train_accuracy"] == 1.0
    assert v2.metrics["cv_accuracy_mean"] == pytest.approx(float(np.mean(folds)), abs=1e-12)
    assert v2.metrics["cv_accuracy_std"] == pytest.approx(float(np.std(folds)), abs=1e-12)
    assert v2.metrics["overfit_gap_cv"] == pytest.approx(1.0 - float(np.mean(folds)), abs=1e-12)
    assert v2.lineage["gate"]["cv_scores"] == pytest.approx(folds, abs=1e-12)
    assert v2.metrics["overfit_gap_cv"] > 0.15
    assert (f"overfitting: train accuracy=1 vs cv accuracy={np.mean(folds):.6g} "
            f"(gap {1.0 - np.mean(folds):.6g} > retrain.max_overfit_gap=0.15)") in v2.reason
    rejected = [e for e in read_records(settings, "model_events", ModelEvent, quiet_s=1.0,
                                        until=lambda ms: any(b'"rejected"' in m.value for m in ms))
                if e.event == "rejected"]
    assert rejected and "overfitting: train accuracy=1" in rejected[0].reason
    assert {"train_accuracy", "cv_accuracy_mean", "cv_accuracy_std", "overfit_gap_cv"} <= set(rejected[0].metrics)

    # the same data with a shallow tree passes the gate (so the check can fail both ways)
    reg.set_policy("tree", {"retrain": {"min_rows": 100, "cv_folds": 5, "max_overfit_gap": 0.15}})
    reg.register_version("tree", DecisionTreeClassifier(max_depth=1, random_state=0).fit(*_xy(records[:50])))
    reg.promote("tree", 3)
    shallow = _trainer(settings, reg, "tree", []).run("tree", ["t-2"], "drift")
    assert "overfitting" not in (shallow.reason or ""), shallow.reason
    assert shallow.metrics["overfit_gap_cv"] < 0.15


def test_holdout_rows_are_never_fitted_and_cv_scores_are_on_the_version(settings, reg):
    records = numeric_records("knn", 300, seed=3, noise=0.1)
    # 1-nearest-neighbour keeps its fitting rows: the fitted model shows exactly which rows it saw
    _champion(reg, "knn", KNeighborsClassifier(n_neighbors=1, algorithm="brute"), numeric_records("knn", 50, seed=4),
              {"retrain": {"min_rows": 100, "cv_folds": 4, "holdout_fraction": 0.25}}, flip=True)
    result = _trainer(settings, reg, "knn", records).run("knn", ["k-1"], "manual")
    assert result.outcome == "promoted", result.reason
    v2 = reg.get_version("knn", 2)
    fitted_rows = {tuple(row) for row in reg.load("knn/2").estimator._fit_X.tolist()}
    train, holdout = records[:225], records[225:]  # the newest quarter is the holdout
    assert fitted_rows == {(r.features["x1"], r.features["x2"]) for r in train}
    assert fitted_rows.isdisjoint({(r.features["x1"], r.features["x2"]) for r in holdout})
    split = v2.lineage["split"]
    assert split["holdout"]["ids_sha256"] == hashlib.sha256("\n".join(r.event_id for r in holdout).encode()).hexdigest()
    assert split["train"]["ids_sha256"] == hashlib.sha256("\n".join(r.event_id for r in train).encode()).hexdigest()
    assert split["train"]["max_timestamp"] < split["holdout"]["min_timestamp"]
    X, y = _xy(train)
    folds = [float((clone(KNeighborsClassifier(n_neighbors=1, algorithm="brute")).fit(X.iloc[a], [y[i] for i in a])
                    .predict(X.iloc[b]) == np.array(y)[b]).mean()) for a, b in StratifiedKFold(4).split(X, y)]
    assert v2.metrics["cv_folds"] == 4.0
    assert v2.metrics["cv_accuracy_mean"] == pytest.approx(float(np.mean(folds)), abs=1e-12)
    assert v2.metrics["cv_accuracy_std"] == pytest.approx(float(np.std(folds)), abs=1e-12)
    promoted = [e for e in read_records(settings, "model_events", ModelEvent, quiet_s=1.0,
                                        until=lambda ms: sum(b'"promoted"' in m.value for m in ms) >= 2)
                if e.event == "promoted" and e.version == 2]
    assert promoted[0].metrics["cv_accuracy_mean"] == v2.metrics["cv_accuracy_mean"]


def test_search_is_scored_by_cross_validation_never_by_the_holdout(settings, reg):
    # the newest 20% (the holdout) follows the inverted concept: tuning on it would pick differently
    records = numeric_records("grid", 400, seed=5, noise=0.25, flip_from=320)
    base = make_records("grid", 100, seed=6)
    train_frame(reg, "grid", pd.DataFrame([{"x1": r.features["x1"], "x2": r.features["x2"], "label": r.label}
                                           for r in base]), "label", estimator="logistic_regression")
    grid_spec = {"model__C": [0.0001, 0.01, 1.0]}
    reg.set_policy("grid", {"retrain": {"estimator": "logistic_regression", "min_rows": 100,
                                        "search": {"param_grid": grid_spec, "cv": 3}}})
    result = _trainer(settings, reg, "grid", records).run("grid", ["g-1"], "manual")
    assert result.outcome in ("promoted", "rejected"), result.reason
    v2 = reg.get_version("grid", 2)
    champion = reg.load("grid/1").estimator
    X, y = _xy(records[:320])
    search = GridSearchCV(clone(champion), grid_spec, cv=StratifiedKFold(3), scoring="accuracy").fit(X, y)
    assert v2.params["best_params"] == search.best_params_
    assert v2.params["cv_score"] == pytest.approx(search.best_score_, abs=1e-12)
    assert v2.params["search_rows"] == 320 == v2.lineage["train_rows"]
    # had the holdout been part of the search, the winning score would be another one
    X_all, y_all = _xy(records)
    leaky = GridSearchCV(clone(champion), grid_spec, cv=StratifiedKFold(3), scoring="accuracy").fit(X_all, y_all)
    assert leaky.best_score_ != pytest.approx(search.best_score_, abs=1e-6)
    assert "cv_accuracy_mean" in v2.metrics


def test_too_few_rows_per_class_refuses_the_run_with_the_counts(settings, reg):
    records = numeric_records("rare", 300, seed=7, minority=6)
    train_ones = sum(r.label for r in records[:240])
    _champion(reg, "rare", DecisionTreeClassifier(max_depth=2, random_state=0), numeric_records("rare", 50, seed=8),
              {"retrain": {"min_rows": 100, "min_rows_per_class": 20}})
    result = _trainer(settings, reg, "rare", records).run("rare", ["r-1"], "manual")
    assert result.outcome == "failed"
    assert result.reason == (f"too few training rows per class: class 0 has {240 - train_ones}, class 1 has "
                             f"{train_ones} (retrain.min_rows_per_class=20)")
    assert [v.version for v in reg.list_versions("rare")] == [1]
    failed = [e for e in read_records(settings, "model_events", ModelEvent, quiet_s=1.0,
                                      until=lambda ms: any(b'"failed"' in m.value for m in ms))
              if e.event == "failed"]
    assert failed[0].request_id == "r-1" and "min_rows_per_class=20" in failed[0].reason
