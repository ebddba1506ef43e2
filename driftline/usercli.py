"""User commands: publish events, follow alerts and metrics.

Sub-commands contributed to ``driftline`` (see :mod:`driftline.cli`):

``driftline publish predictions|labels FILE``
    Send events from a JSON-lines or CSV file (``-`` reads standard input) in
    bulk through :class:`driftline.sdk.Publisher`. Every row is validated
    against the event contract first; a refused row is reported with its line
    number on standard error, the valid rows are still sent, and the command
    exits with status 1 when any row was refused (0 otherwise).

``driftline alerts [--follow] [--model NAME] [--from-beginning]``
    Print alerts. Without ``--follow``: every alert on the topic, then exit.
    With ``--follow``: new alerts as they arrive (all of them first with
    ``--from-beginning``) until Ctrl-C or ``--count`` alerts.

``driftline metrics [--follow] [--model NAME] [--from-beginning]``
    The same for metric snapshots.

``driftline status`` and ``driftline report MODEL`` read the registry, so
they come with it (:mod:`driftline.registry.cli`); ``driftline demo`` comes
with :mod:`driftline.demo`.

Every command prints readable lines for people, or with ``--json`` one JSON
object per line for scripts.

CSV columns
-----------
``event_id``, ``model``, ``model_version``, ``timestamp`` (ISO-8601 or epoch
seconds; empty or absent means now), ``prediction`` (predictions files) or
``label`` (labels files), ``latency_ms`` (optional), ``proba_<class>``
(optional, one column per class: the probability of ``<class>``). Every other
column is a feature. Cell values are read as: empty -> null, ``true``/
``false`` -> bool, integer text -> int, other numeric text -> float, anything
else -> string — the same rule for features, predictions and labels, so a
prediction ``1`` and its label ``1`` compare equal.

Examples
--------
>>> _cell("42"), _cell("0.5"), _cell("TRUE"), _cell(""), _cell("gold")
(42, 0.5, True, None, 'gold')
>>> row = {"event_id": "e1", "model": "churn", "model_version": "2", "timestamp": "10",
...        "prediction": "yes", "proba_yes": "0.8", "proba_no": "0.2", "age": "42"}
>>> csv_row_to_event(row, "predictions")["probabilities"]
{'yes': 0.8, 'no': 0.2}
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, TextIO

from .errors import DriftlineError
from .kafka import follow_topics, quiet_kafka_logs, require_topics, unreachable
from .report.page import format_number as _num

__all__ = ["register", "csv_row_to_event", "read_events", "RowError", "follow_records", "format_alert",
           "format_snapshot", "local_time", "print_json_line"]

_INT = re.compile(r"^[+-]?\d+$")
# Rows validated and sent per bulk call: bounds memory for large files.
_CHUNK = 5000


class UserCliError(DriftlineError):
    """A user command could not run; the message says why."""


# -- argument parsing -------------------------------------------------------------


def register(subparsers) -> None:
    """Add ``publish``, ``alerts`` and ``metrics``."""
    publish = subparsers.add_parser(
        "publish",
        help="send predictions or labels from a JSON-lines or CSV file",
        description=__doc__.split("CSV columns")[1].split("Examples")[0].replace("-----------", "CSV columns:").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    publish.add_argument("kind", choices=("predictions", "labels"), help="what the file holds")
    publish.add_argument("file", help="JSON-lines (.jsonl/.json/.ndjson) or CSV (.csv) file; '-' for stdin")
    publish.add_argument("--format", choices=("auto", "jsonl", "csv"), default="auto",
                         help="file format (default: from the extension, or sniffed for stdin)")
    publish.add_argument("--no-bulk", action="store_true", help="one Kafka message per event instead of bulk arrays")
    publish.add_argument("--json", action="store_true", help="machine-readable output (one JSON object per line)")
    publish.set_defaults(handler=_cmd_publish)

    for name, what in (("alerts", "alerts"), ("metrics", "metric snapshots")):
        cmd = subparsers.add_parser(name, help=f"print {what} (--follow to keep watching)")
        cmd.add_argument("--follow", "-f", action="store_true", help=f"keep printing new {what} until Ctrl-C")
        cmd.add_argument("--from-beginning", action="store_true",
                         help="with --follow: print everything already on the topic first")
        cmd.add_argument("--model", help="only this model")
        cmd.add_argument("--count", type=int, default=None, help=f"exit after this many {what}")
        cmd.add_argument("--json", action="store_true", help="one JSON object per line")
        cmd.add_argument("--quiet-s", type=float, default=2.0,
                         help="without --follow: stop after this many seconds without news (default 2)")
        cmd.set_defaults(handler=_cmd_alerts if name == "alerts" else _cmd_metrics)


# -- reading event files ------------------------------------------------------------


@dataclass
class RowError:
    """A row of an input file that was refused."""

    line: int
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "error": self.message}


def _cell(text: str) -> Any:
    """Read a CSV cell: empty -> None, bools, ints, floats, else the text."""
    value = text.strip()
    if value == "":
        return None
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if _INT.match(value):
        return int(value)
    try:
        number = float(value)
    except ValueError:
        return value
    return number  # 'nan'/'inf' stay floats: validation then names the cell


def _timestamp_cell(text: str | None) -> Any:
    if text is None or not text.strip():
        return time.time()
    value = _cell(text)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else text.strip()


def csv_row_to_event(row: dict[str, str | None], kind: str) -> dict[str, Any]:
    """Turn one CSV row (header -> cell text) into an event dict (see
    "CSV columns" above). Validation happens later, on the dict."""
    target = "prediction" if kind == "predictions" else "label"
    event: dict[str, Any] = {}
    features: dict[str, Any] = {}
    probabilities: dict[str, Any] = {}
    for column, text in row.items():
        if column is None:  # more cells than header columns
            raise DriftlineError(f"row has {len(text or [])} cell(s) more than the header")
        text = "" if text is None else text
        if column in ("event_id", "model"):
            event[column] = text.strip() or None
        elif column == "model_version":
            event[column] = _cell(text)
        elif column == "timestamp":
            event[column] = _timestamp_cell(text)
        elif column == target:
            event[column] = _cell(text)
        elif column == "latency_ms":
            value = _cell(text)
            if value is not None:
                event[column] = value
        elif column.startswith("proba_") and len(column) > len("proba_"):
            value = _cell(text)
            if value is not None:
                probabilities[column[len("proba_"):]] = value
        elif kind == "predictions":
            features[column] = _cell(text)
        # labels files: extra columns are ignored (labels carry no features)
    for required in ("event_id", "model", target):
        if event.get(required) is None:
            event.pop(required, None)  # reported by validation as "missing required field"
    event.setdefault("timestamp", time.time())
    if kind == "predictions":
        event["features"] = features
        if probabilities:
            event["probabilities"] = probabilities
    return event


def _detect_format(path: str, first_text: str, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    return "jsonl" if first_text.lstrip()[:1] in ("{", "[") else "csv"


def read_events(stream: TextIO, kind: str, fmt: str) -> Iterator[tuple[int, dict | None, str | None]]:
    """Yield ``(line, event_dict, None)`` or ``(line, None, error)`` per row."""
    if fmt == "jsonl":
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line, parse_constant=_refuse_constant)
            except ValueError as error:
                yield number, None, f"not valid JSON ({error})"
                continue
            for item in obj if isinstance(obj, list) else [obj]:
                if isinstance(item, dict) and "timestamp" not in item:
                    item = {**item, "timestamp": time.time()}
                yield number, item, None
        return
    reader = csv.DictReader(stream)
    if not reader.fieldnames:
        return
    names = set(reader.fieldnames)
    target = "prediction" if kind == "predictions" else "label"
    missing = [c for c in ("event_id", "model", target) if c not in names]
    if missing:
        raise UserCliError(f"CSV header lacks column(s) {', '.join(missing)} (has: {', '.join(reader.fieldnames)})")
    for row in reader:
        line = reader.line_num
        try:
            yield line, csv_row_to_event(row, kind), None
        except DriftlineError as error:
            yield line, None, str(error)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number")


# -- publish ------------------------------------------------------------------------------


def _settings():
    from .config import load_settings

    return load_settings()


def _open_publisher(settings):
    from kafka.errors import KafkaError

    from .sdk import Publisher

    try:
        return Publisher(settings)
    except KafkaError as error:
        raise unreachable(settings, error) from None


def _cmd_publish(args: argparse.Namespace) -> int:
    from . import events

    record_type = events.Prediction if args.kind == "predictions" else events.Label
    settings = _settings()
    quiet_kafka_logs()
    require_topics(settings, [getattr(settings.topics, args.kind)])
    if args.file == "-":
        stream: TextIO = sys.stdin
        if sys.stdin.seekable():  # redirected from a file: sniff, then rewind
            first = sys.stdin.read(64)
            sys.stdin.seek(0)
        else:  # a pipe cannot rewind: the format is sniffed from what was read
            data = sys.stdin.read()
            stream, first = io.StringIO(data), data[:64]
    else:
        path = Path(args.file)
        if not path.is_file():
            raise UserCliError(f"{args.file!r} is not a readable file")
        stream = open(path, encoding="utf-8", newline="")
        first = stream.read(64)
        stream.seek(0)
    fmt = _detect_format(args.file, first, args.format)
    errors: list[RowError] = []
    rows = valid = messages = 0
    started = time.monotonic()
    publisher = _open_publisher(settings)
    try:
        send = publisher.publish_predictions if args.kind == "predictions" else publisher.publish_labels
        chunk: list = []
        for line, obj, problem in read_events(stream, args.kind, fmt):
            rows += 1
            if problem is None:
                try:
                    chunk.append(record_type.from_dict(obj))
                except events.ValidationError as error:
                    problem = str(error)
            if problem is not None:
                errors.append(RowError(line, problem))
                _report_row_error(args, errors[-1])
                continue
            if len(chunk) >= _CHUNK:
                messages += send(chunk, bulk=not args.no_bulk)
                valid += len(chunk)
                chunk = []
        if chunk:
            messages += send(chunk, bulk=not args.no_bulk)
            valid += len(chunk)
        publisher.flush()
    finally:
        publisher.close()
        if stream is not sys.stdin:
            stream.close()
    topic = getattr(settings.topics, args.kind)
    elapsed = time.monotonic() - started
    if args.json:
        print_json_line({"type": "summary", "topic": topic, "rows": rows, "sent": valid, "refused": len(errors),
                     "messages": messages, "seconds": round(elapsed, 3)})
    else:
        print(f"sent {valid} {args.kind} in {messages} message(s) to {topic} in {elapsed:.2f}s"
              + (f"; refused {len(errors)} of {rows} row(s) (see above)" if errors else ""))
    return 1 if errors else 0


def _report_row_error(args: argparse.Namespace, error: RowError) -> None:
    name = args.file if args.file != "-" else "<stdin>"
    if args.json:
        print(json.dumps({"type": "refused", "file": name, **error.to_dict()}), file=sys.stderr, flush=True)
    else:
        print(f"{name}:{error.line}: refused: {error.message}", file=sys.stderr, flush=True)


# -- following topics -----------------------------------------------------------------------


def follow_records(settings, topic: str, record_type, *, follow: bool, from_beginning: bool,
                   quiet_s: float = 2.0, on_ready=None) -> Iterator[Any]:
    """Decoded records of ``topic`` without a consumer group.

    Without ``follow``: everything from the beginning until ``quiet_s``
    seconds pass without a message (end offsets are not trusted: DESIGN.md).
    With ``follow``: from the end (or the beginning) until interrupted.
    Messages that break the contract are reported on stderr and skipped.
    """
    from . import events

    consumer = follow_topics(settings, [topic], "driftline-cli", from_end=follow and not from_beginning)
    try:
        if on_ready is not None:
            on_ready()
        last_news = time.monotonic()
        while True:
            batch = consumer.poll(timeout_ms=250)
            got = sorted((m for records in batch.values() for m in records), key=lambda m: (m.timestamp, m.offset))
            if got:
                last_news = time.monotonic()
            for message in got:
                decoded = events.decode_batch(record_type, message.value)
                for error in decoded.errors:
                    print(f"driftline: skipped a bad message on {topic} partition {message.partition} "
                          f"offset {message.offset}: {error}", file=sys.stderr, flush=True)
                yield from decoded.records
            if not follow and time.monotonic() - last_news > quiet_s:
                return
    finally:
        consumer.close()


def local_time(ts: float) -> str:
    """``ts`` (epoch seconds) as local ``YYYY-MM-DD HH:MM:SS``."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def format_alert(alert) -> str:
    """One readable line for an alert."""
    threshold = f" threshold={_num(alert.threshold)}" if alert.threshold is not None else ""
    return (f"{local_time(alert.timestamp)}  {alert.model} v{alert.model_version}  {alert.kind:<14} "
            f"{alert.subject}  [{alert.detector}] value={_num(alert.value)}{threshold}  {alert.message}")


