"""Model artifacts: skops files, written atomically, checked on every load.

Never pickle. An artifact is a skops zip; on load its SHA-256 must match the
one recorded at registration, and every type it needs beyond skops' own
defaults must pass :func:`trusted_types` — scikit-learn, NumPy and SciPy
types only, nothing from their testing or build helpers, and none of their
functions that read or write files (``numpy.save``, ``numpy.memmap``,
``scipy.io``...), whatever module they report: NumPy re-exports its file
functions as ``numpy.save`` and so on, so besides module segments the check
resolves each name and refuses the denied objects themselves
(:data:`REFUSED_FUNCTIONS`), any function defined in a file-I/O module, and
any name that does not resolve. skops audits the whole tree *before*
constructing anything, so a refused artifact never runs.

Examples
--------
>>> from sklearn.linear_model import LogisticRegression
>>> data = dumps(LogisticRegression().fit([[0.0], [1.0]], [0, 1]))
>>> loads(data, sha256(data)).predict([[0.9]]).tolist()
[1]
>>> loads(data + b"x", sha256(data))
Traceback (most recent call last):
...
driftline.registry.errors.ArtifactIntegrityError: artifact checksum mismatch: expected sha256 ...
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import os
import pickle
import uuid
import zipfile
from pathlib import Path
from typing import Any, Iterable

from .errors import ArtifactError, ArtifactIntegrityError, UntrustedArtifactError

__all__ = [
    "REFUSED_FUNCTIONS",
    "TRUSTED_PREFIXES",
    "ArtifactStore",
    "dumps",
    "dumps_checked",
    "loads",
    "sha256",
    "trusted_types",
]

#: Packages whose types a model artifact may need.
TRUSTED_PREFIXES: tuple[str, ...] = ("sklearn.", "numpy.", "scipy.")
# Inside those packages, helpers that run code, spawn processes or read files
# are never needed by a fitted model (numpy.testing's ``runstring`` calls
# ``exec``); a name with any of these path segments is refused.
_REFUSED_SEGMENTS = frozenset(
    {"testing", "_testing", "tests", "conftest", "f2py", "distutils", "npyio", "_npyio_impl",
     "_datasource", "ctypeslib", "_ctypeslib", "externals", "datasets", "_build_utils",
     # file formats and I/O: numpy.lib.format, scipy.io, scipy.sparse's save_npz/load_npz
     "format", "_format_impl", "io", "matlab", "_matrix_io", "mrecords",
     # printing and introspection helpers (numpy.info, show_config, sklearn.show_versions)
     "_utils_impl", "_show_versions", "__config__", "estimator_checks", "_export"}
)

#: Functions and classes that read or write files, open URLs or run code,
#: refused by identity under any name (``numpy.save`` is
#: ``numpy.lib._npyio_impl.save``), and by their last name segment in any
#: trusted module. Names absent from the installed versions are skipped.
REFUSED_FUNCTIONS: tuple[str, ...] = (
    "numpy.save", "numpy.savez", "numpy.savez_compressed", "numpy.savetxt", "numpy.load", "numpy.loadtxt",
    "numpy.genfromtxt", "numpy.fromfile", "numpy.fromregex", "numpy.memmap", "numpy.recfromtxt",
    "numpy.recfromcsv", "numpy.ndarray.tofile", "numpy.ndarray.dump", "numpy.ndarray.dumps",
    "numpy.lib.npyio.DataSource", "numpy.lib.npyio.NpzFile", "numpy.lib.format.open_memmap",
    "numpy.lib.format.read_array", "numpy.lib.format.write_array", "numpy.rec.fromfile",
    "numpy.core.records.fromfile", "numpy._core.records.fromfile", "numpy.ma.load", "numpy.ma.dump",
    "numpy.ma.loads", "numpy.ma.dumps", "numpy.info", "numpy.source", "numpy.lookfor", "numpy.show_config",
    "numpy.show_runtime", "numpy.ctypeslib.load_library", "scipy.sparse.save_npz", "scipy.sparse.load_npz",
    "scipy.LowLevelCallable", "builtins.open", "io.open", "os.open",
)
_REFUSED_LAST = frozenset(name.rsplit(".", 1)[1] for name in REFUSED_FUNCTIONS) | {
    "open", "dump", "dumps", "load", "loads", "tofile", "DataSource",
}
# Outside the trusted packages these are refused anyway; named so that an
# ``extra`` list cannot let them in either.
_REFUSED_MODULES = ("builtins", "io", "_io", "os", "posix", "nt", "subprocess", "shutil", "pathlib", "socket",
                    "pickle", "marshal", "ctypes", "importlib", "runpy", "sys", "tempfile", "codecs")

_SUFFIX = ".skops"


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def dumps(estimator: Any) -> bytes:
    """Serialise ``estimator`` with skops; refuse it (before anything is
    stored) if loading it back would need an untrusted type.
    (:func:`dumps_checked` also returns the trusted list.)"""
    return dumps_checked(estimator)[0]


def dumps_checked(estimator: Any) -> tuple[bytes, list[str]]:
    """``(data, trusted types)`` for ``estimator``; see :func:`dumps`."""
    import skops.io as sio

    try:
        data = sio.dumps(estimator)
    except (TypeError, ValueError, AttributeError, pickle.PicklingError) as error:  # skops: UnsupportedTypeException is a TypeError
        raise ArtifactError(f"cannot serialise {type(estimator).__name__} with skops: {error}") from error
    return data, trusted_types(data)  # raises UntrustedArtifactError


def trusted_types(data: bytes, extra: Iterable[str] = ()) -> list[str]:
    """The types to trust when loading ``data``.

    Reads the skops schema (nothing is constructed) and returns the types
    skops does not trust by default, after checking each against
    :data:`TRUSTED_PREFIXES` (or ``extra``: exact names). Raises
    :class:`UntrustedArtifactError` naming any type outside them, and for
    data that is not a skops file (for example a pickle).
    """
    import skops.io as sio

    try:
        names = sio.get_untrusted_types(data=data)
    except (zipfile.BadZipFile, ValueError, LookupError, TypeError, AttributeError) as error:
        # not a zip, no schema.json, bad JSON, a schema of the wrong shape, an unknown protocol
        raise UntrustedArtifactError(
            f"artifact is not a readable skops file and is refused ({type(error).__name__}: {error})"
        ) from None
    extra = set(extra)
    refused = sorted(name for name in names if _denied(name) or (name not in extra and not _allowed(name)))
    if refused:
        raise UntrustedArtifactError(
            f"artifact needs untrusted type(s) {', '.join(refused)}; refused, nothing was loaded "
            f"(trusted: {', '.join(p + '*' for p in TRUSTED_PREFIXES)})"
        )
    return list(names)


def _allowed(name: str) -> bool:
    if not isinstance(name, str) or not name.startswith(TRUSTED_PREFIXES):
        return False
    parts = name.split(".")
    if not all(part and part.isidentifier() for part in parts) or _REFUSED_SEGMENTS.intersection(parts):
        return False
    if _denied(name):
        return False
    # Resolved (only trusted packages are imported here), so an alias
    # cannot hide a denied object; a name that does not resolve is refused.
    found, obj = _resolve(name)
    return found and not _denied_object(obj)


def _denied(name: str) -> bool:
    """Refused whatever the trusted list says: a denied name or module."""
    if not isinstance(name, str):
        return True
    return name.split(".", 1)[0] in _REFUSED_MODULES or name.rsplit(".", 1)[-1] in _REFUSED_LAST


def _resolve(name: str) -> tuple[bool, Any]:
    """``(True, object)`` for a dotted name inside an importable module."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False, None
        return True, obj
    return False, None


