"""Log lines a person can read and a program can parse.

:func:`configure` (the ``driftline`` command calls it once, at start-up)
puts one handler on the root logger whose formatter is structlog's
``ProcessorFormatter``: every record — Driftline's, and the client
libraries' through the standard ``logging`` calls they already make — comes
out as one line, in logfmt (default) or JSON (``--log-format json``)::

    ts=2026-12-02T12:00:00.000Z level=warning logger=driftline.monitor event=alert model=churn kind=concept_drift

Plain ``log.info("text %s", x)`` calls keep working: their message is the
``event`` value (quoted when it holds spaces). :func:`log_event` writes a
structured line: ``event`` is a short name and the fields are keys.

The client libraries (kafka-python, aiokafka, faust, mode) log at WARNING
and above unless the level is DEBUG, and their connection-failure noise is
dropped (:class:`driftline.brokerwatch.ClientNoiseFilter`). Every string
value passes :func:`driftline.redact.redact`, so a credential in a field is
masked like one in a message.

Examples
--------
>>> import io, logging
>>> stream = io.StringIO()
>>> configure("INFO", "logfmt", stream=stream, timestamps=False)
>>> log_event(logging.getLogger("driftline.monitor"), "alert", model="churn", message="accuracy 0.7 < 0.8")
>>> stream.getvalue()
'level=info logger=driftline.monitor event=alert model=churn message="accuracy 0.7 < 0.8"\\n'
>>> logging.getLogger("kafka.conn").info("connecting")   # below WARNING: not shown
>>> stream.getvalue().count("\\n")
1
>>> reset()
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import IO, Any

import structlog

from . import redact
from .brokerwatch import install_client_noise_filter

__all__ = ["FORMATS", "CLIENT_LIBRARIES", "configure", "log_event", "reset"]

FORMATS = ("logfmt", "json")

#: Loggers of the client libraries, kept at WARNING unless the level is DEBUG
#: (APScheduler writes a line per job run at INFO).
CLIENT_LIBRARIES = ("kafka", "aiokafka", "faust", "mode", "apscheduler")

_FIELDS = "driftline_fields"  # the LogRecord attributes log_event's fields travel in
_EVENT = "driftline_event"
_handler: logging.Handler | None = None


def _add_fields(_logger: Any, _name: str, event_dict: dict) -> dict:
    """Copy :func:`log_event`'s fields from the stdlib record into the line."""
    record = event_dict.get("_record")
    fields = getattr(record, _FIELDS, None)
    if fields is not None:
        event_dict["event"] = getattr(record, _EVENT)
        event_dict.update(fields)
    return event_dict


_FIRST = ("ts", "level", "logger", "event")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")  # newlines the renderer escapes itself


def _plain_values(for_logfmt: bool):
    """A processor: the usual keys first, credentials masked in every string;
    for logfmt, values as text fit for one line (a list of plain values
    comma-joined, other containers as compact JSON, floats shortened)."""

    def plain(_logger: Any, _name: str, event_dict: dict) -> dict:
        ordered = {key: event_dict.pop(key) for key in _FIRST if key in event_dict}
        ordered.update(event_dict)
        for key, value in ordered.items():
            if isinstance(value, float) and for_logfmt:
                value = float(f"{value:.6g}")  # readable; JSON keeps every digit
            elif isinstance(value, (list, tuple, set)) and for_logfmt and all(
                    isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
                value = ",".join(str(v) for v in (sorted(value) if isinstance(value, set) else value))
            elif isinstance(value, (dict, list, tuple, set)) and for_logfmt:
                value = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
            elif not isinstance(value, (str, int, bool, dict, list, tuple)) and value is not None:
                value = str(value)
            if isinstance(value, str):
                value = redact.redact(value)
                if for_logfmt and _CONTROL.search(value):  # a tab or CR would split or break the line
                    value = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)
            ordered[key] = value
        return ordered

    return plain


_TEXT = structlog.processors.LogfmtRenderer(bool_as_flag=False)


def _formatter(fmt: str, timestamps: bool) -> logging.Formatter:
    if fmt not in FORMATS:
        raise ValueError(f"--log-format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    pre_chain: list = []
    if timestamps:
        pre_chain.append(structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"))
    pre_chain += [structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name, _add_fields]
    renderer = (structlog.processors.JSONRenderer(sort_keys=False) if fmt == "json"
                else structlog.processors.LogfmtRenderer(bool_as_flag=False))
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.StackInfoRenderer(),
            _plain_values(fmt == "logfmt"),
            renderer,
            # the rendered line once more: a credential inside a container value
            lambda _logger, _name, line: redact.redact(line),
        ],
    )


def configure(level: str | int = "INFO", fmt: str = "logfmt", *, stream: IO[str] | None = None,
              timestamps: bool = True) -> None:
    """Send every log record to ``stream`` (default stderr) as one line.

    Parameters
    ----------
    level
        Root level (a name such as ``"INFO"`` or a number).
    fmt
        ``"logfmt"`` or ``"json"``.
    stream
        Where lines go (default ``sys.stderr``).
    timestamps
        Add ``ts`` (ISO 8601, UTC).
    """
    global _handler
    numeric = level if isinstance(level, int) else getattr(logging, str(level).upper(), None)
    if not isinstance(numeric, int):
        raise ValueError(f"--log-level must be DEBUG, INFO, WARNING, ERROR or CRITICAL (got {level!r})")
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_formatter(fmt, timestamps))
    for old in list(root.handlers):
        # one line per record: no plain second handler (basicConfig's); others
        # (a test runner's capture, a file handler) stay
        if type(old) is logging.StreamHandler:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    _handler = handler
    for name in CLIENT_LIBRARIES:
        logging.getLogger(name).setLevel(logging.NOTSET if numeric <= logging.DEBUG else max(numeric, logging.WARNING))
    install_client_noise_filter(numeric)
    # structlog's own loggers (structlog.get_logger()) go through the same handler
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def reset() -> None:
    """Remove the handler :func:`configure` added (for tests and doctests)."""
    global _handler
    if _handler is not None:
        logging.getLogger().removeHandler(_handler)
        _handler = None
    for name in CLIENT_LIBRARIES:
        logging.getLogger(name).setLevel(logging.NOTSET)


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured line: ``event=<event>`` and one key per field
    (``None`` values left out).

    The record's message is the logfmt text of the same line, so handlers
    other than :func:`configure`'s (a library user's own set-up, pytest's
    ``caplog``) show it all too.
    """
    if not logger.isEnabledFor(level):
        return
    present = {k: v for k, v in fields.items() if v is not None and k not in _FIRST}
    text = _TEXT(None, "", _plain_values(True)(None, "", {"event": event, **present}))
    logger.log(level, "%s", text, extra={_FIELDS: present, _EVENT: event})
