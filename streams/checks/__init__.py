"""Alert checks: one class per alert kind, behind one interface.

=========================  =======================================  ===========
alert kind                 check                                    watches
=========================  =======================================  ===========
``data_drift``             :class:`data_drift.DataDriftCheck`       predictions
``prediction_drift``       :class:`prediction_drift.PredictionDriftCheck`  predictions
``outliers``               :class:`outliers.OutliersCheck`          predictions
``latency``                :class:`latency.LatencyCheck`            predictions
``estimated_performance``  :class:`estimated.EstimatedPerformanceCheck`  predictions
``concept_drift``          :class:`concept_drift.ConceptDriftCheck`  joined
``metric``                 :class:`metric.MetricThresholdCheck`     joined
=========================  =======================================  ===========

Every check implements :class:`base.Check` (``observe(batch, now)`` ->
findings, ``to_state``/``from_state``). The per-batch work they share is done
once by :class:`driftline.streams.model_monitor.VersionMonitor`; cooldowns and
retrain requests are :class:`dispatch.AlertDispatch`'s.
"""

from __future__ import annotations

from .base import Check, Finding, JoinedBatch, PredictionBatch
from .concept_drift import ConceptDriftCheck
from .data_drift import DataDriftCheck
from .dispatch import AlertDispatch, MonitorOutput
from .estimated import EstimatedPerformanceCheck
from .latency import LatencyCheck
from .metric import MetricThresholdCheck
from .outliers import OutliersCheck
from .prediction_drift import PredictionDriftCheck

__all__ = ["AlertDispatch", "Check", "ConceptDriftCheck", "DataDriftCheck", "EstimatedPerformanceCheck",
           "Finding", "JoinedBatch", "LatencyCheck", "MetricThresholdCheck", "MonitorOutput", "OutliersCheck",
           "PREDICTION_CHECKS", "JOINED_CHECKS", "PredictionBatch", "PredictionDriftCheck"]

#: The checks on a version's predictions, in the order they run and their
#: findings come out (outliers after data drift: see OutliersCheck).
PREDICTION_CHECKS: tuple[type[Check], ...] = (DataDriftCheck, PredictionDriftCheck, OutliersCheck, LatencyCheck,
                                              EstimatedPerformanceCheck)
#: The checks on a version's joined pairs, in the order their findings come out.
JOINED_CHECKS: tuple[type[Check], ...] = (ConceptDriftCheck, MetricThresholdCheck)
