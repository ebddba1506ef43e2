"""The catalogs and the policy agree: every name the policy accepts builds an
implementation, every registered implementation is accepted, every
detector's state round-trips through the state codec, and adding a
detector is one file."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import textwrap
import threading

import numpy as np
import pandas as pd
import pytest

from driftline import policy as policy_module
from driftline.catalog import DETECTORS, ESTIMATORS, METRICS, Catalog, DuplicateName, UnknownName
from driftline.policy import DetectorSpec, Policy, PolicyError
from driftline.retrain.recipes import SEARCH_SCORING, build_recipe, is_improvement, lower_is_better
from driftline.streams import detectors, state
from driftline.streams.drift import ConceptDriftDetector, RiverFeatureDetector, make_feature_test
from driftline.streams.metrics import ClassificationMetrics, RegressionMetrics


def _errors(n: int = 3000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.r_[rng.random(n) < 0.1, rng.random(n) < 0.4].astype(float)


# -- the policy accepts exactly the registered names ------------------------------


@pytest.mark.parametrize("name", DETECTORS.names(kind="data"))
def test_every_data_detector_the_policy_accepts_builds_a_feature_test(name):
    Policy.from_dict({"monitor": {"data_drift": name}})
    test = make_feature_test("numeric", DetectorSpec(name), 100, 200, None, 1e-3)
    assert test.update(np.random.default_rng(1).normal(size=500), 1e-3) is not None


@pytest.mark.parametrize("name", DETECTORS.names(kind="concept"))
def test_every_concept_detector_the_policy_accepts_builds_and_detects(name):
    Policy.from_dict({"monitor": {"concept_drift": name}})
    detector = ConceptDriftDetector(DetectorSpec(name), "classification")
    assert detector.binary == bool(DETECTORS.get(name).binary)
    detector.update(_errors())


@pytest.mark.parametrize("name", DETECTORS.names(kind="outlier"))
def test_every_outlier_detector_is_accepted(name):
    assert Policy.from_dict({"monitor": {"outlier_detector": name}}).monitor.outlier_detector == name


def test_every_registered_detector_is_accepted_by_the_policy_for_its_kind():
    for entry in DETECTORS:
        kinds = entry.kind if isinstance(entry.kind, tuple) else (entry.kind,)
        assert set(kinds) <= {"data", "concept", "outlier"}, entry
        for kind in kinds:
            listed = {"data": policy_module.DATA_DETECTORS, "concept": policy_module.CONCEPT_DETECTORS,
                      "outlier": policy_module.OUTLIER_DETECTORS}[kind]
            assert entry.name in listed


def test_policy_lists_keep_their_order():
    assert policy_module.DATA_DETECTORS == ("ks", "psi", "kswin", "adwin", "page_hinkley", "chi2")
    assert policy_module.CONCEPT_DETECTORS == ("adwin", "ddm", "eddm", "hddm_a", "hddm_w", "fhddm", "page_hinkley")
    assert policy_module.OUTLIER_DETECTORS == ("range", "hst", "both")
    assert policy_module.METRICS == ("accuracy", "precision", "recall", "f1", "log_loss", "roc_auc",
                                     "mae", "rmse", "r2")
    assert policy_module.ESTIMATED_METRICS == ("accuracy", "precision", "recall", "f1", "roc_auc", "mae", "rmse")
    assert policy_module.LOWER_IS_BETTER == ("log_loss", "mae", "rmse")
    assert policy_module.ESTIMATORS[:2] == ("logistic_regression", "random_forest")


@pytest.mark.parametrize("name", METRICS.names())
def test_every_metric_is_accepted_computed_and_searchable(name):
    entry = METRICS.get(name)
    task = entry.task
    assert task in ("classification", "regression")
    Policy.from_dict({"monitor": {"task": task, "metric_thresholds": {name: 0.5}},
                      "retrain": {"promotion_metric": name, "minimums": {name: 0.1}}})
    if task == "classification":
        assert entry.implementation is ClassificationMetrics
        m = ClassificationMetrics()
        m.update(["1", "0", "1"], ["1", "0", "0"], [{"1": 0.9, "0": 0.1}, {"1": 0.2, "0": 0.8}, {"1": 0.4, "0": 0.6}])
    else:
        assert entry.implementation is RegressionMetrics
        m = RegressionMetrics()
        m.update([3.0, -0.5, 2.0], [2.5, 0.0, 2.0])
    assert m.get()[name] is not None
    assert name in SEARCH_SCORING  # the worker can tune for it
    assert lower_is_better(name) == bool(entry.lower_is_better)
    if entry.estimated:
        Policy.from_dict({"monitor": {"estimated_thresholds": {name: 0.5}}})
    else:
        with pytest.raises(PolicyError, match="is not an estimated metric"):
            Policy.from_dict({"monitor": {"estimated_thresholds": {name: 0.5}}})


def test_metric_direction_drives_the_worker():
    assert is_improvement(0.30, 0.35, "log_loss", margin=0.01)
    assert not is_improvement(0.30, 0.35, "accuracy", margin=0.01)
    assert not lower_is_better("no_such_metric")


@pytest.mark.parametrize("name", ESTIMATORS.names())
def test_every_estimator_the_policy_accepts_builds_a_recipe(name):
    task = ESTIMATORS.get(name).task
    metric = "accuracy" if task == "classification" else "mae"
    Policy.from_dict({"monitor": {"task": task}, "retrain": {"estimator": name, "promotion_metric": metric}})
    X = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "c": ["a", "b"] * 3})
    y = [0, 1, 0, 1, 0, 1] if task == "classification" else [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    build_recipe(name, X).fit(X, y).predict(X)


# -- state: every detector's River types are trusted -------------------------------


@pytest.mark.parametrize("name", [e.name for e in DETECTORS.entries() if e.kind != "outlier" and not e.windowed])
def test_every_per_event_detector_round_trips_through_the_state_codec(name):
    entry = DETECTORS.get(name)
    detector = entry.implementation({}, 1e-3 if entry.matches(kind="data") else None,
                                    not entry.matches(kind="data"))
    for x in _errors(300).tolist():  # KSWIN tests every event: keep the stream short
        detector.update(x)
    restored = state.loads(state.dumps(detector))
    assert type(restored) is type(detector)
    tail = _errors(300, seed=2).tolist()
    for x in tail:
        detector.update(x)
        restored.update(x)
        assert restored.drift_detected == detector.drift_detected


def test_trusted_types_are_the_detectors_declared_types():
    declared = {t for entry in DETECTORS for t in (entry.trusted or ())}
    assert state.TRUSTED_RIVER_TYPES == state.trusted_river_types() == frozenset(declared)
    assert "river.drift.binary.hddm_w.SampleInfo" in declared


# -- the catalog itself -----------------------------------------------------------


def test_registering_a_duplicate_name_fails():
    with pytest.raises(DuplicateName, match="'adwin' is registered twice"):
        DETECTORS.add("adwin", object(), kind="data")
    with pytest.raises(DuplicateName):
        METRICS.register("accuracy", task="classification")(type("Accuracy2", (), {}))
    assert DETECTORS.get("adwin").implementation.__module__ == "driftline.streams.detectors.adwin"


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownName, match="unknown estimator 'svm'; known: logistic_regression, random_forest"):
        ESTIMATORS.get("svm")
    with pytest.raises(UnknownName, match="known: range, hst, both$"):
        DETECTORS.get("adwin", kind="outlier")


def test_plugins_load_lazily_once_and_a_missing_plugin_is_skipped(tmp_path, monkeypatch):
    (tmp_path / "catalog_plugin_a.py").write_text(textwrap.dedent("""
        from tests_catalog_probe import shapes
        LOADS = globals().get("LOADS", 0) + 1
        shapes.add("square", "four sides", sides=4)
    """))
    (tmp_path / "tests_catalog_probe.py").write_text(textwrap.dedent("""
        from driftline.catalog import Catalog
        shapes = Catalog("shape", ("catalog_plugin_a", "catalog_plugin_not_installed"))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    probe = importlib.import_module("tests_catalog_probe")
    try:
        assert "catalog_plugin_a" not in sys.modules  # nothing imported before the first lookup
        assert probe.shapes.names(sides=4) == ("square",)
        assert probe.shapes.get("square").implementation == "four sides"
        assert sys.modules["catalog_plugin_a"].LOADS == 1
        assert probe.shapes.names() == ("square",)
    finally:
        for name in ("tests_catalog_probe", "catalog_plugin_a"):
            sys.modules.pop(name, None)



