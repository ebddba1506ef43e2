"""Prometheus metrics shared by the monitor and the worker.

Each daemon calls :func:`start_metrics_server` once with the port from its
``--metrics-port`` flag (0 turns the endpoint off) and updates the metric
objects below. The endpoint serves ``/metrics`` in Prometheus text format.

Metric names
------------
``driftline_events_processed_total{component,kind}``
    Events handled (kind: prediction, label, joined, expired, dead_letter, retrain_request).
``driftline_consumer_lag{component,topic,partition}``
    Messages between the consumer's position and the partition's end.
``driftline_alerts_total{model,kind}``
    Alerts published.
``driftline_model_<metric>{model,version,window}`` and the other per-version series
    From the monitor's metrics snapshots (:mod:`driftline.model_series`,
    :data:`MODEL_SERIES`); the README's table lists them.
``driftline_dead_letters_total{component,reason}``
    Dead letters by reason class (:func:`driftline.deadletters.reason_class`).
``driftline_join_state_entries{component}``
    Entries in the monitor's join table (predictions waiting for a label, join markers).
``driftline_build_info{version,python}``
    Always 1; the labels say what runs.
``driftline_retrain_runs_total{model,outcome}``
    Retraining runs (outcome: promoted, rejected, failed).
``driftline_retrain_duration_seconds{model}``
    Duration of retraining runs.
``driftline_agent_up{component,agent}``
    1 while an agent, timer or task of a daemon runs, 0 before it starts or
    after it failed.

The same endpoint answers ``/health`` (JSON; 200 when healthy, 503 when
not) for daemons that register a health check with :func:`set_health_check`.
"""

from __future__ import annotations

import json
import logging
import platform
import threading
from socketserver import ThreadingMixIn
from typing import Any, Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from . import __version__
from .deadletters import reason_class
from .model_series import ModelSeries

__all__ = [
    "REGISTRY",
    "EVENTS_PROCESSED",
    "CONSUMER_LAG",
    "ALERTS",
    "MODEL_SERIES",
    "DEAD_LETTERS",
    "JOIN_STATE",
    "BUILD_INFO",
    "count_dead_letters",
    "RETRAIN_RUNS",
    "RETRAIN_DURATION",
    "AGENT_UP",
    "MONITOR_CPU",
    "start_metrics_server",
    "set_health_check",
    "LagProbe",
]

# A registry of our own: only Driftline's series (plus nothing from other libraries).
REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_PROCESSED = Counter(
    "driftline_events_processed", "Events handled", ["component", "kind"], registry=REGISTRY
)
CONSUMER_LAG = Gauge(
    "driftline_consumer_lag", "Messages not yet consumed", ["component", "topic", "partition"], registry=REGISTRY
)
ALERTS = Counter("driftline_alerts", "Alerts published", ["model", "kind"], registry=REGISTRY)
#: The monitor's per-version series, from the snapshots it publishes to ``metrics``.
MODEL_SERIES = ModelSeries()
REGISTRY.register(MODEL_SERIES)
DEAD_LETTERS = Counter("driftline_dead_letters", "Dead letters by reason class", ["component", "reason"],
                       registry=REGISTRY)
JOIN_STATE = Gauge("driftline_join_state_entries", "Entries in the monitor's join table", ["component"],
                   registry=REGISTRY)
BUILD_INFO = Gauge("driftline_build_info", "Always 1: the Driftline version and Python that run",
                   ["version", "python"], registry=REGISTRY)
RETRAIN_RUNS = Counter("driftline_retrain_runs", "Retraining runs", ["model", "outcome"], registry=REGISTRY)
RETRAIN_DURATION = Histogram(
    "driftline_retrain_duration_seconds", "Duration of retraining runs", ["model"], registry=REGISTRY,
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
)

#: The monitor's own work by stage ("join": decoding, the join, encoding its
#: outputs and the join-state store; "models": the analytics and checkpoints), timed with thread CPU
#: clocks around code that does not yield; the process's CPU minus these is
#: faust's, the Kafka client's and the event loop's share.
MONITOR_CPU = Counter("driftline_monitor_cpu_seconds", "CPU seconds of the monitor's own work by stage",
                      ["stage"], registry=REGISTRY)
AGENT_UP = Gauge("driftline_agent_up", "1 while the part runs", ["component", "agent"], registry=REGISTRY)

def count_dead_letters(component: str, letters: Iterable[Any]) -> None:
    """Count dead letters in ``driftline_dead_letters_total`` by reason class."""
    for letter in letters:
        DEAD_LETTERS.labels(component, reason_class(letter)).inc()


BUILD_INFO.labels(__version__, platform.python_version()).set(1)

_started: set[int] = set()
_health_check: Callable[[], dict] | None = None


def set_health_check(check: Callable[[], dict] | None) -> None:
    """``/health`` answers ``check()`` as JSON: status 200 when its ``ok`` is
    true, 503 otherwise (and 503 ``{"ok": false}`` without a check)."""
    global _health_check
    _health_check = check