_SHOWN_METRICS = ("accuracy", "f1", "roc_auc", "log_loss", "mae", "rmse", "r2")


def format_snapshot(snapshot) -> str:
    """One readable line for a metrics snapshot."""
    parts = []
    for name in _SHOWN_METRICS:
        if name in snapshot.cumulative or name in snapshot.rolling:
            parts.append(f"{name}={_num(snapshot.cumulative.get(name))}"
                         f"/{_num(snapshot.rolling.get(name))}")
    stats = snapshot.stats or {}
    for key, label in (("joined", "joined"), ("predictions", "preds"), ("label_coverage", "coverage"),
                       ("latency_p95_ms", "p95ms")):
        if key in stats:
            parts.append(f"{label}={_num(stats[key])}")
    parts += _estimation_parts(stats)
    return f"{local_time(snapshot.timestamp)}  {snapshot.model} v{snapshot.model_version}  " + "  ".join(parts)


def _estimation_parts(stats: dict) -> list[str]:
    """Estimated metrics (before labels) with their interval, and the last
    estimated-minus-realized gap: ``est:accuracy=0.81±0.034 gap=+0.012``."""
    estimated = stats.get("estimated")
    if not isinstance(estimated, dict):
        return []
    parts = []
    for name in ("accuracy", "f1", "roc_auc", "mae", "rmse"):
        value, ci = estimated.get(name), estimated.get(f"{name}_ci")
        if value is not None:
            spread = f"±{_num((ci[1] - ci[0]) / 2)}" if ci else ""
            parts.append(f"est:{name}={_num(value)}{spread}")
    gap = (stats.get("estimation_gap") or {}).get("last")
    if gap is not None:
        parts.append(f"gap={gap:+.3f}")
    return parts


