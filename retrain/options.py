"""The worker daemon's own settings (per-model behaviour is in the policy).

``driftline worker``'s option defaults come from :class:`WorkerOptions`
(retrain/cli.py), so each default is written once, here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from driftline.errors import DriftlineError

if TYPE_CHECKING:
    from .resilience import RetryPolicy

# light at import time: ``driftline --help`` reads the defaults from here

__all__ = ["WorkerConfigError", "WorkerOptions"]


class WorkerConfigError(DriftlineError):
    """The worker cannot start: broker, topics, registry or a policy is wrong."""


@dataclass
class WorkerOptions:
    """Knobs of the daemon itself (per-model behaviour is in the policy).

    ``session_timeout_ms``/``heartbeat_interval_ms``: consumer-group timing;
    short values make group joins fast on tansu. ``quiet_ms``: how long the
    training-data read waits without news before it stops. ``retry_*``:
    how a run whose registry or broker is unreachable is retried;
    ``publish_timeout_s``: how long one delivery of a model event or dead
    letter may take; ``broker_log_interval_s``: seconds between two
    "broker still down" lines.
    """

    group_id: str = "driftline-worker"
    concurrency: int = 1
    metrics_port: int = 0
    status_file: str | None = None
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    quiet_ms: int = 1_000
    policy_refresh_s: float = 60.0
    shutdown_grace_s: float = 30.0
    startup_timeout_s: float = 15.0
    retry_attempts: int = 5
    retry_backoff_s: float = 2.0
    retry_max_backoff_s: float = 30.0
    publish_timeout_s: float = 30.0
    broker_log_interval_s: float = 30.0
    store: bool = True  # training data from the segment store (retrain/store.py); False: scan the topic
    store_dir: str | None = None

    @property
    def retry(self) -> RetryPolicy:
        from .resilience import RetryPolicy

        return RetryPolicy(self.retry_attempts, self.retry_backoff_s, self.retry_max_backoff_s)

    def check(self) -> None:
        from driftline import events
        from driftline.events import ValidationError

        try:
            events.validate_name(self.group_id, "group_id")
        except ValidationError as error:
            raise WorkerConfigError(f"--group-id: {error}") from None
        if self.concurrency < 1:
            raise WorkerConfigError(f"--concurrency must be at least 1 (got {self.concurrency})")
        if not 0 <= self.metrics_port < 65536:
            raise WorkerConfigError(f"--metrics-port must be between 0 and 65535 (got {self.metrics_port})")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise WorkerConfigError("--heartbeat-interval-ms must be below --session-timeout-ms "
                                    f"(got {self.heartbeat_interval_ms} >= {self.session_timeout_ms})")
        if self.quiet_ms < 50:
            raise WorkerConfigError(f"--quiet-ms must be at least 50 (got {self.quiet_ms})")
        try:
            self.retry.check()
        except ValueError as error:
            raise WorkerConfigError(str(error)) from None
        if not self.publish_timeout_s > 0:
            raise WorkerConfigError(f"--publish-timeout-s must be above 0 (got {self.publish_timeout_s})")
        if not self.broker_log_interval_s > 0:
            raise WorkerConfigError(f"--broker-log-interval-s must be above 0 (got {self.broker_log_interval_s})")

