"""What the worker does when the registry database or the broker goes away.

- :class:`RetryPolicy` — how often and how patiently a run is retried
  (``--retry-attempts``, ``--retry-backoff-s``, ``--retry-max-backoff-s``).
- :class:`Unavailable` and :func:`unavailable` — tell "a dependency could
  not be reached, trying again may help" (a refused or reset database
  connection, a broker that does not acknowledge) from a run's own failure,
  and say it in one readable line without secrets.
- :func:`broker_watch` — :class:`driftline.brokerwatch.BrokerWatch` with the
  worker's ``key=value`` lines: one warning when the broker goes down, one
  reminder per interval while it stays down, one line when it is back.
- :func:`dependency_errors` — what the registry database, the artifact
  store and the broker raise when they fail: what the worker catches.
- :class:`KafkaLogLimiter` — at most one kafka-python line per interval
  (kafka-python logs every failed reconnect of every client at ERROR).

Examples
--------
>>> RetryPolicy(attempts=4, backoff_s=0.5, max_backoff_s=1.5).delays()
[0.5, 1.0, 1.5]
>>> safe_url("postgresql://app:s3cret@db.internal:5432/registry?password=x&sslmode=require")
'postgresql://db.internal:5432/registry'
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from driftline.brokerwatch import BrokerWatch
from driftline.config import Settings
from driftline.errors import DriftlineError
from driftline.extras import error_types

from .log import log_event

__all__ = ["RetryPolicy", "Unavailable", "unavailable", "dependency_errors", "safe_url", "broker_watch",
           "KafkaLogLimiter", "quiet_kafka_logging"]

logger = logging.getLogger("driftline.retrain.worker")


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of a run whose registry or broker is unreachable.

    Parameters
    ----------
    attempts
        Tries in all (1: no retry).
    backoff_s
        Pause after the first failed try; doubled after each further one.
    max_backoff_s
        Longest pause.
    """

    attempts: int = 5
    backoff_s: float = 2.0
    max_backoff_s: float = 30.0

    def check(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"--retry-attempts must be at least 1 (got {self.attempts})")
        if not self.backoff_s >= 0:
            raise ValueError(f"--retry-backoff-s must be 0 or more (got {self.backoff_s})")
        if not self.max_backoff_s >= self.backoff_s:
            raise ValueError(f"--retry-max-backoff-s must be at least --retry-backoff-s "
                             f"(got {self.max_backoff_s} < {self.backoff_s})")

    def delay(self, failed: int) -> float:
        """Pause after the ``failed``-th failed try (1-based)."""
        return min(self.backoff_s * 2 ** (failed - 1), self.max_backoff_s)

    def delays(self) -> list[float]:
        return [self.delay(n) for n in range(1, self.attempts)]