@functools.lru_cache(maxsize=1)
def _denied_objects() -> tuple[Any, ...]:
    # A tuple compared by identity: some objects (ufuncs, arrays) define ==.
    found = []
    for name in REFUSED_FUNCTIONS:
        ok, obj = _resolve(name)
        if ok:
            found.append(obj)
    return tuple(found)


def _denied_object(obj: Any) -> bool:
    if any(obj is denied for denied in _denied_objects()):
        return True
    # A Python function defined in a file-I/O module (numpy.save's code is
    # in numpy/lib/_npyio_impl.py, though it reports the module "numpy").
    try:
        code = getattr(inspect.unwrap(obj), "__code__", None)
    except ValueError:  # a __wrapped__ cycle
        return True
    if code is not None:
        stem = os.path.splitext(os.path.basename(code.co_filename))[0]
        return stem in _REFUSED_SEGMENTS
    return False


def loads(data: bytes, expected_sha256: str, trusted: Iterable[str] | None = None) -> Any:
    """Check ``data`` against ``expected_sha256`` and load it with skops,
    passing an explicit trusted list (never ``trusted=True``).

    ``trusted`` is the list recorded at registration for exactly these bytes
    (the checksum proves they are unchanged); it is re-checked against
    :data:`TRUSTED_PREFIXES`, and skops audits the whole tree against it
    before constructing anything. Without it, :func:`trusted_types` reads it
    from the data.
    """
    import zipfile

    import skops.io as sio
    from skops.io.exceptions import UntrustedTypesFoundException

    actual = sha256(data)
    if actual != expected_sha256:
        raise ArtifactIntegrityError(
            f"artifact checksum mismatch: expected sha256 {expected_sha256}, found {actual}; "
            "the artifact was changed or corrupted and is not loaded"
        )
    if trusted is None:
        trusted = trusted_types(data)
    else:
        trusted = list(trusted)
        refused = sorted(name for name in trusted if not _allowed(name))
        if refused:
            raise UntrustedArtifactError(f"the recorded trusted types include {', '.join(refused)}; refused")
    try:
        return sio.loads(data, trusted=trusted)
    except UntrustedTypesFoundException:
        # Only on this error path: name the offending types for the message.
        extra = sorted(set(sio.get_untrusted_types(data=data)) - set(trusted))
        raise UntrustedArtifactError(
            f"artifact needs untrusted type(s) {', '.join(extra)}; refused, nothing was loaded"
        ) from None
    except (zipfile.BadZipFile, KeyError, ValueError) as error:  # not a skops zip (e.g. a pickle)
        raise UntrustedArtifactError(
            f"artifact is not a readable skops file and is refused ({type(error).__name__}: {error})"
        ) from None


