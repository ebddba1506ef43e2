"""ADWIN: adaptive windowing, on a feature or on the error stream [1]_.

References
----------
.. [1] Bifet, A., Gavaldà, R. (2007). Learning from time-changing data with
   adaptive windowing. SDM.
"""

from __future__ import annotations

from typing import Any

from driftline.catalog import DETECTORS


@DETECTORS.register("adwin", kind=("data", "concept"), river="river.drift.adwin.ADWIN",
                    trusted=("river.drift.adwin.ADWIN",), order=40)
def adwin(params: dict, level: float | None, concept: bool) -> Any:
    """River's ADWIN; a data-drift test's level becomes ``delta`` unless the policy sets it."""
    from driftline.river_modules import river_class

    params = dict(params)
    if level is not None and "delta" not in params:
        params["delta"] = level
    return river_class("river.drift.adwin.ADWIN")(**params)