def safe_url(url: str) -> str:
    """A database URL without user, password and query (which may hold a
    ``password=`` parameter)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "<registry database>"
    rest = rest.split("?", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme.replace('+psycopg', '')}://{rest}"


class Unavailable(DriftlineError):
    """The registry database or the broker could not be reached (a retry may
    succeed).

    Parameters
    ----------
    what
        ``"registry"`` or ``"broker"``.
    where
        Its address, without secrets.
    detail
        The cause in a few words (``connection refused``).
    """

    def __init__(self, what: str, where: str, detail: str):
        super().__init__(f"{what} unreachable at {where}: {detail}")
        self.what, self.where, self.detail = what, where, detail


# Short causes for libpq's long messages, checked in this order.
_PG_CAUSES = (
    ("connection refused", "connection refused"),
    ("server closed the connection unexpectedly", "connection closed by the server"),
    ("connection reset", "connection reset"),
    ("consuming input failed", "connection lost"),
    ("sending query failed", "connection lost"),
    ("could not receive data", "connection lost"),
    ("timeout expired", "connection timed out"),
    ("the connection is closed", "connection lost"),
    ("connection is lost", "connection lost"),
    ("no route to host", "no route to host"),
    ("could not translate host name", "unknown host"),
)


def _pg_detail(error: BaseException) -> str:
    text = str(error).strip()
    lowered = text.lower()
    for needle, short in _PG_CAUSES:
        if needle in lowered:
            return short
    first = text.splitlines()[0] if text else type(error).__name__
    return first[:200]


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def unavailable(error: BaseException, settings: Settings) -> Unavailable | None:
    """:class:`Unavailable` when ``error`` (or its cause) means the registry
    database or the broker could not be reached; ``None`` otherwise."""
    from kafka.errors import KafkaError

    from driftline.registry.errors import PublishError

    pg_errors = error_types("psycopg", "OperationalError", "InterfaceError")  # () without the postgres extra
    registry_where = safe_url(settings.registry) if settings.registry_is_database else str(settings.registry)
    for link in _chain(error):
        if isinstance(link, Unavailable):
            return link
        if pg_errors and isinstance(link, pg_errors):
            return Unavailable("registry", registry_where, _pg_detail(link))
        if isinstance(link, sqlite3.OperationalError) and "locked" in str(link):
            return Unavailable("registry", registry_where, "database is locked")
        if isinstance(link, (PublishError, KafkaError)):
            cause = link if isinstance(link, KafkaError) else (link.__cause__ or link)
            detail = type(cause).__name__ if isinstance(cause, KafkaError) else "not acknowledged"
            text = str(cause.args[0]) if isinstance(cause, KafkaError) and cause.args else ""
            if text:
                detail = f"{detail} ({text[:120]})"
            return Unavailable("broker", settings.bootstrap_servers, detail)
    return None


@functools.cache
def dependency_errors() -> tuple[type[BaseException], ...]:
    """The exceptions of a failing dependency: the registry's own errors
    (:class:`DriftlineError`, :class:`Unavailable` too), the broker's
    (``KafkaError``), the database drivers' and the file system's. Anything
    else is a bug and is not caught on the way.

    Examples
    --------
    >>> OSError in dependency_errors() and DriftlineError in dependency_errors()
    True
    """
    from kafka.errors import KafkaError

    return (DriftlineError, KafkaError, OSError, sqlite3.Error, *error_types("psycopg", "Error"))


def broker_watch(servers: list[str], interval_s: float = 30.0, probe_s: float = 1.0,
                 reachable: Callable[[str], bool] | None = None) -> BrokerWatch:
    """The worker's broker watch: its lines are ``event=broker_down`` etc."""
    joined = ",".join(servers)

    def say(event: str, down_s: float | None) -> None:
        if event == "broker_down":
            log_event(logger, event, logging.WARNING, servers=joined,
                      note=f"retrying; a reminder every {interval_s:g}s until it is back")
        elif event == "broker_still_down":
            log_event(logger, event, logging.WARNING, servers=joined, down_s=down_s)
        else:
            log_event(logger, event, servers=joined, down_s=down_s)

    return BrokerWatch(servers, "worker", interval_s=interval_s, probe_s=probe_s, say=say, reachable=reachable)


class KafkaLogLimiter(logging.Filter):
    """Let through at most one ``kafka.*`` record per ``interval_s`` (the
    next one says how many were held back); other records pass.

    Parameters
    ----------
    interval_s
        Seconds between two kafka-python lines.
    """

    def __init__(self, interval_s: float = 30.0):
        super().__init__()
        self.interval_s = interval_s
        self._last = -float("inf")
        self._held = 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "kafka" and not record.name.startswith("kafka."):
            return True
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.interval_s:
                self._held += 1
                return False
            self._last = now
            if record.exc_info and record.exc_info[1] is not None:
                # one line, not a traceback per reconnect
                error = record.exc_info[1]
                record.msg = f"{record.getMessage()} [{type(error).__name__}: {error}]"
                record.args = ()
                record.exc_info = record.exc_text = None
            if self._held:
                record.msg = f"{record.msg} ({self._held} more kafka-python lines held back in the last " \
                             f"{self.interval_s:g}s; --log-level DEBUG shows them)"
                self._held = 0
        return True


def quiet_kafka_logging(interval_s: float = 30.0) -> None:
    """Below DEBUG: kafka-python logs at WARNING and above only, and at most
    one line per ``interval_s`` through every root handler."""
    root = logging.getLogger()
    if root.getEffectiveLevel() <= logging.DEBUG:
        return
    logging.getLogger("kafka").setLevel(logging.WARNING)
    limiter = KafkaLogLimiter(interval_s)
    for handler in root.handlers:
        if not any(isinstance(f, KafkaLogLimiter) for f in handler.filters):
            handler.addFilter(limiter)
