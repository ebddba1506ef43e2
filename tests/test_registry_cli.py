"""``driftline registry ...`` and ``python -m registry ...``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from driftline.cli import main
from registry import open_registry
from tests.registry_fixtures import backend, reg_settings, small_model  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cli(reg_settings, monkeypatch, capsys):
    """Run ``driftline registry ARGS`` in-process on this test's registry:
    returns (exit code, stdout, stderr)."""
    for key in list(os.environ):
        if key.startswith("DRIFTLINE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("DRIFTLINE_REGISTRY", reg_settings.registry)
    if reg_settings.registry_artifacts:
        monkeypatch.setenv("DRIFTLINE_REGISTRY_ARTIFACTS", reg_settings.registry_artifacts)

    def run(*args: str):
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
    assert cli("alias", "churn", "champion", "2")[1].strip() == "churn@champion -> version 2"
    assert json.loads(cli("show", "churn@champion", "--json")[1])["version"] == 2
    code, out, _ = cli("rollback", "churn", "--json")
    assert code == 0 and json.loads(out) == {"model": "churn", "alias": "champion", "version": 1}
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
    result = subprocess.run([sys.executable, "-m", "registry", "models"], cwd=ROOT, env=env,
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
