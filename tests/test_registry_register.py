"""``driftline registry register``: a model trained elsewhere, as a real
process, on a real registry and broker; ``models:/`` references and
``registry.load``."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from driftline import registry
from driftline.config import load_settings
from driftline.errors import DriftlineError
from driftline.events import ModelEvent
from driftline.registry import RegistryError, open_registry
from tests.kafka_helpers import read_records
from tests.registry_fixtures import (  # noqa: F401  (fixtures)
    backend,
    malicious_pickle,
    malicious_skops,
    pipeline_data,
    pipeline_model,
    reg,
    reg_settings,
    small_model,
)

ROOT = Path(__file__).resolve().parent.parent


def _run(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "driftline", "registry", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def external(tmp_path):
    """A pipeline fitted "in a notebook", saved with skops, and its training
    data as a CSV with the label column ``churned``."""
    import skops.io as sio

    df, y = pipeline_data(n=240, seed=3)
    model = pipeline_model(n_estimators=10, df=df, y=y)
    artifact = tmp_path / "notebook-model.skops"
    sio.dump(model, artifact)
    reference = tmp_path / "train.csv"
    df.assign(churned=y).to_csv(reference, index=False)
    return model, df, artifact, reference


def test_register_an_external_skops_model(settings, test_env, external):
    model, df, artifact, reference = external
    result = _run(test_env, "register", "churn", str(artifact), "--reference", str(reference), "--target", "churned",
                  "--promote", "--metrics", '{"accuracy": 0.91}', "--tags", "team=growth", "source=notebook")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert lines == [
        f"churn: version 1 registered from notebook-model.skops (sha256 {digest[:12]}, profile of 10 features, "
        "240 rows, target churned); promoted to champion",
        f"event sent: registered churn version 1 (to {settings.topics.model_events})",
        f"event sent: promoted churn@champion version 1 (to {settings.topics.model_events})",
    ]
    with open_registry(settings) as reg_:
        loaded = reg_.load("churn@champion")
        profile = reg_.get_profile("churn", 1)
    version = loaded.version
    # stored byte for byte: the registry's checksum is the file's
    assert version.artifact_sha256 == digest and version.artifact_size == artifact.stat().st_size
    # the labelled reference also gave a calibration map, its checksum in the tags (registry/calibration.py)
    assert version.metrics == {"accuracy": 0.91} and version.tags == {"team": "growth", "source": "notebook",
                                                                      "estimation_sha256": version.tags["estimation_sha256"]}
    assert profile["estimation"]["kind"] == "calibration"
    assert version.lineage["source"] == "external" and version.lineage["reference_rows"] == 240
    assert version.lineage["reference_sha256"] == hashlib.sha256(reference.read_bytes()).hexdigest()
    np.testing.assert_array_equal(loaded.estimator.predict(df), model.predict(df))
    np.testing.assert_array_equal(loaded.estimator.predict_proba(df), model.predict_proba(df))
    assert sorted(profile["features"]) == sorted(df.columns) and profile["rows"] == 240
    assert profile["features"]["x0"]["mean"] == pytest.approx(float(df["x0"].mean()), abs=1e-12)
    assert profile["features"]["c0"]["type"] == "categorical"
    assert profile["target"]["count"] == 240
    assert profile["prediction"]["count"] == 240
    events = read_records(settings, "model_events", ModelEvent, count=2, timeout_s=60)
    assert [(e.event, e.version) for e in events] == [("registered", 1), ("promoted", 1)]
    assert events[0].details["artifact_sha256"] == digest


def test_register_refuses_a_pickle_and_an_untrusted_type(tmp_path, external):
    _model, _df, _artifact, reference = external
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env["DRIFTLINE_REGISTRY"] = str(tmp_path / "registry")
    marker = tmp_path / "pwned"
    pickled = tmp_path / "model.pkl"
    pickled.write_bytes(malicious_pickle(str(marker)))
    result = _run(env, "register", "churn", str(pickled), "--reference", str(reference), "--target", "churned",
                  "--no-events")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        "driftline: error: the artifact is a pickle (or joblib) file: Driftline never loads pickles, because "
        "loading one runs whatever code it names; save the model with skops.io.dump(model, 'model.skops')\n")
    evil = tmp_path / "evil.skops"
    evil.write_bytes(malicious_skops(str(marker)))
    result = _run(env, "register", "churn", str(evil), "--reference", str(reference), "--no-events")
    assert result.returncode == 1 and result.stdout == "" and result.stderr.count("\n") == 1
    assert result.stderr.startswith("driftline: error: artifact needs untrusted type(s) os.mkdir; refused")
    assert not marker.exists()  # nothing in either file ran
    with open_registry(load_settings(environ=env)) as reg_:
        assert reg_.list_models() == []  # nothing registered


def test_register_refuses_a_model_that_cannot_predict_on_its_reference(reg, external):
    _model, df, artifact, _reference = external
    with pytest.raises(RegistryError, match=r"^the model cannot predict on the reference data \(ValueError: "):
        reg.register_artifact("churn", artifact.read_bytes(), reference=df.drop(columns=["x3"]))
    with pytest.raises(RegistryError, match="target column 'label' is not in the reference data"):
        reg.register_artifact("churn", artifact.read_bytes(), reference=df, target="label")
    import skops.io as sio

    with pytest.raises(RegistryError, match="holds a list, which has no predict method"):
        reg.register_artifact("churn", sio.dumps([1, 2]))
    assert reg.list_models() == []


def test_models_uri_references_and_module_level_load(reg, reg_settings, monkeypatch):
    reg.register_version("churn", small_model(1.0))
    reg.register_version("churn", small_model(0.01))
    reg.promote("churn", 2)
    X = np.array([[0.5, 0.5], [2.5, 0.2], [1.4, 0.9]])
    assert reg.resolve("models:/churn@champion").version == 2
    assert reg.resolve("models:/churn/1").version == 1
    assert reg.load("models:/churn/1").estimator.predict_proba(X).tolist() == \
        small_model(1.0).predict_proba(X).tolist()
    for bad in ("models:/churn", "models://churn/1", "models:/churn/x"):
        with pytest.raises(RegistryError, match="is invalid"):
            reg.resolve(bad)
    with pytest.raises(DriftlineError, match="^model: must be 1-128 characters.*got 'models:churn'"):
        reg.resolve("models:churn@champion")  # not the prefix: a model name, and not a valid one
    for key in list(os.environ):
        if key.startswith("DRIFTLINE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("DRIFTLINE_REGISTRY", reg_settings.registry)
    if reg_settings.registry_artifacts:
        monkeypatch.setenv("DRIFTLINE_REGISTRY_ARTIFACTS", reg_settings.registry_artifacts)
    loaded = registry.load("models:/churn@champion")
    assert loaded.version.version == 2 and loaded.version.model == "churn"
    assert loaded.estimator.predict_proba(X).tolist() == small_model(0.01).predict_proba(X).tolist()
    assert registry.load("churn/1").version.version == 1