class ArtifactStore:
    """Artifact files under one directory: ``<root>/<model>/<id>.skops``.

    A file is written to a temporary name in the same directory, fsynced,
    then renamed into place (and the directory fsynced), so a reader never
    sees a partial artifact. A file is only *visible* through the registry
    once the database row naming it commits; files left by a killed
    registration are unreferenced and removed by :meth:`orphans` + ``gc``.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ArtifactError(f"cannot create artifact directory {str(self.root)!r}: {error.strerror}") from None

    def write(self, model: str, data: bytes) -> str:
        """Store ``data`` atomically; return its path relative to the root."""
        directory = self.root / model
        directory.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        temporary = directory / f".tmp-{name}"
        final = directory / f"{name}{_SUFFIX}"
        try:
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, final)
            _fsync_directory(directory)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return f"{model}/{final.name}"

    def path(self, relative: str) -> Path:
        path = (self.root / relative).resolve()
        if self.root.resolve() not in path.parents:  # stored paths are ours, but check anyway
            raise ArtifactError(f"artifact path {relative!r} is outside the artifact directory")
        return path

    def read(self, relative: str) -> bytes:
        try:
            return self.path(relative).read_bytes()
        except FileNotFoundError:
            raise ArtifactError(f"artifact {relative!r} is missing from {str(self.root)!r}") from None
        except OSError as error:
            raise ArtifactError(f"cannot read artifact {relative!r}: {error.strerror}") from None

    def remove(self, relative: str) -> None:
        self.path(relative).unlink(missing_ok=True)

    def files(self) -> Iterable[tuple[str, Path]]:
        """Every artifact or temporary file: (relative path, path)."""
        if not self.root.is_dir():
            return
        for directory in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for path in sorted(directory.iterdir()):
                if path.is_file() and (path.name.endswith(_SUFFIX) or path.name.startswith(".tmp-")):
                    yield f"{directory.name}/{path.name}", path


def _fsync_directory(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