def _follow_command(args: argparse.Namespace, topic_name: str, record_type, formatter) -> int:
    from .events import validate_name

    if args.model is not None:
        validate_name(args.model, "--model")
    if args.count is not None and args.count < 1:
        raise UserCliError(f"--count must be at least 1 (got {args.count})")
    settings = _settings()
    quiet_kafka_logs()
    topic = getattr(settings.topics, topic_name)

    def ready() -> None:
        if args.follow:
            what = "everything" if args.from_beginning else "new records"
            print(f"following {topic} ({what}; Ctrl-C to stop)", file=sys.stderr, flush=True)

    if not args.json and topic_name == "metrics":
        print("# metric=cumulative/rolling; est:metric=estimated before labels±95% interval; "
              "gap=estimated-realized", file=sys.stderr, flush=True)
    shown = 0
    for record in follow_records(settings, topic, record_type, follow=args.follow,
                                 from_beginning=args.from_beginning, quiet_s=args.quiet_s, on_ready=ready):
        if args.model is not None and record.model != args.model:
            continue
        if args.json:
            print_json_line(record.to_dict())
        else:
            print(formatter(record), flush=True)
        shown += 1
        if args.count is not None and shown >= args.count:
            break
    return 0


def _cmd_alerts(args: argparse.Namespace) -> int:
    from .events import Alert

    return _follow_command(args, "alerts", Alert, format_alert)


def _cmd_metrics(args: argparse.Namespace) -> int:
    from .events import MetricsSnapshot

    return _follow_command(args, "metrics", MetricsSnapshot, format_snapshot)


def print_json_line(obj: dict[str, Any]) -> None:
    """``obj`` as one line of JSON (the ``--json`` output of every user command)."""
    print(json.dumps(obj, separators=(",", ":"), default=str), flush=True)
