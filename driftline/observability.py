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
``driftline_model_metric{model,version,metric,window}``
    Latest online metric per model version (window: cumulative or rolling).
``driftline_retrain_runs_total{model,outcome}``
    Retraining runs (outcome: promoted, rejected, failed).
``driftline_retrain_duration_seconds{model}``
    Duration of retraining runs.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = [
    "REGISTRY",
    "EVENTS_PROCESSED",
    "CONSUMER_LAG",
    "ALERTS",
    "MODEL_METRIC",
    "RETRAIN_RUNS",
    "RETRAIN_DURATION",
    "start_metrics_server",
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
MODEL_METRIC = Gauge(
    "driftline_model_metric", "Online metric of a model version", ["model", "version", "metric", "window"],
    registry=REGISTRY,
)
RETRAIN_RUNS = Counter("driftline_retrain_runs", "Retraining runs", ["model", "outcome"], registry=REGISTRY)
RETRAIN_DURATION = Histogram(
    "driftline_retrain_duration_seconds", "Duration of retraining runs", ["model"], registry=REGISTRY,
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
)

_started: set[int] = set()


def start_metrics_server(port: int | None, addr: str | None = None) -> int | None:
    """Serve ``/metrics`` on ``addr:port``; ``0``/``None`` disables it.
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
        start_http_server(port, addr=addr, registry=REGISTRY)
        _started.add(port)
    return port