def test_a_lookup_in_another_thread_waits_for_the_plugins(tmp_path, monkeypatch):
    (tmp_path / "catalog_slow_plugin.py").write_text(textwrap.dedent("""
        import time
        from tests_catalog_slow import things
        things.add("one", 1)
        time.sleep(0.3)  # another thread looks up meanwhile
        things.add("two", 2)
    """))
    (tmp_path / "tests_catalog_slow.py").write_text(
        "from driftline.catalog import Catalog\nthings = Catalog('thing', ('catalog_slow_plugin',))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    probe = importlib.import_module("tests_catalog_slow")
    seen = []
    try:
        threads = [threading.Thread(target=lambda: seen.append(probe.things.names())) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert seen == [("one", "two")] * 3
    finally:
        for name in ("tests_catalog_slow", "catalog_slow_plugin"):
            sys.modules.pop(name, None)


def test_order_trait_then_registration_order():
    catalog = Catalog("thing")
    catalog.add("late", 1)
    catalog.add("second", 2, order=2)
    catalog.add("first", 3, order=1)
    assert catalog.names() == ("first", "second", "late")


def test_the_detectors_package_imports_every_module():
    for info in pkgutil.iter_modules(detectors.__path__):
        assert f"{detectors.__name__}.{info.name}" in sys.modules


# -- adding a detector is one file ------------------------------------------------


NEW_DETECTOR = '''
"""A detector that fires when the error exceeds a fixed level (a test's example)."""

from driftline.catalog import DETECTORS


@DETECTORS.register("above", kind=("data", "concept"), binary=True, params=("level",),
                    trusted=("{module}.Above",))
class Above:
    def __init__(self, params, level, concept):
        self.threshold = float(params.get("level", 0.5))
        self.drift_detected = False

    def update(self, x):
        self.drift_detected = x > self.threshold
'''


def test_adding_a_detector_is_one_file(tmp_path, monkeypatch):
    module = "driftline_test_above_detector"
    (tmp_path / f"{module}.py").write_text(NEW_DETECTOR.replace("{module}", module))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module(module)
    try:
        policy = Policy.from_dict({"monitor": {"concept_drift": {"name": "above", "params": {"level": 0.7}},
                                               "data_drift": "above"}})
        assert "above" in policy_module.CONCEPT_DETECTORS and "above" in policy_module.DATA_DETECTORS
        with pytest.raises(PolicyError, match="not a parameter of detector 'above'; known: level"):
            Policy.from_dict({"monitor": {"concept_drift": {"name": "above", "params": {"delta": 1}}}})

        concept = ConceptDriftDetector(policy.monitor.concept_drift, "classification")
        assert concept.binary
        assert concept.update(np.array([0.0, 0.0, 1.0, 0.0])) == [2]
        feature = make_feature_test("numeric", policy.monitor.data_drift, 100, 200, None, 1e-3)
        assert isinstance(feature, RiverFeatureDetector)
        assert [r.offset for r in feature.update(np.array([0.1, 0.9, 0.2]))] == [1]
        # its state is trusted because it said so
        restored = state.loads(state.dumps(concept.detector))
        assert type(restored).__name__ == "Above" and restored.threshold == 0.7
    finally:
        DETECTORS.remove("above")
        sys.modules.pop(module, None)
    with pytest.raises(PolicyError, match="must be one of"):
        Policy.from_dict({"monitor": {"concept_drift": "above"}})
    assert f"{module}.Above" not in state.trusted_river_types()
