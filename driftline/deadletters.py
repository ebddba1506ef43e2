"""Dead letters a person can read, and put back once the cause is fixed.

``driftline dead-letters [--follow] [--since WHEN] [--reason TEXT] [--topic NAME] [--id ID] [--offset N] [--json]``
    Prints each dead letter: when, the source topic, partition and offset,
    the index inside a bulk message, the reason class and reason, and the
    original message (as text when it is UTF-8; base64 otherwise). For an
    element of a bulk message the element alone is shown too.

``driftline dead-letters --replay (FILTERS | --all)``
    Re-publishes the selected dead letters to their source topic and
    partition, after you fixed the cause (registered the model, corrected
    the policy, …): the original bytes, or for an element of a bulk message
    that element alone, keyed by its ``event_id``. Each replayed message
    carries a ``driftline-replay-of: <error id>`` header. A dead letter that
    was truncated (larger than the dead-letter limit) or whose source is not
    an input topic (predictions, labels, labeled, retrain-requests) is
    skipped with the reason. A replay that still breaks the contract, or an
    ``event_id`` that was already joined, is dead-lettered again.

Examples
--------
>>> from driftline.events import DeadLetter, ValidationError
>>> letter = DeadLetter.for_payload(b'[{"event_id": "a"}, {"event_id": "b"}]',
...                                 ValidationError("model", None, "missing required field", 1),
...                                 source_topic="driftline.predictions", component="monitor", partition=2, offset=7)
>>> reason_class(letter), letter.index
('invalid_field', 1)
>>> replay_payload(letter)
(b'{"event_id":"b"}', b'b')
>>> parse_since("90m", now=10_000.0), parse_since("1970-01-01T01:00:00Z", now=0.0)
(4600.0, 3600.0)
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
import time
from datetime import datetime, timezone
from typing import Any, Iterable

import orjson

from .errors import DriftlineError
from .events import DeadLetter

__all__ = ["register", "reason_class", "replay_payload", "parse_since", "format_dead_letter", "REASON_CLASSES"]

#: What :func:`reason_class` answers, most specific first.
REASON_CLASSES = ("processing_error", "duplicate", "late_label", "unmatched_label", "model_mismatch",
                  "unreadable", "invalid_field")

_REPLAYABLE = ("predictions", "labels", "labeled", "retrain_requests")
_SHOWN_BYTES = 2000  # of the original, per dead letter, in the readable output
_REPLAY_HEADER = "driftline-replay-of"


class DeadLetterError(DriftlineError):
    """The command's arguments do not make sense together."""


def reason_class(letter: DeadLetter) -> str:
    """A short, stable name for why ``letter`` was written (one of
    :data:`REASON_CLASSES`), for logs, filters and counts."""
    reason, field = letter.reason, letter.field
    if field == "<message>" or "could not be processed" in reason:
        return "processing_error"
    if "duplicate prediction" in reason or "duplicate label" in reason:
        return "duplicate"
    if "late label" in reason:
        return "late_label"
    if "no prediction with event_id" in reason:
        return "unmatched_label"
    if field == "model" and "names model" in reason:
        return "model_mismatch"
    if field in (None, "<payload>", "<event>"):
        return "unreadable"
    return "invalid_field"


def _element(letter: DeadLetter) -> tuple[Any, bool]:
    """``(element, found)``: the bulk element the letter is about, when its
    original is a JSON array and it has an index."""
    if letter.index is None:
        return None, False
    try:
        obj = orjson.loads(letter.original_bytes())
    except orjson.JSONDecodeError:
        return None, False
    if type(obj) is list and 0 <= letter.index < len(obj):
        return obj[letter.index], True
    return None, False


def replay_payload(letter: DeadLetter) -> tuple[bytes, bytes | None]:
    """``(value, key)`` to re-publish: the element alone for a bulk element,
    the original bytes otherwise; the key is the event's ``event_id`` (the
    join needs a prediction and its label on one partition)."""
    element, found = _element(letter)
    if found:
        value = orjson.dumps(element)
        obj = element
    else:
        value = letter.original_bytes()
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError:
            obj = None
        if type(obj) is list and obj:
            obj = obj[0]  # a bulk message is keyed by its first event
    event_id = obj.get("event_id") if type(obj) is dict else None
    key = event_id.encode("utf-8") if isinstance(event_id, str) else None
    return value, key


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")


