"""What a report is made of: the model's records from the output topics and
its versions from the registry.

The topics are read without a consumer group (nothing is committed, no
other reader is disturbed), from the beginning or from ``since``. Not up to
the end offsets (the embedded broker's can be too low): a partition is done
when it delivers a message written after the read started (the monitor keeps
publishing), and the read is done when every partition is, or when
``quiet_s`` seconds pass without a message.

Examples
--------
>>> parse_since("2h", now=10_000.0)
2800.0
>>> parse_since("1970-01-01T00:01:00Z")
60.0
>>> parse_since("soon")
Traceback (most recent call last):
...
driftline.report.data.ReportError: --since: 'soon' is not a duration (30m, 2h, 7d) or an ISO-8601 time
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..errors import DriftlineError

__all__ = ["ReportError", "ReportData", "VersionInfo", "parse_since", "read_topics", "read_registry"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: Drift alert kinds marked on the plots.
DRIFT_KINDS = ("data_drift", "concept_drift", "prediction_drift")


class ReportError(DriftlineError):
    """A report could not be made; the message says why."""


def parse_since(text: str, now: float | None = None) -> float:
    """Epoch seconds for ``--since``: a duration back from now (``90s``,
    ``30m``, ``2h``, ``7d``, ``1w``) or an ISO-8601 time (naive = UTC)."""
    match = _DURATION.match(text)
    if match:
        return (time.time() if now is None else now) - float(match.group(1)) * _UNIT_S[match.group(2)]
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ReportError(f"--since: {text!r} is not a duration (30m, 2h, 7d) or an ISO-8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


@dataclass
class VersionInfo:
    """A registry version as the report shows it (``profile`` included)."""

    version: int
    status: str
    created_at: float
    aliases: list[str]
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    request_id: str | None
    reason: str | None
    profile: dict[str, Any] | None


@dataclass
class ReportData:
    """Everything a report shows about one model."""

    model: str
    since: float | None = None
    snapshots: list = field(default_factory=list)  # MetricsSnapshot, oldest first
    alerts: list = field(default_factory=list)  # Alert
    requests: list = field(default_factory=list)  # RetrainRequest
    model_events: list = field(default_factory=list)  # ModelEvent
    versions: list[VersionInfo] = field(default_factory=list)
    skipped: int = 0  # messages that broke the contract
    registry_error: str | None = None
    read_timed_out: bool = False  # the topics were still delivering when the read gave up

    @property
    def drifted_features(self) -> list[str]:
        """Features with a data-drift alert, in the order they first drifted."""
        seen: dict[str, None] = {}
        for alert in self.alerts:
            if alert.kind == "data_drift":
                seen.setdefault(alert.subject, None)
        return list(seen)

    @property
    def champion(self) -> int | None:
        return next((v.version for v in self.versions if "champion" in v.aliases), None)

    def version(self, number: int) -> VersionInfo | None:
        return next((v for v in self.versions if v.version == number), None)

    def latest_snapshot(self, version: int):
        return next((s for s in reversed(self.snapshots) if s.model_version == version), None)


def read_topics(settings, model: str, since: float | None = None, quiet_s: float = 2.0,
                timeout_s: float = 120.0) -> ReportData:
    """The model's metrics snapshots, alerts, retrain requests and model
    events, oldest first (one consumer for all four topics, no group)."""
    from .. import events
    from ..kafka import follow_topics

    topics = settings.topics
    kinds = {topics.metrics: events.MetricsSnapshot, topics.alerts: events.Alert,
             topics.retrain_requests: events.RetrainRequest, topics.model_events: events.ModelEvent}
    data = ReportData(model=model, since=since)
    lists = {events.MetricsSnapshot: data.snapshots, events.Alert: data.alerts,
             events.RetrainRequest: data.requests, events.ModelEvent: data.model_events}
    consumer = follow_topics(settings, kinds, "driftline-report")
    try:
        assigned = list(consumer.assignment())
        if since is not None:
            _seek_to_time(consumer, assigned, since)
        start_ms = int(time.time() * 1000)
        finished: set = set()
        started = last_news = time.monotonic()
        while (len(finished) < len(assigned) and time.monotonic() - last_news < quiet_s
               and time.monotonic() - started < timeout_s):
            batch = consumer.poll(timeout_ms=250)
            for tp, messages in batch.items():
                last_news = time.monotonic()
                for message in messages:
                    if message.timestamp is not None and message.timestamp > start_ms:
                        # written after the read started: this partition is read to the end
                        finished.add(tp)
                        consumer.pause(tp)
                        break
                    decoded = events.decode_batch(kinds[tp.topic], message.value)
                    data.skipped += len(decoded.errors)
                    for record in decoded.records:
                        if record.model == model and (since is None or record.timestamp >= since):
                            lists[type(record)].append(record)
        data.read_timed_out = time.monotonic() - started >= timeout_s
    finally:
        consumer.close()
    for records in lists.values():
        records.sort(key=lambda r: r.timestamp)
    return data


def _seek_to_time(consumer, assigned: list, since: float) -> None:
    """Start each partition at the first message at or after ``since``
    (records are filtered by their own timestamp as well: a broker without
    time indexes just means reading more)."""
    from kafka.errors import KafkaError

    try:
        offsets = consumer.offsets_for_times({tp: int(since * 1000) for tp in assigned})
    except KafkaError:
        return  # read from the beginning
    for tp, found in offsets.items():
        if found is not None:
            consumer.seek(tp, found.offset)


def read_registry(registry, model: str) -> list[VersionInfo]:
    """The model's versions (with profiles), oldest first, from an open
    :class:`driftline.registry.Registry` (the caller opens it: the core does not
    import the services)."""
    versions = []
    for v in sorted(registry.list_versions(model), key=lambda v: v.version):
        versions.append(VersionInfo(version=v.version, status=v.status, created_at=_epoch(v.created_at),
                                    aliases=sorted(v.aliases or []), metrics=dict(v.metrics or {}),
                                    lineage=dict(v.lineage or {}), request_id=v.request_id, reason=v.reason,
                                    profile=v.profile))
    return versions


def _epoch(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)
