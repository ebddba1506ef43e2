"""``driftline registry ...`` and ``python -m driftline.registry ...``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from driftline.cli import main
from driftline.registry import open_registry
from tests.registry_fixtures import backend, reg_settings, small_model  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parent.parent


CHANGING = ("register", "alias", "unalias", "rollback", "delete", "policy")


@pytest.fixture
def cli(reg_settings, monkeypatch, capsys):
    """Run ``driftline registry ARGS`` in-process on this test's registry:
    returns (exit code, stdout, stderr). These tests have no broker, so
    commands that change the registry get ``--no-events`` (events are
    tested in test_registry_events.py)."""
    for key in list(os.environ):
        if key.startswith("DRIFTLINE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("DRIFTLINE_REGISTRY", reg_settings.registry)
    if reg_settings.registry_artifacts:
        monkeypatch.setenv("DRIFTLINE_REGISTRY_ARTIFACTS", reg_settings.registry_artifacts)

    def run(*args: str):
        if args[0] in CHANGING and args[:2] != ("policy", "show"):
            args = (*args, "--no-events")
        code = main(["registry", *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def two_versions(reg_settings):
    with open_registry(reg_settings) as reg:
        reg.register_version("churn", small_model(), metrics={"accuracy": 0.75})
        reg.register_version("churn", small_model(0.1), metrics={"accuracy": 0.8}, tags={"team": "growth"})


def test_listing_and_showing(cli, two_versions):
    code, out, _ = cli("models")
    assert code == 0 and out.splitlines()[1].split()[:3] == ["churn", "2", "default"]
    code, out, _ = cli("versions", "churn", "--json")
    rows = json.loads(out)
    assert [(r["version"], r["metrics"]["accuracy"]) for r in rows] == [(1, 0.75), (2, 0.8)]
    code, out, _ = cli("show", "churn/2", "--json")
    assert json.loads(out)["tags"] == {"team": "growth"} and "profile" not in json.loads(out)
    code, out, _ = cli("show", "churn/2")
    assert "version: 2" in out.splitlines() and "status: ready" in out.splitlines()


def test_alias_rollback_history_delete(cli, two_versions):
    assert cli("alias", "churn", "champion", "1")[0] == 0
    assert cli("alias", "churn", "champion", "2")[1].splitlines() == [
        "churn@champion -> version 2",
        "model events off (--no-events): the monitor, the worker and serving processes were not told"]
    assert json.loads(cli("show", "churn@champion", "--json")[1])["version"] == 2
    code, out, _ = cli("rollback", "churn", "--json")
    assert code == 0 and json.loads(out) == {"model": "churn", "alias": "champion", "version": 1, "events": None}
    moves = json.loads(cli("history", "churn", "--json")[1])
    assert [(m["action"], m["version"]) for m in moves] == [("promoted", 1), ("promoted", 2), ("rolled_back", 1)]
    code, _, err = cli("delete", "churn", "1")
    assert code == 1 and err.strip() == ("driftline: error: version 1 of model 'churn' cannot be deleted: "
                                         "alias(es) champion point at it; move them first")
    assert cli("delete", "churn", "2")[0] == 0
    assert [r["version"] for r in json.loads(cli("versions", "churn", "--json")[1])] == [1]


def test_policy_set_and_show(cli, two_versions, tmp_path):
    good = tmp_path / "policy.json"
    good.write_text(json.dumps({"monitor": {"cooldown_s": 120}, "retrain": {"margin": 0.01}}))
    assert cli("policy", "set", "churn", str(good))[0] == 0
    shown = json.loads(cli("policy", "show", "churn", "--json")[1])
    assert shown["monitor"]["cooldown_s"] == 120.0 and shown["retrain"]["margin"] == 0.01
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"retrain": {"holdout_fraction": 0.9}}))
    code, _, err = cli("policy", "set", "churn", str(bad))
    assert code == 1 and err.startswith("driftline: error: retrain.holdout_fraction:") and err.count("\n") == 1
    assert json.loads(cli("policy", "show", "churn", "--json")[1]) == shown  # unchanged


@pytest.mark.parametrize("args, message", [
    (("show", "churn/9"), "model 'churn' has no version 9 (versions: 1, 2)"),
    (("show", "nope@champion"), "model 'nope' is not registered"),
    (("show", "churn@prod"), "model 'churn' has no alias 'prod' (aliases: none)"),
    (("versions", "../etc"), "model: must be 1-128 characters"),
    (("rollback", "churn"), "model 'churn' has no champion to roll back"),
    (("policy", "show", "nope"), "model 'nope' is not registered"),
    (("policy", "set", "churn", "/nonexistent/policy.json"), "cannot read policy file"),
])
def test_errors_are_one_line(cli, two_versions, args, message):
    code, out, err = cli(*args)
    assert code == 1 and out == ""
    assert err.startswith("driftline: error: ") and message in err and err.count("\n") == 1


def test_real_process_exits_non_zero_without_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env["DRIFTLINE_REGISTRY"] = "postgresql://postgres@127.0.0.1:5432/test"  # no artifact directory
    result = subprocess.run([sys.executable, "-m", "driftline.registry", "models"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "driftline: error: DRIFTLINE_REGISTRY_ARTIFACTS is not set: a PostgreSQL registry needs a directory "
        "(shared by every worker) for its model artifacts"
    ]
    env["DRIFTLINE_REGISTRY"] = str(tmp_path / "registry")
    result = subprocess.run([sys.executable, "-m", "driftline", "registry", "show", "churn@champion"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stderr == "driftline: error: model 'churn' is not registered\n"


def test_models_uri_references(cli, two_versions, reg_settings):
    assert cli("alias", "churn", "champion", "1")[0] == 0
    assert json.loads(cli("show", "models:/churn@champion", "--json")[1])["version"] == 1
    assert json.loads(cli("show", "models:/churn/2", "--json")[1])["tags"] == {"team": "growth"}
    code, _, err = cli("show", "models:/churn")
    assert code == 1 and err == ("driftline: error: model reference 'models:/churn' is invalid: expected "
                                 "NAME@ALIAS, NAME/VERSION, models:/NAME@ALIAS or models:/NAME/VERSION\n")


def _policy_file(tmp_path, data) -> str:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize("data, message", [
    ({"monitor": {"retrain_on": ["concept_drift", "drift"]}},
     "monitor.retrain_on: names an unknown alert kind; known: data_drift, concept_drift, prediction_drift, "
     "metric, latency, outliers, estimated_performance (got 'drift')"),
    ({"monitor": {"concept_drift": "adwinn"}},
     "monitor.concept_drift.name: must be one of adwin, ddm, eddm, hddm_a, hddm_w, fhddm, page_hinkley "
     "(got 'adwinn')"),
    ({"monitor": {"data_drift": {"name": "wasserstein"}}},
     "monitor.data_drift.name: must be one of ks, psi, kswin, adwin, page_hinkley, chi2 (got 'wasserstein')"),
    ({"monitor": {"concept_drift": {"name": "adwin", "params": {"delt": 0.1}}}},
     "monitor.concept_drift.params.delt: not a parameter of detector 'adwin'; known: delta, clock, max_buckets, "
     "min_window_length, grace_period (got 'delt')"),
    ({"monitor": {"data_drift": {"name": "ks", "params": {"alpha": 0.1}}}},
     "monitor.data_drift.params.alpha: not a parameter of detector 'ks'; known: reference_size (got 'alpha')"),
    ({"monitor": {"task": "classify"}}, "monitor.task: must be one of auto, classification, regression (got 'classify')"),
    ({"monitor": {"outlier_detector": "iforest"}}, "monitor.outlier_detector: must be one of range, hst, both"),
    ({"retrain": {"promotion_metric": "auc"}},
     "retrain.promotion_metric: is not a known metric; known: accuracy, precision, recall, f1, log_loss, roc_auc, "
     "mae, rmse, r2 (got 'auc')"),
    ({"retrain": {"estimator": "svm"}}, "retrain.estimator: must be one of logistic_regression, random_forest"),
])
def test_policy_set_refuses_unknown_names(cli, two_versions, tmp_path, data, message):
    code, out, err = cli("policy", "set", "churn", _policy_file(tmp_path, data))
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith("driftline: error: " + message)
    assert cli("models", "--json")[1].count('"has_policy": false') == 1  # nothing stored


def test_policy_set_refuses_a_missing_model_unless_create(cli, two_versions, tmp_path):
    path = _policy_file(tmp_path, {"monitor": {"cooldown_s": 5}})
    code, out, err = cli("policy", "set", "chrun", path)
    assert code == 1 and out == ""
    assert err == ("driftline: error: model 'chrun' is not registered; pass --create to set the policy "
                   "of a new model\n")
    assert [m["name"] for m in json.loads(cli("models", "--json")[1])] == ["churn"]  # no model created
    code, out, _ = cli("policy", "set", "chrun", path, "--create")
    assert code == 0 and out.splitlines()[0] == "policy of chrun updated"
    assert json.loads(cli("policy", "show", "chrun", "--json")[1])["monitor"]["cooldown_s"] == 5.0


def _newcomer_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Your own model in ten commands")
    return text[start:text.index("\n## ", start + 1)]


def test_readme_small_data_policy_is_accepted(cli, two_versions, tmp_path):
    section = _newcomer_section()
    block = section[section.index("```json") + len("```json"):]
    policy = json.loads(block[:block.index("```")])
    path = _policy_file(tmp_path, policy)
    code, out, err = cli("policy", "set", "churn", path)
    assert code == 0, err
    stored = json.loads(cli("policy", "show", "churn", "--json")[1])
    assert stored["monitor"]["warmup"] == 50 and stored["monitor"]["expected_run_length"] == 1000.0
    assert stored["retrain"]["min_rows"] <= stored["retrain"]["window_rows"]


def test_readme_ten_commands_parse():
    """Every ``driftline …`` command the newcomer section shows is one the
    CLI accepts (parsed, not run)."""
    import shlex

    from driftline.cli import build_parser

    section = _newcomer_section()
    block = section[section.index("```sh") + len("```sh"):]
    commands = []
    for line in block[:block.index("```")].splitlines():
        for part in line.split("#")[0].split("&&"):
            words = shlex.split(part.strip().rstrip("&").strip())
            if words[:1] == ["driftline"]:
                commands.append(words[1:])
    assert len(commands) == 10  # make install, then ten driftline commands (steps 3 and 4 are alternatives)
    parser = build_parser()
    for words in commands:
        args = parser.parse_args(words)
        assert callable(args.handler), words
