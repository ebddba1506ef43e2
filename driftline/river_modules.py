"""River's modules without the package ``__init__`` files that load scikit-learn and pandas.

``import river.drift.adwin`` runs ``river/drift/__init__.py`` first, and that
imports ``river.drift.datasets`` -> ``river.datasets`` -> ``river.stream`` ->
scikit-learn, pandas and pyarrow; ``river.anomaly``'s and ``river.tree``'s
``__init__`` import every estimator of the package, which load them too.
Driftline uses a few classes of these packages (ADWIN, Page-Hinkley, the
binary detectors, Half-Space Trees): imported the usual way, they cost the
monitor about 110 MB of resident memory it never uses
(``bench/monitor.py --only memory`` prints it).

:func:`river_module` imports one module of River with those packages
loaded *thin*: the package module exists (its ``__path__`` finds its
submodules) but its ``__init__`` has not run. Any other use of a thin
package still works as usual: an attribute it lacks is a submodule, imported
then, or else whatever its ``__init__`` defines, which then runs once, in
full (``from river.drift import KSWIN`` after a thin load gets the class).

Examples
--------
>>> adwin = river_module("river.drift.adwin")
>>> adwin.ADWIN(delta=0.002).drift_detected
False
>>> river_class("river.drift.binary.ddm.DDM").__name__
'DDM'
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from types import ModuleType
from typing import Any

__all__ = ["THIN_PACKAGES", "river_module", "river_class"]

#: River packages whose ``__init__`` imports far more than Driftline uses
THIN_PACKAGES = ("river.drift", "river.anomaly", "river.tree")

_lock = threading.RLock()  # the monitor imports its analytics in a thread while its loop may import too


def river_module(name: str) -> ModuleType:
    """Import River module ``name`` (e.g. ``"river.drift.adwin"``), its
    packages in :data:`THIN_PACKAGES` loaded thin if not loaded yet."""
    module = sys.modules.get(name)
    if module is not None:
        return module
    with _lock:
        # all of them, not only the parents of ``name``: one imports another's modules
        # (river.anomaly.hst imports river.tree.padded)
        for package in THIN_PACKAGES:
            if package not in sys.modules:
                _load_thin(package)
        return importlib.import_module(name)


def river_class(path: str) -> Any:
    """The class at ``"module.Class"`` (a River module, see :func:`river_module`)."""
    module, _, name = path.rpartition(".")
    return getattr(river_module(module), name)


def _load_thin(name: str) -> None:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        importlib.import_module(name)  # not a package (another River version): the usual import
        return
    module = importlib.util.module_from_spec(spec)  # __path__, __spec__, __file__ set; __init__ not run

    def __getattr__(attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        with _lock:
            if f"{name}.{attr}" in sys.modules or importlib.util.find_spec(f"{name}.{attr}") is not None:
                return importlib.import_module(f"{name}.{attr}")
            # something the package's __init__ defines: run it, once, in full
            if module.__dict__.pop("__getattr__", None) is not None:
                spec.loader.exec_module(module)
        try:
            return module.__dict__[attr]
        except KeyError:
            raise AttributeError(f"module {name!r} has no attribute {attr!r}") from None

    module.__getattr__ = __getattr__
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    setattr(importlib.import_module(parent), child, module)
