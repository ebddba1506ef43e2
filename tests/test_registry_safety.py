"""Safe artifacts: skops only, explicit trusted types, SHA-256 checked on load.

Every malicious artifact here is *live*: it is shown to run its payload when
handed to skops with the needed type trusted (or to pickle), so the refusal
by the registry is what keeps the marker from appearing.
"""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import skops.io as sio

from driftline.registry import ArtifactError, ArtifactIntegrityError, UntrustedArtifactError
from driftline.registry import artifacts
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


# -- NumPy's (and SciPy's) file functions, whatever module they report ----------------------


def _file_functions():
    import scipy.io
    import scipy.sparse

    return {
        "numpy.save": np.save, "numpy.savez": np.savez, "numpy.savez_compressed": np.savez_compressed,
        "numpy.savetxt": np.savetxt, "numpy.load": np.load, "numpy.loadtxt": np.loadtxt,
        "numpy.genfromtxt": np.genfromtxt, "numpy.fromfile": np.fromfile, "numpy.memmap": np.memmap,
        "numpy.lib.format.open_memmap": np.lib.format.open_memmap, "numpy.rec.fromfile": np.rec.fromfile,
        "numpy.lib.npyio.DataSource": np.lib.npyio.DataSource, "numpy.info": np.info,
        "scipy.sparse.save_npz": scipy.sparse.save_npz, "scipy.io.savemat": scipy.io.savemat,
    }


FILE_FUNCTIONS = ["numpy.save", "numpy.savez", "numpy.savez_compressed", "numpy.savetxt", "numpy.load",
                  "numpy.loadtxt", "numpy.genfromtxt", "numpy.fromfile", "numpy.memmap",
                  "numpy.lib.format.open_memmap", "numpy.rec.fromfile", "numpy.lib.npyio.DataSource",
                  "numpy.info", "scipy.sparse.save_npz", "scipy.io.savemat"]


def test_a_numpy_save_transformer_is_a_live_payload(tmp_path):
    # What the refusal prevents: trusted, it writes a file when used.
    from sklearn.preprocessing import FunctionTransformer

    data = sio.dumps(FunctionTransformer(func=np.save, kw_args={"arr": [1, 2, 3]}))
    assert sio.get_untrusted_types(data=data) == ["numpy.save"]  # it reports the top-level alias
    loaded = sio.loads(data, trusted=["numpy.save"])
    marker = tmp_path / "written.npy"
    loaded.transform(str(marker))
    assert np.load(marker).tolist() == [1, 2, 3]


@pytest.mark.parametrize("name", FILE_FUNCTIONS)
def test_file_functions_are_refused_at_registration_and_load(reg, name, tmp_path):
    from sklearn.preprocessing import FunctionTransformer

    evil = FunctionTransformer(func=_file_functions()[name], kw_args={"arr": [1]})
    with pytest.raises(UntrustedArtifactError, match="untrusted type") as caught:
        reg.register_version("churn", evil)
    reported = sio.get_untrusted_types(data=sio.dumps(evil))
    assert all(n in str(caught.value) for n in reported), (reported, str(caught.value))
    assert list(reg.store.files()) == []  # refused before anything was written

    # An artifact that names it, swapped in with a valid checksum ...
    reg.register_version("churn", small_model())
    replace_artifact(reg, "churn", 1, sio.dumps(evil), fix_checksum=True)
    with pytest.raises(UntrustedArtifactError, match="untrusted type"):
        reg.load("churn/1")
    # ... and with the recorded trusted list changed to name it as well.
    with reg.backend.transaction(write=True) as tx:
        tx.execute("UPDATE versions SET trusted_types = ? WHERE model = 'churn' AND version = 1",
                   (json.dumps(reported),))
    with pytest.raises(UntrustedArtifactError, match="recorded trusted types include"):
        reg.load("churn/1")
    assert list(tmp_path.glob("**/*.npy")) == []


@pytest.mark.parametrize("name", [
    "numpy.save", "numpy.lib._npyio_impl.save", "numpy.lib.npyio.save", "numpy._core.multiarray.fromfile",
    "numpy._core.memmap.memmap", "numpy._core.records.fromfile", "numpy.lib.format.write_array",
    "numpy.ndarray.tofile", "numpy.show_config", "scipy.sparse._matrix_io.load_npz",
    "scipy.io.matlab._mio.loadmat", "sklearn.utils._show_versions.show_versions", "sklearn.show_versions",
    "numpy.does_not_exist", "sklearn.nope.Nothing",
])
def test_aliases_of_file_functions_and_unresolvable_names_are_not_trusted(name):
    assert not artifacts._allowed(name)


def test_denied_objects_are_matched_by_identity_and_by_defining_file():
    # The same object under a name the lists do not spell out.
    assert artifacts._denied_object(np.lib.npyio.DataSource)
    assert artifacts._denied_object(np._core.multiarray.fromfile)
    # A function of numpy's file module not in the list: its code's file says so.
    from numpy.lib import _npyio_impl

    assert artifacts._denied_object(_npyio_impl.zipfile_factory)
    assert not artifacts._denied_object(np.log1p) and not artifacts._denied_object(np.mean)


def test_extra_names_cannot_trust_denied_functions():
    from sklearn.preprocessing import FunctionTransformer

    for func, name in [(open, "io.open"), (np.save, "numpy.save"), (os.system, "posix.system")]:
        data = sio.dumps(FunctionTransformer(func=func))
        with pytest.raises(UntrustedArtifactError, match=name.replace(".", r"\.")):
            artifacts.trusted_types(data, extra=[name])
