"""Page-Hinkley: a cumulative test for a change of the mean [1]_.

References
----------
.. [1] Page, E. S. (1954). Continuous inspection schemes. Biometrika 41.
"""

from __future__ import annotations

from typing import Any

from driftline.catalog import DETECTORS


@DETECTORS.register("page_hinkley", kind=("data", "concept"), river="river.drift.page_hinkley.PageHinkley",
                    trusted=("river.drift.page_hinkley.PageHinkley", "river.stats.mean.Mean"), order=100)
def page_hinkley(params: dict, level: float | None, concept: bool) -> Any:
    """River's PageHinkley; on the error stream it watches increases only (``mode="up"``)."""
    from driftline.river_modules import river_class

    params = dict(params)
    if concept:
        params.setdefault("mode", "up")
    return river_class("river.drift.page_hinkley.PageHinkley")(**params)
