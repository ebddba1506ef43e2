"""The monitor's options: one copy of their defaults, and their check.

``driftline monitor``'s arguments take their defaults from
:class:`MonitorOptions` (:func:`option_default`), so a default is written once.

Examples
--------
>>> option_default("batch_size"), option_default("state")
(1000, 'rocksdb')
>>> MonitorOptions(batch_size=0).check()
Traceback (most recent call last):
...
driftline.streams.options.MonitorError: batch_size must be a positive integer (got 0)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from driftline.errors import DriftlineError

__all__ = ["MonitorOptions", "MonitorError", "STATE_STORES", "option_default"]

#: ``--state`` values: where stage 1's join state lives (:mod:`driftline.streams.join_store`)
STATE_STORES = ("rocksdb", "memory")


class MonitorError(DriftlineError):
    """The monitor cannot start (missing topics, bad options)."""


@dataclass
class MonitorOptions:
    """Knobs of one monitor process.

    Parameters
    ----------
    group_id
        Consumer group (and faust app id); processes sharing it share the work.
        Default: ``<topic prefix>monitor``.
    data_dir
        faust's data directory.
    metrics_port
        Prometheus ``/metrics`` port (``0``: off).
    web_port
        faust's own web server port (``None``: off).
    snapshot_interval
        Seconds between metric snapshots per model version.
    checkpoint_events, checkpoint_interval
        Stage 2 checkpoints after this many observation messages or seconds,
        whichever comes first; nothing is acknowledged before its checkpoint.
    batch_size
        Stage 1 reads and joins up to ``batch_size`` input messages at a time
        (what has arrived, without waiting for more).
    batch_events
        Stage 1 joins at most this many events at a time: a read of bulk
        messages is joined, published and written in parts of whole
        messages (the memory of a read is bounded by it, not by the fetch).
    expiry_interval
        Seconds between label-TTL sweeps.
    session_timeout, heartbeat_interval
        Consumer-group timing (seconds).
    policy_refresh_interval
        Seconds between re-reads of the models' policies from the registry
        (a missed ``policy_changed`` event heals within this time).
    reset_check_interval
        Seconds between checks for a broker that lost the monitor's data.
    reset_state
        Delete the monitor's state (changelogs, data directory) before
        starting: a deliberate reset.
    series_grace_s
        Seconds a model version that is no longer served (another version of
        the model has seen events since) keeps its Prometheus series after
        its last event (:mod:`driftline.model_series`).
    state
        Where stage 1's join state lives: ``"rocksdb"`` (on disk under
        ``data_dir``, reused after a restart: only the changelog's tail is
        read again) or ``"memory"`` (rebuilt from the whole changelog).
    state_memory_mb
        RocksDB's memory for the join state (block cache and write buffers,
        all partitions together).
    """

    group_id: str | None = None
    data_dir: str = "./.driftline/monitor"
    metrics_port: int = 0
    web_port: int | None = None
    snapshot_interval: float = 10.0
    checkpoint_events: int = 2000
    checkpoint_interval: float = 1.0
    batch_size: int = 1000
    batch_events: int = 10_000
    expiry_interval: float = 1.0
    session_timeout: float = 10.0
    heartbeat_interval: float = 1.0
    policy_refresh_interval: float = 60.0
    reset_check_interval: float = 5.0
    reset_state: bool = False
    series_grace_s: float = 600.0
    state: str = "rocksdb"
    state_memory_mb: int = 64

    def check(self) -> None:
        """Raise :class:`MonitorError` naming the first option out of range."""
        from driftline import events

        if self.state not in STATE_STORES:
            raise MonitorError(f"--state must be one of {', '.join(STATE_STORES)} (got {self.state!r})")
        if not (isinstance(self.state_memory_mb, int) and self.state_memory_mb >= 8):
            raise MonitorError(f"--state-memory-mb must be an integer >= 8 (got {self.state_memory_mb!r})")
        if self.group_id is not None:
            events.validate_name(self.group_id, "--group-id")
        for name in ("snapshot_interval", "checkpoint_interval", "expiry_interval",
                     "session_timeout", "heartbeat_interval", "policy_refresh_interval", "reset_check_interval"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise MonitorError(f"{name} must be a positive number of seconds (got {value!r})")
        if not (isinstance(self.series_grace_s, (int, float)) and self.series_grace_s >= 0):
            raise MonitorError(f"--series-grace-s must be a number of seconds >= 0 (got {self.series_grace_s!r})")
        for name in ("checkpoint_events", "batch_size", "batch_events"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise MonitorError(f"{name} must be a positive integer (got {value!r})")
        for name in ("metrics_port", "web_port"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 65536:
                raise MonitorError(f"--{name.replace('_', '-')} must be between 0 and 65535 (got {value})")


_DEFAULTS: dict[str, Any] = {field.name: field.default for field in dataclasses.fields(MonitorOptions)}


def option_default(name: str) -> Any:
    """The default of :class:`MonitorOptions` field ``name``."""
    return _DEFAULTS[name]
