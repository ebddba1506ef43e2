"""What the demo saw: a thread following the output topics (alerts,
metrics, retrain requests, model events) without a consumer group."""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .. import events
from ..events import Alert, MetricsSnapshot, ModelEvent, RetrainRequest
from ..kafka import follow_topics
from .stream import DEMO_MODEL

__all__ = ["Happening", "Watcher", "describe_policy_change"]


@dataclass
class Happening:
    t: float  # seconds since the demo started
    kind: str  # drift, alert, request, registered, promoted, rejected, failed, info
    text: str
    data: dict[str, Any] = field(default_factory=dict)


class Watcher(threading.Thread):
    """Follows alerts, metrics, retrain requests and model events (no
    consumer group) and records what arrived, with arrival times."""

    def __init__(self, settings, started: float):
        super().__init__(name="demo-watcher", daemon=True)
        self.settings = settings
        self.started = started
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.news: queue.Queue[Happening] = queue.Queue()
        self.happenings: list[Happening] = []
        self.snapshots: dict[int, Any] = {}
        self.snapshot_history: list[tuple[float, Any]] = []
        self.error: BaseException | None = None
        self.ready = threading.Event()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as error:  # the watcher thread's one error policy: the main thread reports it
            self.error = error
            self.ready.set()

    def _run(self) -> None:
        topics = self.settings.topics
        kinds = {topics.alerts: events.Alert, topics.metrics: events.MetricsSnapshot,
                 topics.retrain_requests: events.RetrainRequest, topics.model_events: events.ModelEvent}
        consumer = follow_topics(self.settings, kinds, "driftline-demo-watcher", required=False)
        try:
            self.ready.set()
            while not self.stop_event.is_set():
                for tp, messages in consumer.poll(timeout_ms=200).items():
                    for message in messages:
                        for record in events.decode_batch(kinds[tp.topic], message.value).records:
                            self._on_record(record)
        finally:
            consumer.close()

    def _add(self, kind: str, text: str, **data: Any) -> None:
        happening = Happening(time.monotonic() - self.started, kind, text, data)
        with self.lock:
            self.happenings.append(happening)
        self.news.put(happening)

    def _on_record(self, record: Any) -> None:
        if isinstance(record, MetricsSnapshot):
            if record.model != DEMO_MODEL:
                return
            with self.lock:
                self.snapshots[record.model_version] = record
                self.snapshot_history.append((time.monotonic() - self.started, record))
        elif isinstance(record, Alert):
            self._add("alert", f"ALERT {record.kind} on {record.subject} (v{record.model_version}, "
                               f"{record.detector}): {record.message}", alert=record.to_dict())
        elif isinstance(record, RetrainRequest):
            self._add("request", f"retrain request ({record.reason}) for {record.model}"
                                 + (f" v{record.model_version}" if record.model_version else ""),
                      request=record.to_dict())
        elif isinstance(record, ModelEvent):
            shown = ", ".join(f"{k}={v:.3f}" for k, v in sorted(record.metrics.items())
                              if v is not None and "rows" not in k)
            if record.event == "policy_changed":
                text = f"policy changed: {record.model}: " + describe_policy_change(record.details)
            else:
                text = f"model {record.event}: {record.model} v{record.version}" + (f" [{shown}]" if shown else "")
            if record.reason:
                text += f" ({record.reason})"
            self._add(record.event, text, event=record.to_dict())

    def first(self, kind: str, after: float = 0.0) -> Happening | None:
        with self.lock:
            return next((h for h in self.happenings if h.kind == kind and h.t >= after), None)


def describe_policy_change(details: dict) -> str:
    """``monitor.window 1000 -> 500, ...`` from a policy_changed event's details.

    >>> describe_policy_change({"changed": {"monitor.window": [1000, 500], "retrain.min_rows": [200, 300]}})
    'monitor.window 1000 -> 500, retrain.min_rows 200 -> 300'
    >>> describe_policy_change({"changed": {}})
    'no setting changed'
    """
    changed = (details or {}).get("changed")
    if changed is None:
        return "new policy (the event does not say what changed)"
    if not changed:
        return "no setting changed"
    return ", ".join(f"{name} {json.dumps(old)} -> {json.dumps(new)}" for name, (old, new) in sorted(changed.items()))
