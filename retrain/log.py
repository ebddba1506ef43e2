"""Structured ``key=value`` log lines for the worker.

One line per event, machine-greppable, no secrets: values are quoted only
when they hold spaces or quotes.

Examples
--------
>>> format_fields("run_ended", model="churn", outcome="promoted", scores={"a": 1})
'event=run_ended model=churn outcome=promoted scores={"a": 1}'
"""

from __future__ import annotations

import json
import logging
from typing import Any

from driftline import logs

__all__ = ["format_fields", "log_event"]


def _value(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        text = json.dumps(value, sort_keys=True, default=str)
    elif isinstance(value, float):
        text = f"{value:.6g}"
    else:
        text = str(value)
    if not text or any(c in text for c in ' "=\n') and not text.startswith(("{", "[")):
        text = json.dumps(text)
    return text


def format_fields(event: str, **fields: Any) -> str:
    """``event=<event> k=v ...`` with ``None`` values left out."""
    parts = [f"event={event}"]
    parts.extend(f"{key}={_value(value)}" for key, value in fields.items() if value is not None)
    return " ".join(parts)


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured line (:func:`driftline.logs.log_event`: logfmt or
    JSON as configured)."""
    logs.log_event(logger, event, level, **fields)