def _app(environ: dict, start_response: Callable) -> list[bytes]:
    if environ.get("PATH_INFO") == "/health":
        report = _health_check() if _health_check is not None else {"ok": False, "reason": "no health check"}
        status = "200 OK" if report.get("ok") else "503 Service Unavailable"
        start_response(status, [("Content-Type", "application/json")])
        return [json.dumps(report, sort_keys=True).encode()]
    return _metrics_app(environ, start_response)


_metrics_app = make_wsgi_app(REGISTRY)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not log lines
        pass


def start_metrics_server(port: int | None, addr: str | None = None) -> int | None:
    """Serve ``/metrics`` (and ``/health``) on ``addr:port``; ``0``/``None`` disables it.
    ``addr`` defaults to ``DRIFTLINE_METRICS_ADDR`` (``127.0.0.1``; set
    ``0.0.0.0`` in a container so Prometheus can reach it).
    Returns the port served (or ``None``). Safe to call twice."""
    if not port:
        return None
    if addr is None:
        from .config import load_settings

        addr = load_settings().metrics_addr
    if not 0 < port < 65536:
        raise ValueError(f"metrics port must be between 1 and 65535 (got {port})")
    if port not in _started:
        server = make_server(addr, port, _app, _Server, handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, name="metrics-server", daemon=True).start()
        _started.add(port)
    return port


class LagProbe:
    """Consumer lag of a consumer group, measured from outside the consumer.

    Compares the group's committed offsets with the partitions' end offsets
    every ``interval_s`` seconds and sets ``driftline_consumer_lag`` — for
    consumers whose client does not expose its own lag (the monitor's faust
    app). A partition without a committed offset counts its whole length.
    End offsets are a hint on tansu (DESIGN.md), and so is this gauge there.

    Parameters
    ----------
    settings
        Connection settings (:class:`driftline.config.Settings`).
    group_id
        The consumer group to watch.
    topics
        Topics the group consumes.
    component
        The ``component`` label (``monitor``).
    interval_s
        Seconds between measurements.

    Examples
    --------
    >>> probe = LagProbe(settings, "driftline.monitor", [settings.topics.predictions],  # doctest: +SKIP
    ...                  "monitor").start()
    >>> probe.stop()                                                                      # doctest: +SKIP
    """

    def __init__(self, settings: Any, group_id: str, topics: Iterable[str], component: str,
                 interval_s: float = 15.0):
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive (got {interval_s!r})")
        self.settings = settings
        self.group_id = group_id
        self.topics = list(topics)
        self.component = component
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._admin = None
        self._consumer = None

    def update(self) -> dict[tuple[str, int], int]:
        """Measure once; returns ``(topic, partition) -> lag`` and sets the gauge."""
        from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

        security = self.settings.kafka_security()
        if self._admin is None:
            self._admin = KafkaAdminClient(bootstrap_servers=self.settings.bootstrap_list,
                                           client_id=f"driftline-{self.component}-lag", **security)
            self._consumer = KafkaConsumer(bootstrap_servers=self.settings.bootstrap_list, enable_auto_commit=False,
                                           client_id=f"driftline-{self.component}-lag", **security)
        from .kafka import topic_partitions

        partitions = [TopicPartition(topic, p) for topic in self.topics  # what metadata shows now: no wait
                      for p in sorted(topic_partitions(self._consumer, topic, timeout_s=0.0))]
        if not partitions:
            return {}
        if hasattr(self._admin, "list_group_offsets"):  # kafka-python >= 3
            committed = self._admin.list_group_offsets({self.group_id: partitions}).get(self.group_id, {})
        else:  # pragma: no cover - kafka-python 2.x
            committed = self._admin.list_consumer_group_offsets(self.group_id, partitions=partitions)
        ends = self._consumer.end_offsets(partitions)
        lags: dict[tuple[str, int], int] = {}
        for tp in partitions:
            meta = committed.get(tp)
            position = meta.offset if meta is not None and meta.offset is not None and meta.offset >= 0 else 0
            lag = max(0, (ends.get(tp) or 0) - position)
            lags[(tp.topic, tp.partition)] = lag
            CONSUMER_LAG.labels(component=self.component, topic=tp.topic, partition=str(tp.partition)).set(lag)
        return lags

    def start(self) -> "LagProbe":
        """Measure every ``interval_s`` on a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name=f"{self.component}-lag-probe", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.update()
            except Exception as error:  # the probe thread's one error policy: lag is best-effort, never stop the daemon for it
                logging.getLogger("driftline.observability").debug("lag probe failed: %s", error)
            self._stop.wait(self.interval_s)
        self._close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        else:
            self._close()

    def _close(self) -> None:
        from kafka.errors import KafkaError

        for client in (self._admin, self._consumer):
            if client is not None:
                try:
                    client.close()
                except (KafkaError, OSError):  # closing a broken connection
                    pass
        self._admin = self._consumer = None
