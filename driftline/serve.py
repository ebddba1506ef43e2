"""``driftline serve MODEL``: an HTTP scoring server on :class:`~driftline.champion.Champion`.

It speaks MLflow's scoring protocol, so clients written for
``mlflow models serve`` work unchanged, and adds what closes the loop:

``POST /invocations``
    A JSON object with one of ``dataframe_records`` (a list of
    ``{column: value}`` rows), ``dataframe_split`` (``{"columns": [...],
    "data": [[...], ...]}``), ``instances`` or ``inputs`` (a list of row
    objects, a list of value lists in the model's column order, or an object
    of columns). Answers ``{"predictions": [...], "event_ids": [...],
    "model_version": N}``; every row is published as a prediction event
    with that id. An optional ``event_ids`` list names the events instead.
``POST /labels``
    ``{"labels": [{"event_id": ..., "label": ...}, ...]}`` publishes the
    truth for earlier predictions.
``GET /health``
    200 with the version serving, 503 before one is loaded.
``GET /metrics``
    Prometheus text: ``driftline_serve_requests_total{endpoint,status}``,
    ``driftline_serve_request_duration_seconds{endpoint}``,
    ``driftline_serve_rows_total``, ``driftline_serve_model_version``,
    ``driftline_serve_reloads_total``, ``driftline_serve_reload_failures_total``,
    ``driftline_serve_events_published_total``,
    ``driftline_serve_publish_failures_total`` (events not published: the
    broker was down, the queue full, or the contract refused a value).

A bad request gets a 400 whose ``message`` names the field, the value and
the reason (the event contract's :class:`~driftline.events.ValidationError`);
never a traceback. A promotion swaps the model between two requests:
requests already running finish on the old version.
"""

from __future__ import annotations

import argparse
import logging
import signal
import time
from typing import Any

import orjson

from .errors import DriftlineError
from .extras import require
from .events import MISSING_VALUE, ValidationError

__all__ = ["create_app", "parse_invocation", "parse_labels", "register", "MAX_BODY_BYTES"]

log = logging.getLogger(__name__)

#: Largest request body accepted.
MAX_BODY_BYTES = 16 * 1024 * 1024
_SHAPES = ("dataframe_records", "dataframe_split", "instances", "inputs")
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


# -- request bodies ---------------------------------------------------------------------------


def _json_body(body: bytes) -> Any:
    if len(body) > MAX_BODY_BYTES:
        raise ValidationError("<body>", f"{len(body)} bytes", f"is larger than {MAX_BODY_BYTES} bytes")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise ValidationError("<body>", body[:40].decode("utf-8", "replace"), f"is not valid JSON ({error})") from None


def parse_invocation(body: Any, columns: tuple[str, ...] | None = None) -> tuple[str, list[dict]]:
    """The rows of an MLflow scoring request: ``(shape, rows)``.

    ``columns`` (the model's ``feature_names_in_``) names the values of
    list-of-lists ``instances``/``inputs``.

    >>> parse_invocation({"dataframe_split": {"columns": ["a", "b"], "data": [[1, "x"], [2, "y"]]}})
    ('dataframe_split', [{'a': 1, 'b': 'x'}, {'a': 2, 'b': 'y'}])
    >>> parse_invocation({"instances": [[1, 2]]}, columns=("a", "b"))
    ('instances', [{'a': 1, 'b': 2}])
    >>> try:
    ...     parse_invocation({"rows": []})
    ... except ValidationError as error:
    ...     print(error.field, "|", error.reason)
    <body> | must hold one of dataframe_records, dataframe_split, instances, inputs
    """
    if type(body) is not dict:
        raise ValidationError("<body>", body, "must be a JSON object with one of " + ", ".join(_SHAPES))
    shapes = [key for key in _SHAPES if key in body]
    if len(shapes) != 1:
        raise ValidationError("<body>", sorted(body) if not shapes else shapes,
                              "must hold " + ("one of " if not shapes else "only one of ") + ", ".join(_SHAPES))
    shape = shapes[0]
    value = body[shape]
    if shape == "dataframe_split":
        return shape, _split(value)
    if shape == "dataframe_records":
        if type(value) is not list:
            raise ValidationError(shape, value, "must be a list of {column: value} objects")
        return shape, value
    # instances / inputs: rows as objects, rows as lists, or an object of columns
    if type(value) is dict:
        return shape, _columnar(value, shape)
    if type(value) is not list:
        raise ValidationError(shape, value, "must be a list of rows or an object of columns")
    if value and all(type(row) is list for row in value):
        if columns is None:
            raise ValidationError(shape, value[0], "rows as lists need a model that knows its column names "
                                                   "(fitted on a DataFrame); send objects instead")
        return shape, _rows(columns, value, shape)
    return shape, value


