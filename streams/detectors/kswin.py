"""KSWIN: a Kolmogorov-Smirnov test inside a sliding window, per event [1]_.

References
----------
.. [1] Raab, C., Heusinger, M., Schleif, F.-M. (2020). Reactive soft
   prototype computing for concept drift streams. Neurocomputing 416.
"""

from __future__ import annotations

from typing import Any

from driftline.catalog import DETECTORS


@DETECTORS.register("kswin", kind="data", river="river.drift.kswin.KSWIN",
                    trusted=("river.drift.kswin.KSWIN",), order=30)
def kswin(params: dict, level: float | None, concept: bool) -> Any:
    """River's KSWIN; the level becomes ``alpha`` and the seed is fixed unless the policy sets them."""
    from driftline.river_modules import river_class

    params = dict(params)
    if level is not None and "alpha" not in params:
        params["alpha"] = max(level, 1e-10)
    params.setdefault("seed", 42)  # reproducible windows
    return river_class("river.drift.kswin.KSWIN")(**params)