def parse_since(text: str, now: float | None = None) -> float:
    """Epoch seconds for ``--since``: a duration back from now (``30s``,
    ``10m``, ``2h``, ``1d``), an ISO-8601 time (naive = UTC) or epoch
    seconds."""
    now = time.time() if now is None else now
    text = text.strip()
    match = _DURATION.match(text)
    if match:
        return now - float(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise DeadLetterError(f"--since {text!r}: expected a duration (30s, 10m, 2h, 1d), an ISO-8601 time "
                              "or epoch seconds") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def _text(data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(data[:_SHOWN_BYTES]).decode("ascii")
    if len(text) > _SHOWN_BYTES:
        return text[:_SHOWN_BYTES] + f"… ({len(data)} bytes)"
    return text


def format_dead_letter(letter: DeadLetter) -> str:
    """A readable block for one dead letter: a heading line, then the
    original (and the bulk element) indented."""
    when = datetime.fromtimestamp(letter.timestamp, tz=timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    where = f"{letter.source_topic} partition {letter.partition} offset {letter.offset}"
    if letter.index is not None:
        where += f" index {letter.index}"
    lines = [f"{when}  {where}  {reason_class(letter)}  {letter.reason}  (id {letter.error_id}, "
             f"{letter.component})"]
    original = letter.original_bytes()
    size = letter.original_size if letter.original_size is not None else len(original)
    truncated = " (truncated)" if size > len(original) else ""
    element, found = _element(letter)
    if found:
        lines.append(f"    element: {_text(orjson.dumps(element))}")
    lines.append(f"    original{truncated}: {_text(original)}")
    return "\n".join(lines)


def _as_json(letter: DeadLetter) -> dict[str, Any]:
    out = letter.to_dict()
    out["reason_class"] = reason_class(letter)
    try:
        out["original_text"] = letter.original_bytes().decode("utf-8")
    except UnicodeDecodeError:
        out["original_text"] = None
    element, found = _element(letter)
    if found:
        out["element"] = element
    return out


def _selected(letters: Iterable[DeadLetter], args: argparse.Namespace, topics: dict[str, str],
              since: float | None) -> Iterable[DeadLetter]:
    wanted_topic = topics.get(args.topic.replace("-", "_"), args.topic) if args.topic else None
    needle = args.reason.lower() if args.reason else None
    for letter in letters:
        if since is not None and letter.timestamp < since:
            continue
        if wanted_topic is not None and letter.source_topic != wanted_topic:
            continue
        if needle is not None and needle not in letter.reason.lower() and needle != reason_class(letter):
            continue
        if args.id and letter.error_id not in args.id:
            continue
        if args.offset and letter.offset not in args.offset:
            continue
        yield letter


def _replay(settings, letters: list[DeadLetter], as_json: bool) -> int:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    replayable = {getattr(settings.topics, name) for name in _REPLAYABLE}
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_list, acks="all", client_id="driftline-replay",
                             **settings.kafka_security())
    sent, skipped = [], 0
    try:
        for letter in letters:
            why = None
            size = letter.original_size if letter.original_size is not None else len(letter.original_bytes())
            if letter.source_topic not in replayable:
                why = f"source topic {letter.source_topic} is not an input topic"
            elif size > len(letter.original_bytes()):
                why = f"the original was truncated ({size} bytes)"
            if why is not None:
                skipped += 1
                _say(as_json, {"replayed": False, "error_id": letter.error_id, "reason": why},
                     f"not replayed {letter.error_id}: {why}")
                continue
            value, key = replay_payload(letter)
            future = producer.send(letter.source_topic, value=value, key=key, partition=letter.partition,
                                   headers=[(_REPLAY_HEADER, letter.error_id.encode("ascii", "replace"))])
            sent.append((letter, future))
        producer.flush(30)
        failed = 0
        for letter, future in sent:
            try:
                metadata = future.get(timeout=30)
            except KafkaError as error:
                failed += 1
                _say(as_json, {"replayed": False, "error_id": letter.error_id, "reason": str(error)},
                     f"not replayed {letter.error_id}: {type(error).__name__}: {error}")
                continue
            _say(as_json, {"replayed": True, "error_id": letter.error_id, "topic": metadata.topic,
                           "partition": metadata.partition, "offset": metadata.offset},
                 f"replayed {letter.error_id} to {metadata.topic} partition {metadata.partition} "
                 f"offset {metadata.offset}")
    finally:
        producer.close(10)
    print(f"{len(sent) - failed} replayed, {skipped + failed} not replayed", file=sys.stderr, flush=True)
    return 1 if skipped or failed else 0


def _say(as_json: bool, obj: dict[str, Any], text: str) -> None:
    print(json.dumps(obj, sort_keys=True) if as_json else text, flush=True)


def _cmd_dead_letters(args: argparse.Namespace) -> int:
    from .config import load_settings
    from .usercli import follow_records

    if args.replay and args.follow:
        raise DeadLetterError("--replay works on what is on the topic now: not with --follow")
    if args.replay and not (args.all or args.since or args.reason or args.topic or args.id or args.offset):
        raise DeadLetterError("--replay needs a selection (--since, --reason, --topic, --id, --offset) "
                              "or --all")
    if args.count is not None and args.count < 1:
        raise DeadLetterError(f"--count must be at least 1 (got {args.count})")
    since = parse_since(args.since) if args.since else None
    settings = load_settings()
    topics = {name: getattr(settings.topics, name) for name in _REPLAYABLE}
    topic = settings.topics.dead_letter

    def ready() -> None:
        if args.follow:
            print(f"following {topic} (Ctrl-C to stop)", file=sys.stderr, flush=True)

    records = follow_records(settings, topic, DeadLetter, follow=args.follow,
                             from_beginning=not args.follow or since is not None, quiet_s=args.quiet_s,
                             on_ready=ready)
    chosen = []
    for letter in _selected(records, args, topics, since):
        chosen.append(letter)
        if not args.replay:
            print(json.dumps(_as_json(letter), sort_keys=True) if args.json else format_dead_letter(letter),
                  flush=True)
        if args.count is not None and len(chosen) >= args.count:
            break
    if args.replay:
        if not chosen:
            print("no dead letter matches: nothing replayed", file=sys.stderr)
            return 1
        return _replay(settings, chosen, args.json)
    return 0


def register(subparsers) -> None:
    """Add ``dead-letters`` to the ``driftline`` command."""
    cmd = subparsers.add_parser("dead-letters", help="print dead letters (why, where, the original); --replay",
                                description=__doc__.split("Examples")[0])
    cmd.formatter_class = argparse.RawDescriptionHelpFormatter
    cmd.add_argument("--follow", "-f", action="store_true", help="keep printing new dead letters until Ctrl-C")
    cmd.add_argument("--since", help="only dead letters written since: 30s, 10m, 2h, 1d, an ISO-8601 time "
                                     "or epoch seconds")
    cmd.add_argument("--reason", help="only dead letters whose reason contains TEXT (case-insensitive) "
                                      f"or whose reason class is TEXT ({', '.join(REASON_CLASSES)})")
    cmd.add_argument("--topic", help="only from this source topic (predictions, labels, … or a full name)")
    cmd.add_argument("--id", action="append", default=[], metavar="ERROR_ID", help="only this dead letter (repeat)")
    cmd.add_argument("--offset", action="append", type=int, default=[], metavar="N",
                     help="only dead letters of this source offset (repeat)")
    cmd.add_argument("--replay", action="store_true",
                     help="re-publish the selected dead letters to their source topic (after fixing the cause)")
    cmd.add_argument("--all", action="store_true", help="with --replay: every dead letter on the topic")
    cmd.add_argument("--count", type=int, default=None, help="exit after printing this many")
    cmd.add_argument("--json", action="store_true", help="one JSON object per line")
    cmd.add_argument("--quiet-s", type=float, default=2.0,
                     help="without --follow: stop after this many seconds without news (default 2)")
    cmd.set_defaults(handler=_cmd_dead_letters)
