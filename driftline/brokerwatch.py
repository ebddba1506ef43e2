"""A broker that cannot be reached, told in a bounded number of log lines.

Kafka clients log every failed connection attempt: the monitor wrote 793
"Unable connect" lines in the 10 s the embedded broker was down. The daemons
instead say it themselves, at most one line per ``interval_s``:

* :class:`BrokerWatch` probes the bootstrap servers (a TCP connect, every
  ``probe_s``) on a daemon thread and logs one warning when the broker goes
  away, one every ``interval_s`` while it stays away (with the down time), and
  one when it is back;
* :class:`ClientNoiseFilter`, on the root handlers, drops the client
  libraries' own connection-failure records (kafka-python, aiokafka, faust,
  mode) unless the level is DEBUG. Other records of those libraries pass.

Examples
--------
>>> import logging
>>> noise = ClientNoiseFilter()
>>> record = logging.LogRecord("aiokafka", logging.ERROR, __file__, 1,
...                            "Unable connect to node with id %s: %s", (1, "refused"), None)
>>> noise.filter(record)
False
>>> record = logging.LogRecord("driftline.monitor", logging.ERROR, __file__, 1, "Unable connect", (), None)
>>> noise.filter(record)
True
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from typing import Callable, Sequence

__all__ = ["BrokerWatch", "ClientNoiseFilter", "install_client_noise_filter", "tcp_reachable"]

log = logging.getLogger("driftline.broker")

_CLIENTS = ("kafka", "aiokafka", "faust", "mode")
_NOISE = re.compile(
    r"Unable connect|Unable to update metadata|NodeNotReady|Connect call failed|Connection at .* closed"
    r"|KafkaConnectionError|coordinator dead|Coordinator Request failed|Heartbeat .*failed"
    r"|Failed fetch messages|Got error produce response|Connection refused|connect attempt"
    r"|Closing connection|Unable to request metadata|is overlapping|No event received"
    r"|Error sending .*Request|Broken pipe|Connection reset|not ready \(node id|socket disconnected"
    r"|No node available|group_id is None|topic_id changed",
    re.IGNORECASE,
)


class ClientNoiseFilter(logging.Filter):
    """Drops client libraries' connection-failure records (see module doc)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(_CLIENTS) or record.levelno >= logging.CRITICAL:
            return True
        if record.name.split(".", 1)[0] not in _CLIENTS:
            return True  # e.g. a logger named "kafkaesque"
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a record whose arguments do not fit its format
            return True
        return _NOISE.search(message) is None


def install_client_noise_filter(level: int | None = None) -> None:
    """Put :class:`ClientNoiseFilter` on the root logger's handlers, unless
    ``level`` (default: the root logger's) is DEBUG. Idempotent."""
    root = logging.getLogger()
    level = root.getEffectiveLevel() if level is None else level
    if level <= logging.DEBUG:
        return
    for handler in root.handlers:
        if not any(isinstance(f, ClientNoiseFilter) for f in handler.filters):
            handler.addFilter(ClientNoiseFilter())


def tcp_reachable(server: str, timeout_s: float = 1.0) -> bool:
    """Whether ``host:port`` accepts a TCP connection."""
    host, _, port = server.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def _say(component: str, event: str, down_s: float | None, servers: str, interval_s: float) -> None:
    if event == "broker_down":
        log.warning("%s: cannot reach the Kafka broker at %s; retrying, one line every %.0f s while it is down",
                    component, servers, interval_s)
    elif event == "broker_still_down":
        log.warning("%s: Kafka broker at %s unreachable for %.0f s", component, servers, down_s)
    else:
        log.warning("%s: Kafka broker at %s reachable again after %.1f s", component, servers, down_s)


class BrokerWatch:
    """Logs a broker outage in a bounded number of lines.

    Parameters
    ----------
    servers
        Bootstrap servers (``host:port``).
    component
        Who is speaking (``monitor``, ``worker``), in each line.
    interval_s
        Seconds between "still unreachable" lines.
    probe_s
        Seconds between probes.
    on_change
        Called with ``True`` (back) or ``False`` (gone) on each change.
    say
        ``say(event, down_s)`` writes the line for ``broker_down``,
        ``broker_still_down`` or ``broker_up`` (default: a sentence on the
        ``driftline.broker`` logger); the worker writes its ``key=value`` lines.
    reachable
        ``reachable(server) -> bool`` (default: a TCP connect).

    Examples
    --------
    >>> answers = iter([False, False, True])
    >>> said = []
    >>> watch = BrokerWatch(["h:1"], "worker", reachable=lambda s: next(answers),
    ...                     say=lambda event, down_s: said.append(event))
    >>> [watch.check(now=t) for t in (0.0, 1.0, 2.0)], said
    ([False, False, True], ['broker_down', 'broker_up'])
    """

    def __init__(self, servers: Sequence[str], component: str, interval_s: float = 30.0, probe_s: float = 1.0,
                 on_change: Callable[[bool], None] | None = None,
                 say: Callable[[str, float | None], None] | None = None,
                 reachable: Callable[[str], bool] | None = None):
        self.servers = list(servers)
        self.component = component
        self.interval_s = interval_s
        self.probe_s = probe_s
        self.on_change = on_change
        joined = ",".join(self.servers)
        self._say = say or (lambda event, down_s: _say(component, event, down_s, joined, interval_s))
        self._reachable = reachable or (lambda server: tcp_reachable(server, timeout_s=min(2.0, probe_s * 2)))
        self.down_since: float | None = None
        self._last_line = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def up(self) -> bool:
        return self.down_since is None

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def check(self, now: float | None = None) -> bool:
        """Probe once, log what changed; returns whether the broker is up."""
        up = any(self._reachable(server) for server in self.servers)
        now = time.monotonic() if now is None else now
        if up:
            if self.down_since is not None:
                down_s, self.down_since = round(now - self.down_since, 1), None
                self._say("broker_up", down_s)
                if self.on_change:
                    self.on_change(True)
            return True
        if self.down_since is None:
            self.down_since = self._last_line = now
            self._say("broker_down", None)
            if self.on_change:
                self.on_change(False)
        elif now - self._last_line >= self.interval_s:
            self._last_line = now
            self._say("broker_still_down", round(now - self.down_since, 1))
        return False

    def start(self) -> "BrokerWatch":
        self._thread = threading.Thread(target=self._loop, name=f"{self.component}-broker-watch", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.probe_s):
            self.check()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
