"""Reading the daemons' log lines back in tests: a strict logfmt parser.

A line is ``key=value`` pairs separated by single spaces; a value is bare
(no space, ``=`` or ``"``) or double-quoted with ``\\"``, ``\\\\`` and ``\\n``
escapes. Anything else is an error, so a line that does not parse fails the
test that reads it.

>>> parse_logfmt('level=info event=alert message="a \\\\"b\\\\" c" n=3 empty=')
{'level': 'info', 'event': 'alert', 'message': 'a "b" c', 'n': '3', 'empty': ''}
>>> parse_logfmt('event=alert oops')
Traceback (most recent call last):
...
ValueError: not logfmt at column 13: 'event=alert oops'
"""

from __future__ import annotations

import json
import re

_PAIR = re.compile(r'(?P<key>[A-Za-z_][A-Za-z0-9_.\-]*)=(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<bare>[^\s="]*))(?: |$)')
_ESCAPE = re.compile(r"\\(.)")


def parse_logfmt(line: str) -> dict[str, str]:
    """The pairs of one logfmt line (raises ``ValueError`` if it is not one)."""
    line = line.rstrip("\n")
    fields: dict[str, str] = {}
    position = 0
    while position < len(line):
        match = _PAIR.match(line, position)
        if match is None or match.end() == position:
            raise ValueError(f"not logfmt at column {position + 1}: {line!r}")
        if match["key"] in fields:
            raise ValueError(f"key {match['key']!r} twice: {line!r}")
        if match["quoted"] is not None:
            value = _ESCAPE.sub(lambda m: "\n" if m[1] == "n" else m[1], match["quoted"])
        else:
            value = match["bare"]
        fields[match["key"]] = value
        position = match.end()
    if not fields or line.endswith(" "):
        raise ValueError(f"not logfmt: {line!r}")
    return fields


def structured_lines(text: str, fmt: str = "logfmt") -> list[dict]:
    """Every line of a log, parsed (``fmt``: ``logfmt`` or ``json``); a line
    that does not parse raises."""
    parse = json.loads if fmt == "json" else parse_logfmt
    return [parse(line) for line in text.splitlines() if line.strip()]


def events_named(text: str, event: str, fmt: str = "logfmt") -> list[dict]:
    return [fields for fields in structured_lines(text, fmt) if fields.get("event") == event]
