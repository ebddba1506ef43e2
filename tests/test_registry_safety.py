"""Safe artifacts: skops only, explicit trusted types, SHA-256 checked on load.

Every malicious artifact here is *live*: it is shown to run its payload when
handed to skops with the needed type trusted (or to pickle), so the refusal
by the registry is what keeps the marker from appearing.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import skops.io as sio

from registry import ArtifactError, ArtifactIntegrityError, UntrustedArtifactError
from registry import artifacts
from tests.registry_fixtures import (  # noqa: F401  (fixtures)
    backend,
    malicious_pickle,
    malicious_skops,
    pipeline_model,
    reg,
    reg_settings,
    replace_artifact,
    small_model,
)


def test_the_crafted_payloads_are_live(tmp_path):
    marker = tmp_path / "skops-ran"
    sio.loads(malicious_skops(str(marker)), trusted=["os.mkdir"])
    assert marker.is_dir()
    marker = tmp_path / "pickle-ran"
    pickle.loads(malicious_pickle(str(marker)))
    assert marker.is_dir()


def test_changed_artifact_is_refused(reg):
    reg.register_version("churn", small_model())
    reg.load("churn/1")  # loads while intact
    with reg.backend.transaction() as tx:
        (relative,) = tx.one("SELECT artifact_path FROM versions WHERE model = 'churn' AND version = 1")
    path = reg.store.path(relative)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match=r"churn/1: artifact checksum mismatch"):
        reg.load("churn/1")
    # Replaced by another valid model: still refused.
    replace_artifact(reg, "churn", 1, sio.dumps(small_model(0.01)), fix_checksum=False)
    with pytest.raises(ArtifactIntegrityError):
        reg.load("churn/1")


def test_missing_artifact_is_a_clear_error(reg):
    reg.register_version("churn", small_model())
    [(relative, path)] = list(reg.store.files())
    path.unlink()
    with pytest.raises(ArtifactError, match="missing"):
        reg.load("churn/1")


def test_untrusted_type_in_artifact_is_refused_and_never_executed(reg, tmp_path):
    reg.register_version("churn", small_model())
    marker = tmp_path / "pwned"
    replace_artifact(reg, "churn", 1, malicious_skops(str(marker)), fix_checksum=True)
    with pytest.raises(UntrustedArtifactError, match=r"untrusted type\(s\) os.mkdir; refused"):
        reg.load("churn/1")
    assert not marker.exists()


def test_pickled_payload_is_refused_and_never_executed(reg, tmp_path):
    reg.register_version("churn", small_model())
    marker = tmp_path / "pwned"
    replace_artifact(reg, "churn", 1, malicious_pickle(str(marker)), fix_checksum=True)
    with pytest.raises(UntrustedArtifactError, match="not a readable skops file"):
        reg.load("churn/1")
    assert not marker.exists()


@pytest.mark.parametrize("func", [eval, os.system], ids=["builtins.eval", "os.system"])
def test_function_references_are_refused_at_registration_and_load(reg, func):
    from sklearn.preprocessing import FunctionTransformer

    evil = FunctionTransformer(func=func)
    with pytest.raises(UntrustedArtifactError, match="untrusted type"):
        reg.register_version("churn", evil)
    assert list(reg.store.files()) == []  # refused before anything was written
    reg.register_version("churn", small_model())
    replace_artifact(reg, "churn", 1, sio.dumps(evil), fix_checksum=True)
    with pytest.raises(UntrustedArtifactError, match=r"(builtins\.eval|posix\.system)"):
        reg.load("churn/1")


def test_trusted_types_are_explicit_and_prefix_filtered():
    data = artifacts.dumps(pipeline_model(n_estimators=3))
    assert artifacts.trusted_types(data) == ["sklearn.tree._tree.Tree"]
    # The registry passes that explicit list, never trusted=True: without it
    # skops itself refuses the same bytes.
    with pytest.raises(Exception, match="sklearn.tree._tree.Tree"):
        sio.loads(data)
    for name in ("numpy.testing._private.utils.runstring", "sklearn.datasets._base.load_files",
                 "builtins.exec", "subprocess.Popen", "sklearnx.Evil", "numpy.f2py.run_main"):
        assert not artifacts._allowed(name), name
    for name in ("sklearn.tree._tree.Tree", "numpy.float64", "scipy.sparse._csr.csr_matrix",
                 "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"):
        assert artifacts._allowed(name), name


def test_numpy_function_reference_loads(reg):
    # A legitimate function reference inside the trusted packages still works.
    from sklearn.preprocessing import FunctionTransformer

    reg.register_version("logs", FunctionTransformer(func=np.log1p))
    transformed = reg.load("logs/1").estimator.fit_transform(np.array([[0.0], [np.e - 1]]))
    np.testing.assert_allclose(transformed, [[0.0], [1.0]])
