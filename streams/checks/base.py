"""The one interface every alert check implements, and what it is given.

A :class:`Check` watches one of a version's two streams: its predictions
(:class:`PredictionBatch`) or its joined prediction/label pairs
(:class:`JoinedBatch`). The version monitor
(:class:`driftline.streams.model_monitor.VersionMonitor`) does the work every
check shares once per batch (counters, warm-up, feature columns, metrics,
error stream) and hands the result to each check, which returns
:class:`Finding` objects: alert candidates. Cooldowns and retrain requests
are decided in one place, :mod:`driftline.streams.checks.dispatch`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np

from driftline.events import LabeledRecord, Prediction
from driftline.policy import MonitorPolicy

if TYPE_CHECKING:
    from ..estimation import VersionEstimation
    from ..latency import RollingQuantiles
    from ..observations import JoinedColumns, PredictionColumns
    from .features import Feature

__all__ = ["Check", "Finding", "JoinedBatch", "PredictionBatch", "finite_or_none"]


@dataclass
class Finding:
    """An alert candidate, before cooldown.

    Parameters
    ----------
    kind
        The alert kind (one of ``driftline.policy.ALERT_KINDS``).
    subject
        What it is about (a feature, ``prediction``, ``error``, a metric...);
        cooldowns are per (version, kind, subject).
    detector
        What found it (``ks``, ``adwin``, ``threshold``, ...).
    value, threshold
        The observed value and the limit it crossed.
    message
        The alert's text.
    """

    kind: str
    subject: str
    detector: str
    value: float
    threshold: float | None
    message: str


@dataclass
class PredictionBatch:
    """One chunk of a version's predictions, with the shared work done.

    Parameters
    ----------
    label
        ``"<model> v<version>"``, for messages.
    events
        The predictions (records, or :class:`~driftline.streams.observations.PredictionColumns`).
    skip
        Leading events inside the warm-up: counted, never tested.
    alpha
        Per-test false-alarm level (see :func:`driftline.streams.drift.per_test_alpha`).
    features
        The version's features (drift test, missing and outlier counts).
    columns
        Feature name -> the values of ``events[skip:]`` (numbers as a float
        array, categories as keys), sorted by name; only features present in
        the batch.
    reference_ready
        Features whose reference was complete before this batch. A complete
        reference never changes again, so checks running after the drift
        tests see the reference the batch was compared with.
    pred_kind
        ``numeric`` or ``categorical`` predictions.
    predicted
        Every event's prediction (float array with NaN for non-numbers, or keys).
    latencies
        Latencies the events carry (ms).
    tested_latencies
        How many of ``events[skip:]`` carry a latency.
    latency_window
        The version's rolling latency window, already updated with ``latencies``.
    reference_size
        Events of the version's own past used as a reference.
    after_warmup
        Predictions since the warm-up ended (negative inside it).
    estimation
        The version's performance estimation (fed with these events), or ``None``.
    profile
        The version's registry profile, or ``None``.
    """

    label: str
    events: "Sequence[Prediction] | PredictionColumns"
    skip: int = 0
    alpha: float = 0.0
    features: dict[str, "Feature"] = field(default_factory=dict)
    columns: dict[str, Any] = field(default_factory=dict)
    reference_ready: frozenset[str] = frozenset()
    pred_kind: str = "categorical"
    predicted: Any = ()
    latencies: Sequence[float] = ()
    tested_latencies: int = 0
    latency_window: "RollingQuantiles | None" = None
    reference_size: int = 0
    after_warmup: int = 0
    estimation: "VersionEstimation | None" = None
    profile: dict | None = None

    @property
    def tested(self) -> int:
        """Events after the warm-up (the ones detectors see)."""
        return len(self.events) - self.skip


@dataclass
class JoinedBatch:
    """One chunk of a version's joined pairs, with metrics already updated.

    Parameters
    ----------
    label
        ``"<model> v<version>"``, for messages.
    records
        The joined pairs (records, or :class:`~driftline.streams.observations.JoinedColumns`).
    task
        ``classification`` or ``regression``.
    errors
        The error stream: per usable pair 0/1 (misclassified) or the absolute
        error (regression).
    skip
        Leading ``errors`` inside the warm-up.
    after_warmup
        Joined pairs since the warm-up ended (negative inside it).
    metrics, rolling
        The version's cumulative and rolling metrics, updated with the batch.
    """

    label: str
    records: "Sequence[LabeledRecord] | JoinedColumns"
    task: str
    errors: np.ndarray
    skip: int = 0
    after_warmup: int = 0
    metrics: Any = None
    rolling: Any = None


class Check:
    """One alert kind: state, when it fires, and its message.

    Subclasses set ``kind`` (the alert kind) and ``watches`` (``predictions``
    or ``joined``: which batches :meth:`observe` receives).

    Parameters
    ----------
    policy
        The model's monitor policy.
    """

    kind: ClassVar[str]
    watches: ClassVar[str]

    def __init__(self, policy: MonitorPolicy):
        self.policy = policy

    def observe(self, batch: Any, now: float) -> list[Finding]:
        """Update with one batch (a :class:`PredictionBatch` or a
        :class:`JoinedBatch`, per ``watches``); the alerts it raises."""
        raise NotImplementedError

    def restart_warmup(self) -> None:
        """A warm-up restarts (promotion): forget progress made since the last one."""

    def to_state(self) -> dict:
        """Entries of the version's saved state this check owns (JSON values)."""
        return {}

    @classmethod
    def from_state(cls, data: dict, policy: MonitorPolicy) -> "Check":
        """Rebuild from the version's saved state (see :meth:`to_state`)."""
        return cls(policy)


def finite_or_none(x: float | None) -> float | None:
    """``x`` as a float, or ``None`` when it is missing, NaN or infinite.

    >>> finite_or_none(1), finite_or_none(float("nan")), finite_or_none(None)
    (1.0, None, None)
    """
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None
