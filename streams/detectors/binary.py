"""River's detectors of a 0/1 error stream: DDM, EDDM, HDDM_A, HDDM_W, FHDDM.

They share everything but the class: the policy's parameters go to the
constructor as they are. On a regression model they watch "the absolute
error was above twice the warm-up MAE" (:class:`driftline.streams.drift.ConceptDriftDetector`).

References
----------
.. [1] Gama, J. et al. (2004). Learning with drift detection. SBIA.
.. [2] Baena-García, M. et al. (2006). Early drift detection method.
.. [3] Frías-Blanco, I. et al. (2015). Online and non-parametric drift
   detection methods based on Hoeffding's bounds. IEEE TKDE 27(3).
.. [4] Pesaranghader, A., Viktor, H. L. (2016). Fast Hoeffding drift
   detection method for evolving data streams. ECML PKDD.
"""

from __future__ import annotations

from typing import Any, Callable

from driftline.catalog import DETECTORS


def _binary(class_name: str) -> Callable[[dict, "float | None", bool], Any]:
    def build(params: dict, level: float | None, concept: bool) -> Any:
        from driftline.river_modules import river_class

        return river_class(f"river.drift.binary.{class_name}")(**params)

    build.__qualname__ = build.__name__ = class_name.lower()
    return build


for _name, _class, _trusted, _order in (
    ("ddm", "DDM", ("river.drift.binary.ddm.DDM", "river.stats.mean.Mean"), 50),
    ("eddm", "EDDM", ("river.drift.binary.eddm.EDDM", "river.stats.mean.Mean", "river.stats.var.Var"), 60),
    ("hddm_a", "HDDMA", ("river.drift.binary.hddm_a.HDDMA", "river.stats.mean.Mean"), 70),
    ("hddm_w", "HDDMW", ("river.drift.binary.hddm_w.HDDMW", "river.drift.binary.hddm_w.SampleInfo",
                         "river.stats.ewmean.EWMean"), 80),
    ("fhddm", "FHDDM", ("river.drift.binary.fhddm.FHDDM",), 90),
):
    DETECTORS.add(_name, _binary(_class), kind="concept", binary=True, river=f"river.drift.binary.{_class}",
                  trusted=_trusted, order=_order)
