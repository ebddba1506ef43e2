"""River's per-event drift detectors, one module each (or per family).

Every module of this package is imported when :data:`driftline.catalog.DETECTORS`
is first looked up, and registers its detectors there. **Adding a detector
is one file here**: the policy accepts its name, the monitor builds it and
the state codec trusts the River types it names.

A per-event detector registers a factory ``build(params, level, concept)``
returning an object with ``update(x)`` and ``drift_detected`` (River's
detector interface):

* ``params``: the policy's ``params`` for it;
* ``level``: the false-alarm level of a data-drift test (``None`` on the
  error stream), for detectors that have one;
* ``concept``: ``True`` on the error stream (only increases matter there).

Traits: ``kind`` (``"data"``, ``"concept"`` or both), ``binary`` (a concept
detector of 0/1 errors), ``river`` (the River class whose keyword arguments
are the detector's parameters), ``trusted`` (every River type its state
holds, see :mod:`driftline.streams.state`) and ``order`` (its place in the
policy's listings). The windowed two-sample tests (``ks``, ``psi``,
``chi2``) register next to their classes in :mod:`driftline.streams.drift`.

Examples
--------
>>> from driftline.catalog import DETECTORS
>>> DETECTORS.get("ddm").binary, DETECTORS.get("adwin").binary
(True, None)
>>> type(DETECTORS.get("adwin").implementation({}, 0.001, concept=False)).__name__
'ADWIN'
"""

from __future__ import annotations

import importlib
import pkgutil


def _import_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


_import_all()