def _split(value: Any) -> list[dict]:
    if type(value) is not dict:
        raise ValidationError("dataframe_split", value, 'must be an object {"columns": [...], "data": [[...]]}')
    columns = value.get("columns", MISSING_VALUE)
    data = value.get("data", MISSING_VALUE)
    if columns is MISSING_VALUE:
        raise ValidationError("dataframe_split.columns", MISSING_VALUE, "missing required field")
    if data is MISSING_VALUE:
        raise ValidationError("dataframe_split.data", MISSING_VALUE, "missing required field")
    if type(columns) is not list or not all(type(c) is str for c in columns):
        raise ValidationError("dataframe_split.columns", columns, "must be a list of column names")
    if len(set(columns)) != len(columns):
        raise ValidationError("dataframe_split.columns", columns, "must not repeat a column")
    if type(data) is not list:
        raise ValidationError("dataframe_split.data", data, "must be a list of rows (lists of values)")
    return _rows(tuple(columns), data, "dataframe_split.data")


def _rows(columns: tuple[str, ...], data: list, where: str) -> list[dict]:
    rows = []
    for i, row in enumerate(data):
        if type(row) is not list or len(row) != len(columns):
            raise ValidationError(f"{where}[{i}]", row, f"must be a list of {len(columns)} values "
                                                        f"(one per column)")
        rows.append(dict(zip(columns, row)))
    return rows


def _columnar(value: dict, where: str) -> list[dict]:
    lengths = set()
    for name, column in value.items():
        if type(column) is not list:
            raise ValidationError(f"{where}.{name}", column, "must be a list of values (one per row)")
        lengths.add(len(column))
    if len(lengths) > 1:
        raise ValidationError(where, sorted(lengths), "columns must all have the same length")
    names = list(value)
    return [dict(zip(names, cells)) for cells in zip(*value.values())]


def parse_labels(body: Any) -> list[tuple[str, Any]]:
    """``{"labels": [{"event_id": ..., "label": ...}, ...]}`` -> pairs.

    >>> parse_labels({"labels": [{"event_id": "e-1", "label": 1}]})
    [('e-1', 1)]
    """
    if type(body) is not dict or "labels" not in body:
        raise ValidationError("labels", MISSING_VALUE, 'missing required field: send {"labels": [{"event_id": '
                                                       '..., "label": ...}]}')
    labels = body["labels"]
    if type(labels) is not list or not labels:
        raise ValidationError("labels", labels, "must be a non-empty list of {event_id, label} objects")
    pairs = []
    for i, item in enumerate(labels):
        if type(item) is not dict:
            raise ValidationError(f"labels[{i}]", item, "must be an object {event_id, label}")
        for name in ("event_id", "label"):
            if name not in item:
                raise ValidationError(f"labels[{i}].{name}", MISSING_VALUE, "missing required field")
        pairs.append((item["event_id"], item["label"]))
    return pairs


# -- the application ----------------------------------------------------------------------------


class _ChampionCollector:
    """Reads the champion's counters at scrape time."""

    def __init__(self, champion: Any):
        self.champion = champion

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        champion = self.champion
        labels = ["model", "alias"]
        values = [champion.name, champion.alias]
        version = GaugeMetricFamily("driftline_serve_model_version", "Version serving now (0: none loaded)",
                                    labels=labels)
        version.add_metric(values, champion.version or 0)
        yield version
        stats = dict(champion.stats)
        for name, key, text in (
            ("driftline_serve_reloads", ("reloads",), "Times a new version was swapped in"),
            ("driftline_serve_reload_failures", ("reload_failures",), "Versions that could not be loaded"),
            ("driftline_serve_events_published", ("published",), "Events handed to the producer"),
            ("driftline_serve_publish_failures", ("publish_failures", "dropped", "refused"),
             "Events not published (broker down, queue full, refused by the contract)"),
        ):
            family = CounterMetricFamily(name, text, labels=labels)
            family.add_metric(values, sum(stats[k] for k in key))
            yield family

    def describe(self):
        return []


