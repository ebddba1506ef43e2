"""Catalogs of the things a policy names: drift detectors, metrics, estimators.

Each implementation registers itself next to its code, with the traits the
rest of Driftline needs to know about it (a detector's kind and parameters,
a metric's task and direction, an estimator's task)::

    @DETECTORS.register("adwin", kind=("data", "concept"), river="river.drift.adwin.ADWIN")
    def adwin(params, level, concept): ...

The policy (:mod:`driftline.policy`) accepts exactly the registered names,
the monitor and the worker look implementations and traits up here, so
adding a detector, a metric or an estimator is one file and no list to
update. The core imports nothing from the services: a catalog names the
plug-in modules holding its implementations (strings, as
:data:`driftline.cli._PLUGINS` names the sub-commands) and imports them
once, on its first lookup.

Examples
--------
>>> shapes = Catalog("shape")
>>> @shapes.register("square", sides=4)
... class Square:
...     pass
>>> _ = shapes.add("triangle", tuple, sides=3)
>>> shapes.names(), shapes.names(sides=3)
(('square', 'triangle'), ('triangle',))
>>> shapes.get("square").implementation is Square, shapes.get("square").sides
(True, 4)
>>> shapes.get("circle")
Traceback (most recent call last):
...
driftline.catalog.UnknownName: unknown shape 'circle'; known: square, triangle
>>> _ = shapes.add("square", list)
Traceback (most recent call last):
...
driftline.catalog.DuplicateName: shape 'square' is registered twice (...)
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TypeVar

from .errors import DriftlineError

__all__ = ["Catalog", "Entry", "CatalogError", "UnknownName", "DuplicateName", "DETECTORS", "METRICS",
           "ESTIMATORS"]

T = TypeVar("T")
#: Listing position of entries registered without ``order``: after the ordered ones.
_UNORDERED = float("inf")


class CatalogError(DriftlineError):
    """A catalog lookup or registration failed; the message names the entry."""


class UnknownName(CatalogError, LookupError):
    """No entry has this name (the message lists the known ones)."""


class DuplicateName(CatalogError, ValueError):
    """Two different implementations were registered under one name."""


@dataclass(frozen=True)
class Entry:
    """One registered implementation: its name, the implementation and its traits.

    Traits read as attributes (``entry.lower_is_better``); a trait the entry
    was not registered with is ``None``, so an optional trait needs no
    default at every registration.
    """

    name: str
    implementation: Any
    traits: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, trait: str) -> Any:
        if trait.startswith("__"):  # copy/pickle probe dunders: not traits
            raise AttributeError(trait)
        return self.traits.get(trait)

    def matches(self, **trait_filter: Any) -> bool:
        """Whether every given trait has the given value (or, for a tuple
        trait such as ``kind=("data", "concept")``, contains it)."""
        for trait, wanted in trait_filter.items():
            value = self.traits.get(trait)
            if not (value == wanted or (isinstance(value, tuple) and wanted in value)):
                return False
        return True


def _definition(implementation: Any) -> tuple | None:
    """Where an implementation was defined: a module re-executed (e.g. by
    :func:`importlib.reload`) registers the same definition again, which is
    not a duplicate (nor is an equal implementation)."""
    if isinstance(implementation, tuple):  # e.g. detectors used together
        parts = tuple(_definition(part) for part in implementation)
        return parts if parts and None not in parts else None
    module, qualname = getattr(implementation, "__module__", None), getattr(implementation, "__qualname__", None)
    if module and qualname:  # a class or a function
        return module, qualname
    cls = type(implementation)
    if cls.__repr__ is object.__repr__:  # an address, not a definition
        return None
    return cls.__module__, cls.__qualname__, repr(implementation)


class Catalog:
    """Named implementations of one kind of thing, with their traits.

    Parameters
    ----------
    noun
        What the entries are, for messages (``"drift detector"``).
    plugins
        Modules (dotted names) that register the entries when imported;
        imported once, on the first lookup. A plug-in that is not installed
        is skipped, like :data:`driftline.cli._PLUGINS`.

    Entries are listed by their ``order`` trait, then in registration order
    (entries without ``order`` come last): the policy's messages list the
    allowed names in this order.
    """

    def __init__(self, noun: str, plugins: tuple[str, ...] = ()):
        self.noun = noun
        self.plugins = tuple(plugins)
        self._entries: dict[str, Entry] = {}
        self._loaded = False
        self._loading = False
        self._lock = threading.RLock()
        #: Bumped by every registration and removal (for caches of derived sets).
        self.revision = 0

    # -- registration ----------------------------------------------------------
    def register(self, name: str, **traits: Any) -> Callable[[T], T]:
        """Decorator: register the decorated class or function as ``name``."""

        def decorator(implementation: T) -> T:
            self.add(name, implementation, **traits)
            return implementation

        return decorator

    def add(self, name: str, implementation: Any, **traits: Any) -> Entry:
        """Register ``implementation`` (anything, not only our classes) as ``name``."""
        if not isinstance(name, str) or not name:
            raise CatalogError(f"{self.noun} names must be non-empty strings (got {name!r})")
        old = self._entries.get(name)
        if old is not None and old.implementation != implementation and (
                _definition(old.implementation) is None
                or _definition(old.implementation) != _definition(implementation)):
            raise DuplicateName(f"{self.noun} {name!r} is registered twice ({old.implementation!r} and "
                                f"{implementation!r})")
        entry = Entry(name, implementation, dict(traits))
        self._entries[name] = entry
        self.revision += 1
        return entry

    def remove(self, name: str) -> Entry:
        """Unregister ``name`` (a test's temporary entry); returns its entry."""
        self.get(name)
        self.revision += 1
        return self._entries.pop(name)

    # -- lookup ------------------------------------------------------------------
    def load(self) -> None:
        """Import the plug-ins now (every lookup does it on its own first)."""
        if self._loaded:
            return
        # Another thread waits for the plug-ins; a plug-in being imported that
        # looks names up (same thread) sees the entries registered so far.
        with self._lock:
            if self._loaded or self._loading:
                return
            self._loading = True
            try:
                for module_name in self.plugins:
                    try:
                        importlib.import_module(module_name)
                    except ModuleNotFoundError as error:
                        if error.name != module_name:  # a real import error inside the plug-in
                            raise
                self._loaded = True  # a failed import is retried (and raises again) on the next lookup
            finally:
                self._loading = False

    def entries(self, **trait_filter: Any) -> tuple[Entry, ...]:
        """Entries whose traits match ``trait_filter`` (see :meth:`Entry.matches`), in listing order."""
        self.load()
        ranked = sorted(enumerate(self._entries.values()),
                        key=lambda item: (item[1].traits.get("order", _UNORDERED), item[0]))
        return tuple(entry for _, entry in ranked if entry.matches(**trait_filter))

    def names(self, **trait_filter: Any) -> tuple[str, ...]:
        """Names of the entries matching ``trait_filter``, in listing order."""
        return tuple(entry.name for entry in self.entries(**trait_filter))

    def get(self, name: str, **trait_filter: Any) -> Entry:
        """The entry ``name``; :class:`UnknownName` (listing the known names,
        among those matching ``trait_filter``) if there is none."""
        self.load()
        entry = self._entries.get(name) if isinstance(name, str) else None
        if entry is None or not entry.matches(**trait_filter):
            raise UnknownName(f"unknown {self.noun} {name!r}; known: {', '.join(self.names(**trait_filter))}")
        return entry

    def __contains__(self, name: object) -> bool:
        self.load()
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries())

    def __repr__(self) -> str:
        return f"Catalog({self.noun!r}, plugins={self.plugins!r})"


#: Drift and outlier detectors. Traits: ``kind`` (data / concept / outlier, or a
#: tuple of them), ``windowed`` (a windowed two-sample test, else a per-event
#: detector: :mod:`driftline.streams.detectors`), ``binary`` (on 0/1 errors),
#: ``params`` (own parameter names) or ``river`` (the River class whose keyword
#: arguments are the parameters), ``trusted`` (River types its state holds), ``order``.
DETECTORS = Catalog("drift detector", ("driftline.streams.drift", "driftline.streams.detectors",
                                       "driftline.streams.outliers"))
#: Model-quality metrics (traits: ``task``, ``lower_is_better``, ``estimated``).
METRICS = Catalog("metric", ("driftline.streams.metrics",))
#: The worker's estimator recipes (traits: ``task``).
ESTIMATORS = Catalog("estimator", ("driftline.retrain.recipes",))
