"""Stage 2, the ``models`` agent's work: one model monitor per model this process owns.

:class:`ModelStage` applies the observation messages stage 1 forwards (keyed
by model) to each model's :class:`driftline.streams.model_monitor.ModelMonitor`,
skipping what a checkpoint already holds (:mod:`driftline.streams.checkpoint`),
publishes the alerts and retrain requests they raise and, on the snapshot
timer, the models' ``metrics`` snapshots.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

import msgspec
import numpy as np

from driftline import events, observability
from driftline.errors import DriftlineError
from driftline.events import DeadLetter
from driftline.logs import log_event

from .checkpoint import ModelCheckpoints, Watermarks
from .observations import JoinedColumns, ObservationMessage, PredictionColumns, decode_message
from .join import COMPONENT
from .policies import PolicySource
from .publishing import Publisher, internal_dead_letter
from .supervision import describe_error

__all__ = ["ModelEntry", "ModelStage"]

log = logging.getLogger("driftline.monitor")


class ModelEntry:
    """Stage-2 state of one model owned by this process."""

    __slots__ = ("monitor", "watermarks", "partition", "generation", "chunks", "dirty", "recent", "lows")

    def __init__(self, monitor, watermarks: Watermarks, partition: int, generation: int = 0, chunks: int = 0,
                 recent: dict | None = None):
        self.monitor = monitor
        # event_id -> [source partition, prediction offset, label offset] of
        # pairs applied whose inputs stage 1 might still replay.
        self.recent: dict[str, list[int]] = recent or {}
        self.watermarks = watermarks
        self.partition = partition
        self.generation = generation
        self.chunks = chunks
        self.dirty = False
        # source partition -> stage 1's lowest replayable (prediction, label) offsets
        self.lows: dict[int, tuple[int, int]] = {}


class ModelStage:
    """Stage 2 of one monitor process.

    Parameters
    ----------
    app
        The faust app (its producer sends alerts and retrain requests).
    publisher
        The monitor's sends and counts.
    policies
        The models' policies and profiles.
    table
        The ``models`` table: the models' checkpoints (:attr:`checkpoints`).
    observations_topic
        This stage's input (for dead letters).
    checkpoint_events, checkpoint_interval
        A checkpoint is due after this many observation messages or seconds.
    """

    def __init__(self, app, publisher: Publisher, policies: PolicySource, table, observations_topic: str,
                 checkpoint_events: int, checkpoint_interval: float):
        self.app = app
        self.publisher = publisher
        self.topics = publisher.topics
        self.counts = publisher.counts
        self.policies = policies
        self.observations_topic = observations_topic
        #: the models this process owns
        self.models: dict[str, ModelEntry] = {}
        self.cpu = observability.MONITOR_CPU.labels("models")
        self.checkpoints = ModelCheckpoints(table, self.models, checkpoint_events, checkpoint_interval, self.cpu,
                                            self.counts)

    def entry(self, model: str, partition: int) -> ModelEntry:
        """``model``'s entry: the one in memory, or restored from its
        checkpoint, or a new one."""
        entry = self.models.get(model)
        if entry is not None:
            entry.partition = partition
            return entry
        from .model_monitor import ModelMonitor

        policy = self.policies.policy(model).monitor
        profile_for = self.policies.profile_for(model)
        entry = None
        try:
            found = self.checkpoints.restore(model)
            if found is not None:
                monitor = ModelMonitor.from_state(found.monitor_state, policy, profile_for)
                entry = ModelEntry(monitor, found.watermarks, partition, found.generation, found.chunks,
                                   found.recent)
        except (DriftlineError, ValueError, KeyError, TypeError) as error:  # CheckpointError, StateError, bad JSON
            # an unusable checkpoint must not stop the monitor (nor loop-crash it)
            log.error("checkpoint of model %s cannot be restored (%s: %s); starting the model afresh, "
                      "replayed observations will be counted again", model, type(error).__name__, error)
            entry = None
        if entry is not None:
            restored = {snap.model_version: {k: snap.stats.get(k) for k in ("predictions", "joined", "expired")}
                        for snap in monitor.snapshots(time.time())}
            log_event(log, "checkpoint_restored", logging.WARNING, model=model, generation=entry.generation,
                      watermarks=len(entry.watermarks), restored=restored)
        else:
            entry = ModelEntry(ModelMonitor(model, policy, profile_for), Watermarks(), partition)
        self.models[model] = entry
        return entry

    def forget(self, partitions: set[int]) -> None:
        """Observation partitions revoked: their models go (the next owner
        restores them from their checkpoints), and their Prometheus series."""
        for model in [m for m, e in self.models.items() if e.partition in partitions]:
            del self.models[model]
            observability.MODEL_SERIES.forget(model)
        self.checkpoints.forget(partitions)

    def observe(self, event) -> list[DeadLetter]:
        """Apply one observation message (:mod:`driftline.streams.observations`);
        returns the dead letters for what could not be applied."""
        raw = event.message.value or b""
        where = (self.observations_topic, event.message.partition, event.message.offset)
        try:
            message = decode_message(raw)
            model = events.validate_name(message.model)
        except (msgspec.DecodeError, msgspec.ValidationError, events.ValidationError) as error:
            # internal topic: only we write it, but never crash and never drop it silently
            log.error("unreadable observation message at %s/%s: %s", event.message.tp, event.message.offset,
                      describe_error(error))
            return [internal_dead_letter(raw, error, *where)]
        entry = self.entry(model, event.message.partition)
        # A redelivered observation message (applied and checkpointed, but
        # killed before its offset was committed) is skipped whole: the
        # re-join guards below are pruned at checkpoints, so they cannot be
        # what recognises it.
        if not entry.watermarks.admit("o", "#", event.message.partition, event.message.offset, 0):
            self.counts["replayed_skipped"] += 1
            observability.EVENTS_PROCESSED.labels(COMPONENT, "replay_skipped").inc()
            return []
        try:
            predictions, joined, expired, skipped = self._admitted(entry, message)
        except ValueError as error:  # columns of unequal lengths: internal topic, never crash
            log.error("unreadable observation message at %s/%s: %s", event.message.tp, event.message.offset,
                      describe_error(error))
            return [internal_dead_letter(raw, error, *where)]
        letters: list[DeadLetter] = []
        if skipped:
            self.counts["replayed_skipped"] += skipped
            observability.EVENTS_PROCESSED.labels(COMPONENT, "replay_skipped").inc(skipped)
        if not (predictions or joined or expired):
            return letters
        now = time.time()
        monitor = entry.monitor
        outputs = []
        try:
            if predictions:
                outputs.append(monitor.observe_predictions(predictions, now))
            if joined:
                outputs.append(monitor.observe_joined(joined, now))
            for version, count in expired.items():
                monitor.observe_expired(version, count, now)
        except Exception as error:  # the per-message error policy: a bug in the analytics dead-letters this message
            log.error("model %s: analytics failed on %d predictions / %d joined pairs at %s/%s (%s); "
                      "the message goes to dead-letter", model, len(predictions or ()), len(joined or ()),
                      event.message.tp, event.message.offset, describe_error(error))
            log.debug("analytics failure", exc_info=error)
            observability.EVENTS_PROCESSED.labels(COMPONENT, "analytics_error").inc()
            letters.append(internal_dead_letter(raw, error, *where))
        entry.dirty = True
        # what stage 2 applied (stage 1's counters include its own replays)
        for kind, value in (("applied_prediction", len(predictions or ())), ("applied_joined", len(joined or ())),
                            ("applied_expired", sum(expired.values()))):
            if value:
                self.counts[kind] += value
                observability.EVENTS_PROCESSED.labels(COMPONENT, kind).inc(value)
        for output in outputs:
            self._publish_monitor_output(model, output)
        return letters

    def _admitted(self, entry: ModelEntry, message: ObservationMessage,
                  ) -> tuple[PredictionColumns | None, JoinedColumns | None, dict[int, int], int]:
        """What of ``message`` stage 2 has not applied yet: predictions and
        expiries above their watermarks, pairs not joined before; and how
        many were skipped as replays."""
        topic, source, admit = message.topic, message.part, entry.watermarks.admit_block
        # re-join guards below these offsets are dropped at the next checkpoint
        entry.lows[source] = tuple(message.low) or (0, 0)
        skipped = 0
        predictions = joined = None
        expired: dict[int, int] = defaultdict(int)
        if message.predictions is not None:
            wire = message.predictions
            columns = wire.columns()
            keep = admit("p", topic, source, *message.coordinates(wire))
            skipped += len(columns) - keep.size
            predictions = columns if keep.size == len(columns) else columns.take(keep)
        if message.joined is not None:
            # a pair is joined once per event_id; a replay may complete it from the other side
            columns = message.joined.columns()
            recent = entry.recent
            keep = []
            prediction_offsets, label_offsets = (guard.tolist() for guard in message.rejoin_guards())
            for i, (event_id, pc, lc) in enumerate(zip(columns.event_ids, prediction_offsets, label_offsets)):
                if event_id in recent:
                    continue
                recent[event_id] = [source, pc, lc]
                keep.append(i)
            skipped += len(columns) - len(keep)
            joined = columns if len(keep) == len(columns) else columns.take(np.array(keep, dtype=np.intp))
        if message.expired is not None:
            wire = message.expired
            keep = admit("x", topic, source, *message.coordinates(wire))
            skipped += len(wire.versions) - keep.size
            for i in keep.tolist():
                expired[int(wire.versions[i])] += 1
        return predictions, joined, expired, skipped

    def _publish_monitor_output(self, model: str, output) -> list:
        """Send alerts and retrain requests; returns the send tasks."""
        tasks: list = []
        if output is None:
            return tasks
        producer = self.app.producer
        for alert in output.alerts:
            log_event(log, "alert", logging.WARNING, model=model, version=alert.model_version, kind=alert.kind,
                      subject=alert.subject, detector=alert.detector, value=alert.value, threshold=alert.threshold,
                      alert_id=alert.alert_id, message=alert.message)
            # Not awaited here: the commit flushes the producer before it
            # commits, and nothing is acknowledged before its checkpoint.
            tasks.append(asyncio.ensure_future(producer.send(self.topics.alerts, model.encode(),
                                                             events.encode(alert), None, None, None)))
            observability.ALERTS.labels(model, alert.kind).inc()
            self.counts["alerts"] += 1
        for request in output.retrain_requests:
            log_event(log, "retrain_request", model=model, version=request.model_version, reason=request.reason,
                      request_id=request.request_id, alert_ids=request.alert_ids, message=request.message)
            tasks.append(asyncio.ensure_future(producer.send(self.topics.retrain_requests, model.encode(),
                                                             events.encode(request), None, None, None)))
            observability.EVENTS_PROCESSED.labels(COMPONENT, "retrain_request").inc()
            self.counts["retrain_requests"] += 1
        return tasks

    async def _flush_model(self, model: str, entry: ModelEntry, now: float) -> None:
        """Process a model's buffered events and publish what they raise
        (ModelMonitor defers alerts found while taking snapshots until the
        next observe_*/flush call: without this they would wait for the
        next event)."""
        output = entry.monitor.flush(now)
        if output.alerts or output.retrain_requests:
            entry.dirty = True  # cooldowns changed
            sent = await asyncio.gather(*self._publish_monitor_output(model, output))
            await asyncio.gather(*sent)  # delivered

    async def flush_all(self) -> None:
        """Every model's buffered events processed and what they raise delivered."""
        now = time.time()
        for model, entry in list(self.models.items()):
            try:
                await self._flush_model(model, entry, now)
            except Exception as error:  # the per-model error policy: one model's analytics bug spares the rest
                log.exception("flushing %s failed: %s", model, error)

    async def send_snapshots(self) -> list:
        """Every model's metric snapshots sent to ``metrics``; returns the delivery futures."""
        now = time.time()
        futures = []
        for model, entry in list(self.models.items()):
            try:
                await self._flush_model(model, entry, now)
                snapshots = entry.monitor.snapshots(now)
            except Exception as error:  # the per-model error policy: one model's analytics bug spares the rest
                log.exception("snapshot of %s failed: %s", model, error)
                continue
            for snapshot in snapshots:
                futures.append(await self.publisher.send(self.topics.metrics, model.encode(),
                                                         events.encode(snapshot)))
            observability.MODEL_SERIES.update(model, snapshots)  # /metrics shows what the topic got
        return futures