def create_app(champion: Any):
    """The Starlette application serving ``champion``."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

    require("starlette", "serve", "driftline serve")
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from .champion import NotReadyError

    metrics = CollectorRegistry(auto_describe=True)
    requests = Counter("driftline_serve_requests", "HTTP requests by endpoint and status",
                       ["endpoint", "status"], registry=metrics)
    duration = Histogram("driftline_serve_request_duration_seconds", "Time to answer a request",
                         ["endpoint"], registry=metrics, buckets=_LATENCY_BUCKETS)
    rows_total = Counter("driftline_serve_rows", "Rows predicted", registry=metrics)
    metrics.register(_ChampionCollector(champion))

    def answer(endpoint: str, started: float, status: int, body: Any) -> Response:
        requests.labels(endpoint, str(status)).inc()
        duration.labels(endpoint).observe(time.perf_counter() - started)
        return Response(orjson.dumps(body), status_code=status, media_type="application/json")

    def refused(endpoint: str, started: float, error: ValidationError) -> Response:
        return answer(endpoint, started, 400, {"error_code": "BAD_REQUEST", "message": str(error),
                                               "field": error.field, "reason": error.reason})

    def not_ready(endpoint: str, started: float, error: Exception) -> Response:
        return answer(endpoint, started, 503, {"error_code": "NOT_READY", "message": str(error)})

    async def invocations(request: Request) -> Response:
        started = time.perf_counter()
        try:
            body = _json_body(await request.body())
            shape, rows = parse_invocation(body, champion.columns)
            event_ids = body.get("event_ids")
            if event_ids is not None and (type(event_ids) is not list or not all(type(e) is str for e in event_ids)):
                raise ValidationError("event_ids", event_ids, "must be a list of strings, one per row")
            try:
                # On the event loop, not a thread pool: the model is CPU-bound
                # under the GIL either way, and one thread fewer competing
                # for it measured faster (bench/serving.py).
                result = champion.predict(rows, event_ids=event_ids)
            except ValidationError as error:  # name the field as the client wrote it
                field = shape + error.field[len("inputs"):] if error.field.startswith("inputs") else error.field
                raise ValidationError(field, error.value, error.reason) from None
        except ValidationError as error:
            return refused("invocations", started, error)
        except NotReadyError as error:
            return not_ready("invocations", started, error)
        rows_total.inc(len(result.predictions))
        return answer("invocations", started, 200, {"predictions": result.predictions,
                                                    "event_ids": result.event_ids,
                                                    "model_version": result.model_version})

    async def labels(request: Request) -> Response:
        started = time.perf_counter()
        if not champion.publishing:
            return answer("labels", started, 409, {"error_code": "PUBLISHING_OFF",
                                                   "message": "this server runs with --no-publish: labels are "
                                                              "not sent"})
        try:
            pairs = parse_labels(_json_body(await request.body()))
            champion.publish_labels(pairs)
        except ValidationError as error:
            field = error.field if error.index is None else f"labels[{error.index}].{error.field}"
            return refused("labels", started, ValidationError(field, error.value, error.reason))
        return answer("labels", started, 200, {"published": len(pairs)})

    async def health(request: Request) -> Response:
        started = time.perf_counter()
        version = champion.version
        if version is None:
            return not_ready("health", started, NotReadyError(
                f"{champion.name}@{champion.alias}: no version loaded ({champion.last_error})"))
        return answer("health", started, 200, {"status": "ok", "model": champion.name, "alias": champion.alias,
                                               "model_version": version})

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[
        Route("/invocations", invocations, methods=["POST"]),
        Route("/labels", labels, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/ping", health, methods=["GET"]),  # MLflow's name for it
        Route("/metrics", prometheus, methods=["GET"]),
    ])


# -- the command -----------------------------------------------------------------------------------


def register(subparsers) -> None:
    """Add ``driftline serve`` (imports nothing heavy until it runs)."""
    serve = subparsers.add_parser("serve", help="serve a model over HTTP (MLflow protocol), follow promotions, "
                                                "publish every prediction")
    serve.add_argument("model", metavar="MODEL", help="NAME or NAME@ALIAS in the registry")
    serve.add_argument("--alias", default=None, help="alias to serve and follow (default champion)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    serve.add_argument("--no-publish", dest="publish", action="store_false",
                       help="do not publish prediction events (serve only)")
    serve.add_argument("--refresh-s", type=float, default=30.0,
                       help="re-resolve the alias this often, events or not (default 30)")
    serve.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    require("starlette", "serve", "driftline serve")
    uvicorn = require("uvicorn", "serve", "driftline serve")

    from .champion import Champion

    if not 0 < args.port < 65536:
        raise DriftlineError(f"--port must be between 1 and 65535 (got {args.port})")
    champion = Champion(args.model, args.alias, publish=args.publish, require=False, refresh_s=args.refresh_s)
    try:
        config = uvicorn.Config(create_app(champion), host=args.host, port=args.port, log_level="warning",
                                access_log=False, lifespan="off")
        server = uvicorn.Server(config)
        log.info("serving %s@%s (version %s) on http://%s:%d%s", champion.name, champion.alias, champion.version,
                 args.host, args.port, "" if args.publish else ", publishing off")
        # uvicorn stops on SIGINT/SIGTERM (finishing the requests in flight),
        # then re-raises the signal to the handler it found: ours only
        # records it, so the champion is still flushed and closed below.
        previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            server.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        champion.close()
    return 0
