"""Keep credentials out of logs and printed output.

Two layers. Credentials handed to client libraries (kafka-python, aiokafka,
faust) are :class:`Secret` strings, whose ``repr`` is ``'***'``: those
libraries log their configuration as a dict (``%s`` of a dict shows each
value's ``repr``), so the password never reaches a log record. And every log
record, from any logger at any level, passes through :func:`redact` once
:func:`install` has run (the ``driftline`` command does it at start-up):
the configured secrets are masked wherever they appear, and so are
``password=...`` / ``'sasl_plain_password': ...`` values and the password of
any ``scheme://user:password@`` URL.

Examples
--------
>>> redact("postgresql://root:hunter2@db:5432/registry")
'postgresql://root:***@db:5432/registry'
>>> redact("{'sasl_plain_password': 'hunter2', 'client_id': 'x'}")
"{'sasl_plain_password': '***', 'client_id': 'x'}"
>>> location("postgresql://root:hunter2@db/reg?sslmode=require&password=hunter2")
'postgresql://root@db/reg?sslmode=require&password=***'
>>> location("./.driftline/registry")
'./.driftline/registry'
>>> repr(Secret("hunter2")), str(Secret("hunter2"))
("'***'", 'hunter2')
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from typing import Iterable
from urllib.parse import unquote

__all__ = ["MASK", "Secret", "add_secrets", "install", "location", "redact", "url_secrets"]

MASK = "***"

# scheme://user:password@  ->  scheme://user:***@
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"]*):(?P<secret>[^@/\s'\"]*)@")
# password=..., sasl_plain_password: '...', "password": "..."  (keys that end in password)
_KEYED = re.compile(
    r"(?P<head>[A-Za-z_]*password['\"]?\s*[:=]\s*)"
    r"(?:'(?P<single>[^']*)'|\"(?P<double>[^\"]*)\"|(?P<bare>[^\s&,;'\")}]*))",
    re.IGNORECASE,
)


def _mask_keyed(match: re.Match) -> str:
    if match["single"] is not None:
        return f"{match['head']}'{MASK}'"
    if match["double"] is not None:
        return f'{match["head"]}"{MASK}"'
    return match["head"] + (MASK if match["bare"] else "")

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()


class Secret(str):
    """A string that shows ``'***'`` as its ``repr`` (its value is intact:
    ``str()``, joining and encoding give the real text, so client libraries
    authenticate with it as usual)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(MASK)


def add_secrets(values: Iterable[str | None]) -> None:
    """Mask these exact values (e.g. the SASL password) in every log record."""
    global _secrets
    new = set()
    for value in values:
        if value:
            text = str(value)
            # Also as it shows inside a logged bytes repr (a SASL request's
            # auth bytes at DEBUG), where non-ASCII is escaped.
            new.update({text, repr(text.encode("utf-8"))[2:-1]})
    with _lock:
        # Longest first, so a secret containing another is masked whole.
        _secrets = tuple(sorted(set(_secrets) | new, key=len, reverse=True))


def redact(text: str) -> str:
    """``text`` with credentials masked (see the module docstring)."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    if "@" in text:
        text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    if "assword" in text or "ASSWORD" in text:
        text = _KEYED.sub(_mask_keyed, text)
    return text


def location(registry: str) -> str:
    """A registry location (directory or database URL) fit to print: a URL
    loses its password (the user name stays), in the user-info part and in a
    ``password=`` query parameter."""
    if "://" not in registry:
        return registry
    scheme, rest = registry.split("://", 1)
    userinfo, at, host = rest.rpartition("@")
    if at:
        rest = userinfo.split(":", 1)[0] + "@" + host
    return _KEYED.sub(_mask_keyed, f"{scheme}://{rest}")


def url_secrets(url: str) -> list[str]:
    """The password of a ``scheme://user:password@host`` URL, as written and
    percent-decoded (both could appear in a message)."""
    if "://" not in url:
        return []
    userinfo, at, _ = url.split("://", 1)[1].rpartition("@")
    found = []
    if at and ":" in userinfo:
        found.append(userinfo.split(":", 1)[1])
    found += [m["single"] or m["double"] or m["bare"] for m in _KEYED.finditer(url)]
    return [v for s in found if s for v in {s, unquote(s)}]


_previous_factory = None


def _record_factory(*args, **kwargs) -> logging.LogRecord:
    record = _previous_factory(*args, **kwargs)  # type: ignore[misc]
    try:
        message = record.getMessage()
    except Exception:
        # logging's own rule: a log call never raises (a malformed call, an argument whose
        # str() fails); logging reports it when the record is emitted, as usual
        return record
    cleaned = redact(message)
    if cleaned != message:
        record.msg, record.args = cleaned, None
    if record.exc_info and record.exc_info[1] is not None:
        # Formatters reuse exc_text when it is set: cache the masked text.
        text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        record.exc_text = redact(text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


def install(secrets: Iterable[str | None] = ()) -> None:
    """Mask credentials in every log record from now on (idempotent).

    A log record factory rather than a filter: handler filters miss handlers
    added later (faust sets up its own), logger filters miss child loggers.
    """
    global _previous_factory
    add_secrets(secrets)
    with _lock:
        if _previous_factory is None:
            _previous_factory = logging.getLogRecordFactory()
            logging.setLogRecordFactory(_record_factory)
