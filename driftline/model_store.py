"""Where the SDK gets its models: the small interface the core needs from a
model registry, and how the core finds the installed one.

:class:`~driftline.champion.Champion` serves ``NAME@ALIAS`` from a
:class:`ModelStore`: it resolves the alias to a version and loads that
version's verified artifact. The core defines the interface; the registry
(:class:`driftline.registry.Registry`) implements it and plugs itself in
through the ``driftline.model_stores`` entry point (pyproject.toml), so the
core never imports the registry.

Examples
--------
>>> from types import SimpleNamespace
>>> class InMemory:  # any object with these three methods is a model store
...     def resolve(self, ref):
...         return SimpleNamespace(version=1)
...     def load(self, ref):
...         return SimpleNamespace(estimator="a model", version=SimpleNamespace(version=1))
...     def close(self):
...         pass
>>> isinstance(InMemory(), ModelStore)
True
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .errors import DriftlineError

if TYPE_CHECKING:  # pragma: no cover
    from .config import Settings

__all__ = ["ModelStore", "ModelStoreError", "StoredVersion", "LoadedVersion", "open_model_store", "ENTRY_POINTS"]

#: The entry-point group a model store registers its opener under: a
#: function ``opener(settings) -> ModelStore`` that opens it for reading.
ENTRY_POINTS = "driftline.model_stores"

#: The store used when several are installed.
DEFAULT_STORE = "registry"


class ModelStoreError(DriftlineError):
    """A model store refused a request (no such model, version or alias; an
    artifact that is missing, altered or untrusted); the message says why.
    :class:`driftline.registry.RegistryError` is one."""


@runtime_checkable
class StoredVersion(Protocol):
    """A version's metadata; the core reads only its number."""

    version: int


@runtime_checkable
class LoadedVersion(Protocol):
    """A loaded version: the estimator and its metadata."""

    estimator: Any
    version: StoredVersion


@runtime_checkable
class ModelStore(Protocol):
    """What :class:`~driftline.champion.Champion` needs from a registry."""

    def resolve(self, ref: str) -> StoredVersion:
        """``NAME@ALIAS`` or ``NAME/VERSION`` -> that version's metadata
        (raises :class:`ModelStoreError`)."""

    def load(self, ref: str) -> LoadedVersion:
        """The version's estimator, its artifact verified (checksum, trusted
        types) before anything in it runs (raises :class:`ModelStoreError`)."""

    def close(self) -> None:
        """Release connections."""


def open_model_store(settings: "Settings") -> ModelStore:
    """Open the installed model store for reading (the registry named by
    ``settings.registry``).

    Raises :class:`ModelStoreError` when no store is installed.
    """
    found = {entry.name: entry for entry in entry_points(group=ENTRY_POINTS)}
    if not found:
        raise ModelStoreError(f"no model store is installed (no {ENTRY_POINTS!r} entry point): "
                              "reinstall driftline (pip install driftline), which brings its registry")
    entry = found.get(DEFAULT_STORE) or next(iter(found.values()))
    return entry.load()(settings)
