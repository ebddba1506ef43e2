import json

import pytest

from driftline.policy import Policy, PolicyError, load_policy_file


def test_defaults_and_round_trip():
    policy = Policy()
    assert policy.monitor.concept_drift.name == "adwin"
    assert Policy.from_json(policy.to_json()) == policy


def test_partial_file_overrides_only_what_it_names(tmp_path):
    path = tmp_path / "churn.json"
    path.write_text(json.dumps({
        "monitor": {"cooldown_s": 30, "concept_drift": {"name": "ddm", "params": {"warm_start": 50}},
                    "metric_thresholds": {"accuracy": 0.8}},
        "retrain": {"schedule": {"cron": "0 3 * * *"}, "promotion_metric": "f1", "margin": 0.01},
    }))
    policy = load_policy_file(path)
    assert policy.monitor.cooldown_s == 30.0
    assert policy.monitor.concept_drift.params == {"warm_start": 50}
    assert policy.monitor.window == 1000  # default kept
    assert policy.retrain.schedule == {"cron": "0 3 * * *"}


@pytest.mark.parametrize(
    "data, message",
    [
        ({"monitr": {}}, "monitr: unknown setting"),
        ({"monitor": {"cooldwn_s": 1}}, "monitor.cooldwn_s: unknown setting"),
        ({"monitor": {"window": 0}}, "monitor.window: must be an integer from 1"),
        ({"monitor": {"window": 10.5}}, "monitor.window: must be an integer from 1"),
        ({"monitor": {"concept_drift": "magic"}}, "monitor.concept_drift.name: must be one of"),
        ({"monitor": {"metric_thresholds": {"speed": 1}}}, "monitor.metric_thresholds.speed: is not a known metric"),
        ({"monitor": {"outlier_rate": 2}}, "monitor.outlier_rate: must be in (0, 1]"),
        ({"retrain": {"schedule": {"cron": "daily"}}}, "retrain.schedule.cron: must be a five-field"),
        ({"retrain": {"schedule": {"interval_s": -5}}}, "retrain.schedule.interval_s: must be a positive"),
        ({"retrain": {"holdout_fraction": 0.9}}, "retrain.holdout_fraction: must be between 0.05 and 0.5"),
        ({"retrain": {"promotion_metric": "vibes"}}, "retrain.promotion_metric: is not a known metric"),
        ({"retrain": {"min_rows": 10, "window_rows": 5}}, "retrain.min_rows: must not exceed"),
        ({"retrain": {"estimator": "svm"}}, "retrain.estimator: must be one of"),
        ({"retrain": {"search": {"param_grid": {"max_depth": 3}}}}, "retrain.search.param_grid.max_depth"),
        ([], "<policy>: must be an object"),
    ],
)
def test_bad_settings_are_named(data, message):
    with pytest.raises(PolicyError) as caught:
        Policy.from_dict(data)
    assert message in str(caught.value)


def test_unreadable_file(tmp_path):
    with pytest.raises(PolicyError, match="cannot read policy file"):
        load_policy_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(PolicyError, match="not valid JSON"):
        load_policy_file(bad)
