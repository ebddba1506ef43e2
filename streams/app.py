"""The monitor's faust-streaming application (see :mod:`streams` for the design).

:func:`create_monitor` builds a :class:`MonitorApp` — a faust app with

* ``join`` (stage 1): an agent on ``predictions`` + ``labels`` that decodes,
  dead-letters bad records, joins by ``event_id`` (:class:`driftline.streams.join.Joiner`
  over a changelog-backed table whose store is RocksDB or memory,
  :mod:`driftline.streams.join_store`), publishes joined pairs to ``labeled`` and
  forwards observations to ``<app id>-observations`` keyed by model;
* ``models`` (stage 2): an agent on the observations that drives one
  :class:`driftline.streams.model_monitor.ModelMonitor` per model, publishes alerts and
  retrain requests, and checkpoints state + watermarks to a second table
  before acknowledging (:mod:`driftline.streams.checkpoint`);
* timers for label expiry, checkpoints, metric snapshots and policy
  refreshes, and a task that follows ``model-events`` (every process sees
  every event: no group);
* a task that watches for a broker that lost its data (:mod:`driftline.streams.reset`).

Every agent, timer and task runs under one error policy
(:mod:`driftline.streams.supervision`): one message's failure dead-letters that
message; anything else ends the process with one line and exit code 70.

:meth:`MonitorApp.run` runs it as a faust worker until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging

import orjson
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from driftline import events, observability
from driftline.brokerwatch import BrokerWatch, install_client_noise_filter
from driftline.deadletters import reason_class
from driftline.logs import log_event
from driftline.config import Settings
from driftline.errors import DriftlineError
from driftline.events import DeadLetter, Label, LabeledRecord, ModelEvent, Prediction
from driftline.policy import Policy

from .checkpoint import Watermarks, chunk_keys, decode_checkpoint, encode_checkpoint
from .join import COMPONENT, Joiner, JoinOutput, index_of
from .join_store import JoinStore, faust_store_class, open_join_store
from .reset import ResetWatch, changelog_topics, reset_state
from .supervision import Supervisor, describe_error

try:  # faust's TopicPartition (a namedtuple), used as key of committed offsets
    from faust.types import TP
except ImportError:  # pragma: no cover
    from collections import namedtuple

    TP = namedtuple("TP", "topic partition")

__all__ = ["MonitorOptions", "MonitorApp", "create_monitor", "PolicySource", "MonitorError"]

log = logging.getLogger("driftline.monitor")

_BULK_BYTES = 512 * 1024


#: The monitor's garbage-collector thresholds. With Python's default (a
#: collection every 700 new containers) collections walked the batch's live
#: records every few events: half of the join's time (a 100,000-pair join
#: in-process, 21.8 vs 11.5 us per pair). 50,000 keeps at most a few MB of
#: young objects waiting.
GC_THRESHOLDS = (50_000, 20, 100)


#: ``--state`` values: where stage 1's join state lives (:mod:`driftline.streams.join_store`)
STATE_STORES = ("rocksdb", "memory")


class MonitorError(DriftlineError):
    """The monitor cannot start (missing topics, bad options)."""


@dataclass
class MonitorOptions:
    """Knobs of one monitor process.

    Parameters
    ----------
    group_id
        Consumer group (and faust app id); processes sharing it share the work.
        Default: ``<topic prefix>monitor``.
    data_dir
        faust's data directory.
    metrics_port
        Prometheus ``/metrics`` port (``0``: off).
    web_port
        faust's own web server port (``None``: off).
    snapshot_interval
        Seconds between metric snapshots per model version.
    checkpoint_events, checkpoint_interval
        Stage 2 checkpoints after this many observation messages or seconds,
        whichever comes first; nothing is acknowledged before its checkpoint.
    batch_size
        Stage 1 reads and joins up to ``batch_size`` input messages at a time
        (what has arrived, without waiting for more).
    expiry_interval
        Seconds between label-TTL sweeps.
    session_timeout, heartbeat_interval
        Consumer-group timing (seconds).
    policy_refresh_interval
        Seconds between re-reads of the models' policies from the registry
        (a missed ``policy_changed`` event heals within this time).
    reset_check_interval
        Seconds between checks for a broker that lost the monitor's data.
    reset_state
        Delete the monitor's state (changelogs, data directory) before
        starting: a deliberate reset.
    series_grace_s
        Seconds a model version that is no longer served (another version of
        the model has seen events since) keeps its Prometheus series after
        its last event (:mod:`driftline.model_series`).
    state
        Where stage 1's join state lives: ``"rocksdb"`` (on disk under
        ``data_dir``, reused after a restart: only the changelog's tail is
        read again) or ``"memory"`` (rebuilt from the whole changelog).
    state_memory_mb
        RocksDB's memory for the join state (block cache and write buffers,
        all partitions together).
    """

    group_id: str | None = None
    data_dir: str = "./.driftline/monitor"
    metrics_port: int = 0
    web_port: int | None = None
    snapshot_interval: float = 10.0
    checkpoint_events: int = 2000
    checkpoint_interval: float = 1.0
    batch_size: int = 1000
    expiry_interval: float = 1.0
    session_timeout: float = 10.0
    heartbeat_interval: float = 1.0
    policy_refresh_interval: float = 60.0
    reset_check_interval: float = 5.0
    reset_state: bool = False
    series_grace_s: float = 600.0
    state: str = "rocksdb"
    state_memory_mb: int = 64

    def check(self) -> None:
        if self.state not in STATE_STORES:
            raise MonitorError(f"--state must be one of {', '.join(STATE_STORES)} (got {self.state!r})")
        if not (isinstance(self.state_memory_mb, int) and self.state_memory_mb >= 8):
            raise MonitorError(f"--state-memory-mb must be an integer >= 8 (got {self.state_memory_mb!r})")
        if self.group_id is not None:
            events.validate_name(self.group_id, "--group-id")
        for name in ("snapshot_interval", "checkpoint_interval", "expiry_interval",
                     "session_timeout", "heartbeat_interval", "policy_refresh_interval", "reset_check_interval"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise MonitorError(f"{name} must be a positive number of seconds (got {value!r})")
        if not (isinstance(self.series_grace_s, (int, float)) and self.series_grace_s >= 0):
            raise MonitorError(f"--series-grace-s must be a number of seconds >= 0 (got {self.series_grace_s!r})")
        for name in ("checkpoint_events", "batch_size"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise MonitorError(f"{name} must be a positive integer (got {value!r})")
        for name in ("metrics_port", "web_port"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 65536:
                raise MonitorError(f"--{name.replace('_', '-')} must be between 0 and 65535 (got {value})")


class PolicySource:
    """Policies and reference profiles from the registry, cached per model.

    Falls back to the default policy (and no profile) when the registry is
    unavailable or does not know the model: monitoring never stops for it.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self._registry = None
        self._policies: dict[str, Policy] = {}
        self._profiles: dict[tuple[str, int], dict | None] = {}
        self._opened = False
        self._unregistered: set[str] = set()  # told once each

    def _open(self):
        if not self._opened:
            self._opened = True
            try:
                from driftline.registry import open_registry

                self._registry = open_registry(self.settings, publish=False)
            except Exception as error:  # registry missing or unreadable: defaults
                log.warning("registry unavailable, using default policies: %s", error)
        return self._registry

    def policy(self, model: str) -> Policy:
        policy = self._policies.get(model)
        if policy is None:
            policy = Policy()
            registry = self._open()
            if registry is not None:
                try:
                    policy = registry.get_policy(model, missing_ok=False)
                except LookupError:  # the registry's NotFoundError: predictions of a model never registered
                    if model not in self._unregistered:
                        self._unregistered.add(model)
                        log.warning("model %s has predictions but no registry entry: monitored with the default "
                                    "policy, drift against its own past ('driftline registry register' or "
                                    "'driftline train' gives it one)", model)
                except Exception as error:  # registry trouble must not stop monitoring: defaults
                    log.warning("no policy for %s (%s): defaults", model, describe_error(error))
            self._policies[model] = policy
        return policy

    def profile_for(self, model: str) -> Callable[[int], dict | None]:
        def lookup(version: int) -> dict | None:
            key = (model, version)
            if key not in self._profiles:
                profile = None
                registry = self._open()
                if registry is not None:
                    try:
                        profile = registry.get_profile(model, version)
                    except Exception as error:
                        log.debug("no profile for %s/%s (%s)", model, version, error)
                self._profiles[key] = profile
            return self._profiles[key]

        return lookup

    def label_ttl(self, model: str) -> float:
        return self.policy(model).monitor.label_ttl_s

    def refresh(self) -> list[str]:
        """Re-read the cached models' policies; returns the models whose
        policy changed (their profiles are read again too)."""
        changed = []
        for model, old in list(self._policies.items()):
            self._policies.pop(model)
            if self.policy(model) != old:
                changed.append(model)
                for key in [k for k in self._profiles if k[0] == model]:
                    del self._profiles[key]
        return changed

    def invalidate(self, model: str) -> None:
        self._policies.pop(model, None)
        for key in [k for k in self._profiles if k[0] == model]:
            del self._profiles[key]

    def close(self) -> None:
        if self._registry is not None:
            try:
                self._registry.close()
            except Exception:  # pragma: no cover - best effort on shutdown
                pass


class _ModelEntry:
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


def _app_class():
    from .batch_input import batch_app_class

    class _App(batch_app_class()):
        """faust's App with the changes the monitor needs.

        * Stage 1 reads its input as record batches (:mod:`driftline.streams.batch_input`).
        * Changelog recovery reads to *verified* end offsets
          (:func:`driftline.streams.offsets.verified_end_offsets`): tansu's ListOffsets
          answer stops short of the last record batch.
        * Stopping checkpoints stage 2 first, while the consumer still runs,
          so its offsets can be committed (and faust need not wait for
          acknowledgements that only a checkpoint gives).
        """

        driftline_monitor: "MonitorApp | None" = None  # (faust's own ``monitor`` is its sensor)

        def _new_consumer(self):
            consumer = super()._new_consumer()
            listed_highwaters = consumer.highwaters
            settings = self.driftline_monitor.settings

            async def highwaters(*partitions):
                from .offsets import verified_end_offsets

                listed = await listed_highwaters(*partitions)
                return await verified_end_offsets(settings.bootstrap_servers, listed, settings.aiokafka_security())

            consumer.highwaters = highwaters
            return consumer

        def _crash(self, reason: BaseException) -> None:
            # Any part of faust that crashes (its consumer, fetcher, tables)
            # marks the app crashed here: the monitor's one error policy
            # decides (restart after a broker reset, else one line and exit)
            # instead of faust's orderly stop, which would commit the input in hand.
            if self.driftline_monitor is not None and not self._crashed.is_set():
                self.driftline_monitor._on_faust_crash(reason)
            super()._crash(reason)

        async def on_stop(self) -> None:
            if self.driftline_monitor is not None:
                try:
                    await self.driftline_monitor._flush_all()
                    await self.driftline_monitor._checkpoint()
                    await self.driftline_monitor._close_join_store()
                except Exception as error:  # pragma: no cover - best effort while stopping
                    log.warning("final checkpoint failed: %s", error)
            await super().on_stop()

    return _App


def _partitioned_table_class():
    import faust

    class PartitionedTable(faust.Table):
        """A table whose changelog partition is chosen by the caller: stage 1
        writes keys of many source partitions from one batch, and timers
        write outside any event."""

        write_partition: int | None = None

        def partition_for_key(self, key: Any) -> int | None:
            if self.write_partition is not None:
                return self.write_partition
            return super().partition_for_key(key)

        def write(self, partition: int, key: str, value: bytes | None) -> None:
            self.write_partition = partition
            try:
                if value is None:
                    if key in self.data:
                        del self[key]
                else:
                    self[key] = value
            finally:
                self.write_partition = None

    return PartitionedTable


def _join_table_class():
    base = _partitioned_table_class()
    store_class = faust_store_class()

    class JoinTable(base):
        """Stage 1's table: its store is the monitor's JoinStore, behind
        faust's Store API (faust recovers the changelog into it)."""

        join_store: JoinStore | None = None

        def _new_store(self):
            # (the URL only names the store in faust's log lines)
            return store_class(f"{self.join_store.kind}://", self.app, self, table_name=self.name,
                               key_type=self.key_type, value_type=self.value_type,
                               key_serializer=self.key_serializer, value_serializer=self.value_serializer,
                               options=self.options, join_store=self.join_store)

    return JoinTable


def _topic_partitions(settings: Settings, names: list[str]) -> dict[str, int]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_list, client_id="driftline-monitor-probe",
                             **settings.kafka_security())
    try:
        found = {}
        for name in names:
            partitions = None
            deadline = time.monotonic() + 10
            while partitions is None and time.monotonic() < deadline:
                partitions = consumer.partitions_for_topic(name)
                if partitions is None:
                    time.sleep(0.2)
            if not partitions:
                raise MonitorError(f"topic {name!r} does not exist: run 'driftline topics create'")
            found[name] = len(partitions)
        return found
    finally:
        consumer.close()


class MonitorApp:
    """One monitor process: both stages, timers and the model-event follower."""

    def __init__(self, settings: Settings, options: MonitorOptions, partitions: int | None = None):

        options.check()
        self.settings = settings
        self.options = options
        topics = settings.topics
        self.topics = topics
        if partitions is None:
            counts = _topic_partitions(settings, [topics.predictions, topics.labels])
            if counts[topics.predictions] != counts[topics.labels]:
                raise MonitorError(
                    f"{topics.predictions} has {counts[topics.predictions]} partitions and {topics.labels} "
                    f"{counts[topics.labels]}: the join needs them co-partitioned (equal counts)")
            partitions = counts[topics.predictions]
        self.partitions = partitions
        self.app_id = options.group_id or f"{settings.topic_prefix}monitor"
        Path(options.data_dir).mkdir(parents=True, exist_ok=True)
        app_options: dict[str, Any] = dict(
            store="memory://",
            topic_partitions=partitions,
            datadir=options.data_dir,
            autodiscover=False,
            web_enabled=options.web_port is not None,
            broker_session_timeout=options.session_timeout,
            broker_heartbeat_interval=options.heartbeat_interval,
            broker_commit_interval=1.0,
            # one read of stage 1 (the fetch also reads stage 2's observations)
            broker_max_poll_records=options.batch_size,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            producer_max_request_size=events.MAX_MESSAGE_BYTES + 65536,
            topic_allow_declare=True,
            table_cleanup_interval=3600.0,
            # No standby replicas: a standby reads the other members' changelogs through faust's
            # per-message route (about 2 join-state records per event), which took 2.8x one process's
            # CPU per event with two processes (bench/monitor.py --only scale); a member taking
            # over a partition recovers it from its changelog (with RocksDB: only the tail it lacks).
            table_standby_replicas=0,
            # stage 2 acknowledges only at checkpoints; stopping checkpoints first
            stream_wait_empty=False,
            # batch the many small changelog/observation sends into fewer requests
            producer_linger=0.005,
            # read-ahead per partition, in messages: a bulk message holds up
            # to 10,000 events, so faust's default (4096) can hold gigabytes;
            # bench/monitor.py: 8 vs 64 -> 532 vs 616 MB after 300k bulk
            # events, no slower for single-event messages
            stream_buffer_maxsize=64,
        )
        if options.web_port is not None:
            app_options.update(web_port=options.web_port, web_bind="127.0.0.1")
        app_options.update(settings.faust_broker_options())
        self.app = app = _app_class()(self.app_id, **app_options)
        app.driftline_monitor = self
        self.policies = PolicySource(settings)
        self.observations_topic = f"{self.app_id}-observations"

        Table = _partitioned_table_class()
        self.join_store = open_join_store(options.state, Path(options.data_dir) / "join-state", index_of,
                                          options.state_memory_mb)
        JoinTable = _join_table_class()
        JoinTable.join_store = self.join_store
        self.join_table = app.tables.add(JoinTable(
            app, name="join", default=None, key_type=str, value_type=bytes, beacon=app.tables.beacon,
            partitions=partitions, help="stage 1: join state per event_id"))
        self.state_table = app.tables.add(Table(
            app, name="models", default=None, key_type=str, value_type=bytes, beacon=app.tables.beacon,
            partitions=partitions, help="stage 2: checkpoints per model"))
        self._join_changelog = self.join_table.changelog_topic.get_topic_name()
        self.joiner = Joiner(self.policies.label_ttl, store=self.join_store,
                             topics={"p": topics.predictions, "l": topics.labels})
        # the task that persists the last state batch once its changelog is delivered
        self._persisting: asyncio.Future | None = None
        self._persist_stopped = False
        self._lock = asyncio.Lock()
        self._analytics_loaded = asyncio.Event()
        self._indexed: set[int] = set()
        self._replayed_told = 0  # changelog records replayed, as of the last join_state_ready line
        self.models: dict[str, _ModelEntry] = {}
        self._pending_acks: list = []
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._model_stream = None
        self.counts: dict[str, int] = defaultdict(int)
        self._join_cpu = observability.MONITOR_CPU.labels("join")
        self._input_messages = observability.EVENTS_PROCESSED.labels(COMPONENT, "input_message")
        self._models_cpu = observability.MONITOR_CPU.labels("models")
        self.supervisor = Supervisor(COMPONENT)
        self._broker_watch: BrokerWatch | None = None
        # Set while the broker is away and until it is known to have kept
        # its data: the timers write nothing meanwhile (a write to a broker
        # that restarted empty is lost, and tansu creates the topic badly).
        self._hold_writes = False
        self._known_committed: dict[tuple[str, int], int] = {}
        self.supervisor.before_fail = self._reset_if_broker_lost
        self.reset_watch = ResetWatch(settings, [topics.predictions, topics.labels, self.observations_topic])
        guard = self.supervisor.guard

        inputs = app.topic(topics.predictions, topics.labels, key_serializer="raw", value_serializer="raw")
        observations = app.topic(self.observations_topic, key_serializer="raw", value_serializer="raw",
                                 partitions=partitions, internal=True)

        @app.batch_agent(inputs)
        @guard("join")
        async def join_records(batches):
            if not self._analytics_loaded.is_set():
                # the imports hold the GIL: a batch joined meanwhile would take twice as long
                await self._analytics_loaded.wait()
            await self._join_batch(batches)

        @app.agent(observations, name="models")
        @guard("models")
        async def model_agent(stream):
            manual = stream.noack()
            self._model_stream = manual
            async for event in manual.events():
                cpu = time.thread_time()
                letters = self._observe(event)
                self._models_cpu.inc(time.thread_time() - cpu)
                if letters:
                    await self._dead_letters(letters)  # delivered before the commit that follows the ack
                self._pending_acks.append(event)
                self._since_checkpoint += 1
                if (self._since_checkpoint >= options.checkpoint_events
                        or time.monotonic() - self._last_checkpoint >= options.checkpoint_interval):
                    await self._checkpoint()

        @app.timer(options.expiry_interval)
        @guard("expiry", options.expiry_interval)
        async def expiry_timer():
            if not self._hold_writes:
                await self._expire()

        @app.timer(options.checkpoint_interval)
        @guard("checkpoint", options.checkpoint_interval)
        async def checkpoint_timer():
            if not self._hold_writes and time.monotonic() - self._last_checkpoint >= options.checkpoint_interval:
                await self._checkpoint()

        @app.timer(options.snapshot_interval)
        @guard("snapshot", options.snapshot_interval)
        async def snapshot_timer():
            if not self._hold_writes:
                await self._publish_snapshots()

        @app.timer(options.policy_refresh_interval)
        @guard("policy_refresh", options.policy_refresh_interval)
        async def policy_refresh_timer():
            if not self._hold_writes:
                await self._refresh_policies()

        @app.task
        @guard("model_events")
        async def follow_model_events():
            await self._follow_model_events()

        @app.task
        async def import_analytics():
            await asyncio.get_running_loop().run_in_executor(None, _import_analytics)
            self._analytics_loaded.set()

        @app.task
        @guard("reset_watch")
        async def reset_watch():
            await self._watch_for_reset()

        @app.on_rebalance_complete.connect
        async def on_rebalance_complete(app, **kwargs):
            if self.supervisor.parts["join"].state == "starting":
                self.supervisor.started("join")  # (a batch handler runs per batch, not as a loop)
            assignment = app.consumer.assignment() if app.consumer else set()
            log.info("monitor ready: stage 1 partitions %s, stage 2 partitions %s",
                     sorted(tp.partition for tp in assignment if tp.topic == topics.predictions),
                     sorted(tp.partition for tp in assignment if tp.topic == self.observations_topic))

        @app.on_partitions_revoked.connect
        async def on_revoked(app, revoked, **kwargs):
            self._on_revoked(revoked)

        @app.on_before_shutdown.connect
        async def on_shutdown(app, **kwargs):
            await self._on_shutdown()

    # -- publishing --------------------------------------------------------------------
    async def _send(self, topic: str, key: bytes | None, value: bytes):
        return await self.app.producer.send(topic, key, value, None, None, None)

    async def _dead_letters(self, letters: list[DeadLetter]) -> list:
        futures = []
        for letter in letters:
            futures.append(await self._send(self.topics.dead_letter, letter.error_id.encode(), events.encode(letter)))
            log_event(log, "dead_letter", logging.WARNING, reason_class=reason_class(letter),
                      topic=letter.source_topic, partition=letter.partition, offset=letter.offset,
                      index=letter.index, field=letter.field, error_id=letter.error_id, reason=letter.reason)
        if letters:
            observability.EVENTS_PROCESSED.labels(COMPONENT, "dead_letter").inc(len(letters))
            observability.count_dead_letters(COMPONENT, letters)
            self.counts["dead_letter"] += len(letters)
        return futures

    async def _publish_join_output(self, out) -> None:
        futures = await self._dead_letters(out.dead_letters)
        # encoded first, then sent: a send may wait for room in the producer's
        # buffer, and the stage's CPU clock must not run while other work does
        cpu = time.thread_time()
        outgoing: list[tuple[str, bytes, bytes]] = []
        # labeled records are built from validated records: encoded once, as they are
        by_model: dict[str, list[dict]] = defaultdict(list)
        for record in out.labeled_dicts:
            by_model[record["model"]].append(record)
        for model, records in by_model.items():
            for chunk in _chunks(records):
                outgoing.append((self.topics.labeled, model.encode(),
                                 _dumps(chunk) if len(chunk) > 1 else _dumps(chunk[0])))
        committed = self.app.consumer._committed_offset if self.app.consumer is not None else {}
        for (model, kind, partition), items in out.observations.items():
            # Lowest offsets stage 1 could still replay in this partition:
            # stage 2 forgets re-join guards below them.
            low = [committed.get(TP(self.topics.predictions, partition)) or 0,
                   committed.get(TP(self.topics.labels, partition)) or 0]
            for start in range(0, len(items), 500):
                payload = _dumps({"model": model, "t": kind, "part": partition, "low": low,
                                  "items": items[start:start + 500]})
                outgoing.append((self.observations_topic, model.encode(), payload))
        self._join_cpu.inc(time.thread_time() - cpu)
        for topic, key, value in outgoing:
            futures.append(await self._send(topic, key, value))
        if futures:
            # Outputs must be on the broker before the state that stands for them.
            await asyncio.gather(*futures)
        for name, value in out.counts.items():
            self.counts[name] += value
            if name != "dead_letter":
                observability.EVENTS_PROCESSED.labels(COMPONENT, name).inc(value)

    # -- stage 1 -----------------------------------------------------------------------
    def _sync_partitions(self) -> None:
        assignment = self.app.consumer.assignment() if self.app.consumer else set()
        owned = {tp.partition for tp in assignment if tp.topic == self.topics.predictions}
        gone = self._indexed - owned
        if gone:
            self.joiner.forget(gone)
        new = owned - self._indexed
        if new:
            self.joiner.rebuild(new)
            replayed = self.join_store.replayed
            log_event(log, "join_state_ready", store=self.options.state, partitions=sorted(new),
                      replayed=replayed - self._replayed_told, entries=self.join_store.count())
            self._replayed_told = replayed
        self._indexed = owned

    async def _join_batch(self, batches: list) -> None:
        """Decode, join and publish one read: ``[(tp, records), ...]`` from
        :mod:`driftline.streams.batch_input` (every partition's records in offset order)."""
        cpu = time.thread_time()
        self._input_messages.inc(sum(len(records) for _tp, records in batches))  # read, not yet handled
        items = []
        dead: list[DeadLetter] = []
        single: set[tuple[str, int, int]] = set()  # messages that are one event, not a bulk array
        predictions = self.topics.predictions
        decode_batch = events.decode_batch
        for tp, records in batches:
            topic, partition = tp.topic, tp.partition
            kind, record_type = ("p", Prediction) if topic == predictions else ("l", Label)
            for message in records:
                offset = message.offset
                payload = message.value if message.value is not None else b""
                if payload[:64].lstrip()[:1] != b"[":  # (a bulk message may be large: no copy of it)
                    single.add((kind, partition, offset))
                try:
                    decoded = decode_batch(record_type, payload)
                except Exception as error:  # error policy: a message that breaks decoding is dead-lettered
                    dead.append(_internal_dead_letter(payload, error, topic, partition, offset))
                    continue
                if decoded.errors:
                    bad = set()
                    for error in decoded.errors:
                        dead.append(DeadLetter.for_payload(payload, error, source_topic=topic, component=COMPONENT,
                                                           partition=partition, offset=offset))
                        if error.index is not None:
                            bad.add(error.index)
                    positions = [i for i in range(len(decoded.records) + len(bad)) if i not in bad]
                else:
                    positions = range(len(decoded.records))
                for index, record in zip(positions, decoded.records):
                    items.append((kind, partition, offset, index, record))
        spent = time.thread_time() - cpu
        async with self._lock:
            cpu = time.thread_time()
            self._sync_partitions()
            self.joiner.single = single
            now = time.time()
            try:
                out = self.joiner.process(items, now)
            except Exception as error:  # error policy: find the records that fail and dead-letter them alone
                log.warning("stage 1: a batch of %d records failed (%s); joining it record by record",
                            len(items), describe_error(error))
                out = self._join_one_by_one(items, now, batches)
            out.dead_letters[:0] = dead
            out.counts["dead_letter"] += len(dead)
            self._join_cpu.inc(spent + time.thread_time() - cpu)
            await self._publish_join_output(out)
            await self._apply(out.writes)

    def _join_one_by_one(self, items: list, now: float, batches: list) -> JoinOutput:
        """Join ``items`` one at a time; a record that fails is dead-lettered
        with the exception as the reason, the others are joined as usual.
        Each record's state change goes to the store at once, so later
        records see it; the changelog gets them all in ``_apply``."""
        payloads = {(tp.topic, tp.partition, record.offset): record.value
                    for tp, records in batches for record in records}
        topic_of = {"p": self.topics.predictions, "l": self.topics.labels}
        out = JoinOutput()
        for item in items:
            kind, partition, offset, index, _record = item
            try:
                one = self.joiner.process([item], now)
            except Exception as error:  # error policy: this record alone is dead-lettered
                payload = payloads.get((topic_of[kind], partition, offset)) or b""
                out.dead_letters.append(_internal_dead_letter(payload, error, topic_of[kind], partition, offset,
                                                              index))
                out.counts["dead_letter"] += 1
                continue
            self.joiner.apply(one.writes)
            out.merge(one)
        return out

    async def _apply(self, writes) -> None:
        """Write join state: the store and the table's changelog.

        Bypasses faust's per-key ``Table.__setitem__`` (a buffered send per
        key, the stage's main cost) with the same changelog records: key
        JSON-encoded as faust's ``json`` key serializer does, value raw bytes,
        ``None`` a tombstone. faust flushes the producer before it commits
        input offsets, so these are durable before the inputs they stand for
        are committed. The store persists the batch (RocksDB: with the
        changelog offsets) only once the changelog has it.
        """
        cpu = time.thread_time()
        seq = self.join_store.apply(writes)
        self._join_cpu.inc(time.thread_time() - cpu)
        producer = self.app.producer._ensure_producer()  # aiokafka's producer
        topic = self._join_changelog
        batches: dict[int, Any] = {}
        sent: list[tuple[int, Any, int]] = []  # (partition, delivery future, records)
        for partition, key, value, *_entries in writes:
            # one record batch per partition instead of a send (and a future) per key
            raw_key = _dumps(key)
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = producer.create_batch()
            if batch.append(key=raw_key, value=value, timestamp=None) is None:
                sent.append((partition, await producer.send_batch(batch, topic, partition=partition),
                             batch.record_count()))
                batch = batches[partition] = producer.create_batch()
                if batch.append(key=raw_key, value=value, timestamp=None) is None:  # pragma: no cover
                    raise MonitorError(f"join state of {key!r} is larger than a producer batch")
        for partition, batch in batches.items():
            if batch.record_count():
                sent.append((partition, await producer.send_batch(batch, topic, partition=partition),
                             batch.record_count()))
        # not awaited: faust flushes the producer (all its batches) before it commits input offsets
        self._persisting = asyncio.ensure_future(self._persist(self._persisting, seq, sent))
        self._persisting.add_done_callback(self._persisted)

    def _persisted(self, task: asyncio.Future) -> None:
        if not task.cancelled() and task.exception() is not None and not self._persist_stopped:
            self._persist_stopped = True
            self.supervisor.fail("join", task.exception())  # a store that cannot write: exit

    async def _close_join_store(self) -> None:
        """On stop: the last state batch persisted, the store's files closed."""
        if self._persisting is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._persisting), 10.0)
            except asyncio.TimeoutError:
                log.warning("join state: the last changelog batch was not delivered in time; "
                            "the changelog's tail is read again at the next start")
        self.join_store.close()

    async def _persist(self, previous: asyncio.Future | None, seq: int, sent: list) -> None:
        """Persist state batch ``seq`` once its changelog records are
        delivered (in order: after the batch before it)."""
        if previous is not None:
            await previous
        if self._persist_stopped:
            return  # an earlier batch was not delivered: nothing after it is persisted
        offsets: dict[int, int] = {}
        try:
            for partition, future, count in sent:
                metadata = await future
                offsets[partition] = max(offsets.get(partition, -1), metadata.offset + count - 1)
        except _kafka_errors() as error:
            # the changelog lacks this batch: keep the local store as a prefix of the
            # changelog (faust fails on the same error when it flushes before its commit)
            log.error("join state changelog not delivered (%s): local state no longer persisted",
                      describe_error(error))
            self._persist_stopped = True
            return
        cpu = time.thread_time()
        self.join_store.persist(seq, offsets)
        self._join_cpu.inc(time.thread_time() - cpu)

    async def _expire(self) -> None:
        if self.app.consumer is None:
            return
        async with self._lock:
            self._sync_partitions()
            out = self.joiner.expire(time.time(), self._indexed)
            if out.writes or out.dead_letters:
                await self._publish_join_output(out)
                await self._apply(out.writes)

    # -- stage 2 -----------------------------------------------------------------------
    def _entry(self, model: str, partition: int) -> _ModelEntry:
        entry = self.models.get(model)
        if entry is not None:
            entry.partition = partition
            return entry
        from .model_monitor import ModelMonitor

        policy = self.policies.policy(model).monitor
        profile_for = self.policies.profile_for(model)
        entry = None
        try:
            found = decode_checkpoint(model, self.state_table)
            if found is not None:
                state, watermarks, _extra = found
                header = json.loads(self.state_table[model])
                size = int.from_bytes(state[:4], "big")
                recent = orjson.loads(state[4:4 + size])
                monitor = ModelMonitor.from_state(state[4 + size:], policy, profile_for)
                entry = _ModelEntry(monitor, watermarks, partition, header["generation"], header["chunks"], recent)
        except Exception as error:  # an unusable checkpoint must not stop the monitor (nor loop-crash it)
            log.error("checkpoint of model %s cannot be restored (%s: %s); starting the model afresh, "
                      "replayed observations will be counted again", model, type(error).__name__, error)
            entry = None
        if entry is not None:
            restored = {snap.model_version: {k: snap.stats.get(k) for k in ("predictions", "joined", "expired")}
                        for snap in monitor.snapshots(time.time())}
            log_event(log, "checkpoint_restored", logging.WARNING, model=model, generation=entry.generation,
                      watermarks=len(watermarks), restored=restored)
        else:
            entry = _ModelEntry(ModelMonitor(model, policy, profile_for), Watermarks(), partition)
        self.models[model] = entry
        return entry

    def _observe(self, event) -> list[DeadLetter]:
        """Apply one observation message; returns the dead letters for what
        could not be applied (the whole message, or single items)."""
        raw = event.message.value or b""
        where = (self.observations_topic, event.message.partition, event.message.offset)
        try:
            message = orjson.loads(raw)
            model = events.validate_name(message["model"])
            kind_topic, source_partition, items = message["t"], int(message["part"]), message["items"]
        except (orjson.JSONDecodeError, events.ValidationError, KeyError, TypeError, ValueError) as error:
            # internal topic: only we write it, but never crash and never drop it silently
            log.error("unreadable observation message at %s/%s: %s", event.message.tp, event.message.offset,
                      describe_error(error))
            return [_internal_dead_letter(raw, error, *where)]
        letters: list[DeadLetter] = []
        entry = self._entry(model, event.message.partition)
        admit = entry.watermarks.admit
        # A redelivered observation message (applied and checkpointed, but
        # killed before its offset was committed) is skipped whole: the
        # re-join guards below are pruned at checkpoints, so they cannot be
        # what recognises it.
        if not admit("o", "#", event.message.partition, event.message.offset, 0):
            self.counts["replayed_skipped"] += 1
            observability.EVENTS_PROCESSED.labels(COMPONENT, "replay_skipped").inc()
            return letters
        recent = entry.recent
        # re-join guards below these offsets are dropped at the next checkpoint
        entry.lows[source_partition] = message.get("low") or (0, 0)
        predictions, joined, expired = [], [], defaultdict(int)
        skipped = 0
        for position, item in enumerate(items):
            try:
                kind, offset, index, payload = item[:4]
                if kind == "j":
                    # a pair is joined once per event_id; a replay may complete it from the other side
                    event_id = payload["event_id"]
                    if event_id in recent:
                        skipped += 1
                        continue
                    # stage 1 built the payload from a validated record: no second validation
                    record = LabeledRecord(**payload)
                    recent[event_id] = [source_partition, item[4][0], item[5][0]]
                    joined.append(record)
                    continue
                if not admit(kind, kind_topic, source_partition, offset, index):
                    skipped += 1
                    continue
                if kind == "p":
                    predictions.append(Prediction(**payload))
                else:
                    expired[int(payload)] += 1
            except (TypeError, ValueError, KeyError, IndexError) as error:  # internal topic: never crash
                log.error("unreadable observation item at %s/%s: %s", event.message.tp, event.message.offset,
                          describe_error(error))
                letters.append(_internal_dead_letter(raw, error, *where, position))
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
        except Exception as error:  # error policy: a bug in the analytics dead-letters this message only
            log.error("model %s: analytics failed on %d predictions / %d joined pairs at %s/%s (%s); "
                      "the message goes to dead-letter", model, len(predictions), len(joined), event.message.tp,
                      event.message.offset, describe_error(error))
            log.debug("analytics failure", exc_info=error)
            observability.EVENTS_PROCESSED.labels(COMPONENT, "analytics_error").inc()
            letters.append(_internal_dead_letter(raw, error, *where))
        entry.dirty = True
        # what stage 2 applied (stage 1's counters include its own replays)
        for kind, value in (("applied_prediction", len(predictions)), ("applied_joined", len(joined)),
                            ("applied_expired", sum(expired.values()))):
            if value:
                self.counts[kind] += value
                observability.EVENTS_PROCESSED.labels(COMPONENT, kind).inc(value)
        for output in outputs:
            self._publish_monitor_output(model, output)
        return letters

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

    async def _flush_model(self, model: str, entry: _ModelEntry, now: float) -> None:
        """Process a model's buffered events and publish what they raise
        (ModelMonitor defers alerts found while taking snapshots until the
        next observe_*/flush call: without this they would wait for the
        next event)."""
        output = entry.monitor.flush(now)
        if output.alerts or output.retrain_requests:
            entry.dirty = True  # cooldowns changed
            sent = await asyncio.gather(*self._publish_monitor_output(model, output))
            await asyncio.gather(*sent)  # delivered

    async def _flush_all(self) -> None:
        now = time.time()
        for model, entry in list(self.models.items()):
            try:
                await self._flush_model(model, entry, now)
            except Exception as error:  # a bug in one model's analytics must not stop the rest
                log.exception("flushing %s failed: %s", model, error)

    async def _checkpoint(self) -> None:
        cpu = time.thread_time()
        self._last_checkpoint = time.monotonic()
        self._since_checkpoint = 0
        write = self.state_table.write
        for model, entry in self.models.items():
            if not entry.dirty:
                continue
            lows = entry.lows
            if entry.recent and lows:
                # pairs whose inputs stage 1 has committed cannot be re-joined
                for key in [k for k, (part, po, lo) in entry.recent.items()
                            if part in lows and po < lows[part][0] and lo < lows[part][1]]:
                    del entry.recent[key]
            recent = _dumps(entry.recent)
            state = len(recent).to_bytes(4, "big") + recent + entry.monitor.to_state()
            old_generation, old_chunks = entry.generation, entry.chunks
            entry.generation += 1
            pairs = list(encode_checkpoint(model, state, entry.watermarks, entry.generation))
            entry.chunks = len(pairs) - 1
            for key, value in pairs:
                write(entry.partition, key, value)
            for key in chunk_keys(model, old_generation, old_chunks):
                write(entry.partition, key, None)
            entry.dirty = False
        self._models_cpu.inc(time.thread_time() - cpu)
        pending, self._pending_acks = self._pending_acks, []
        stream = self._model_stream
        for event in pending:
            if stream is not None:
                await stream.ack(event)
            else:  # pragma: no cover
                event.ack()
        self.counts["checkpoints"] += 1

    def _on_revoked(self, revoked) -> None:
        stage2 = {tp.partition for tp in revoked if tp.topic == self.observations_topic}
        for model in [m for m, e in self.models.items() if e.partition in stage2]:
            del self.models[model]  # the next owner restores from the checkpoint
            observability.MODEL_SERIES.forget(model)  # and exports its series
        if stage2:
            self._pending_acks = [e for e in self._pending_acks if e.message.partition not in stage2]
        stage1 = {tp.partition for tp in revoked if tp.topic == self.topics.predictions}
        if stage1:
            self.joiner.forget(stage1)
            self._indexed -= stage1

    async def _publish_snapshots(self) -> None:
        now = time.time()
        futures = []
        for model, entry in list(self.models.items()):
            try:
                await self._flush_model(model, entry, now)
                snapshots = entry.monitor.snapshots(now)
            except Exception as error:  # a bug in one model's analytics must not stop the rest
                log.exception("snapshot of %s failed: %s", model, error)
                continue
            for snapshot in snapshots:
                futures.append(await self._send(self.topics.metrics, model.encode(), events.encode(snapshot)))
            observability.MODEL_SERIES.update(model, snapshots)  # /metrics shows what the topic got
        observability.JOIN_STATE.labels(COMPONENT).set(self.join_store.count())
        if futures:
            await asyncio.gather(*futures)

    async def _on_shutdown(self) -> None:
        try:
            await self._publish_snapshots()
        except Exception as error:  # pragma: no cover - best effort while stopping
            log.warning("final checkpoint/snapshot failed: %s", error)
        self.policies.close()

    # -- model events ------------------------------------------------------------------
    async def _follow_model_events(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        topic = self.topics.model_events
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap_servers, enable_auto_commit=False,
                                    client_id="driftline-monitor-model-events", **self.settings.aiokafka_security())
        await consumer.start()
        try:
            partitions = None
            while not partitions:
                partitions = consumer.partitions_for_topic(topic)
                if not partitions:
                    await consumer._client.force_metadata_update()
                    partitions = consumer.partitions_for_topic(topic)
                    if not partitions:
                        await asyncio.sleep(1.0)
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            while True:
                batches = await consumer.getmany(timeout_ms=1000)
                changed = False
                for records in batches.values():
                    for record in records:
                        changed |= self._on_model_event(record.value)
                if changed:
                    # this follower starts at the end after a restart: save the effect now
                    await self._checkpoint()
        finally:
            await consumer.stop()

    def _on_model_event(self, payload: bytes | None) -> bool:
        """Apply model events; True when a model's monitor changed."""
        try:
            model_events = events.decode(ModelEvent, payload or b"")
        except events.ValidationError as error:
            log.warning("ignoring malformed model event: %s", error)
            return False
        changed = False
        for event in model_events:
            if event.event in ("policy_changed", "promoted", "rolled_back"):
                self.policies.invalidate(event.model)
            if event.event in ("promoted", "rolled_back"):
                log_event(log, "promotion" if event.event == "promoted" else "rollback", model=event.model,
                          version=event.version, alias=event.alias, request_id=event.request_id,
                          reason=event.reason)
            entry = self.models.get(event.model)
            if entry is None:
                continue
            if event.event == "promoted" and event.version is not None:
                entry.monitor.on_promoted(event.version, time.time())
                entry.dirty = changed = True
            elif event.event == "policy_changed":
                self._reload_policy(event.model, entry, "policy_changed")
                changed = True
        return changed

    def _reload_policy(self, model: str, entry: _ModelEntry, why: str) -> None:
        from .model_monitor import ModelMonitor

        policy = self.policies.policy(model).monitor
        entry.monitor = ModelMonitor.from_state(entry.monitor.to_state(), policy, self.policies.profile_for(model))
        entry.dirty = True
        log_event(log, "policy_reloaded", model=model, trigger=why)

    async def _refresh_policies(self) -> None:
        """Re-read policies from the registry: a ``policy_changed`` event
        missed while the monitor was down (or never sent) heals here."""
        changed = [m for m in self.policies.refresh() if m in self.models]
        for model in changed:
            self._reload_policy(model, self.models[model], "periodic_refresh")
        if changed:
            await self._checkpoint()

    # -- broker resets -----------------------------------------------------------------
    def _committed(self) -> dict:
        """The highest offset this process ever committed per partition: faust
        forgets a partition's offsets when the group rebalances, and a broker
        outage makes it rebalance, before the reset can be seen."""
        consumer = self.app.consumer
        known = self._known_committed
        for tp, offset in (consumer._committed_offset.items() if consumer is not None else ()):
            key = (tp[0], tp[1])
            if offset is not None and offset > known.get(key, -1):
                known[key] = offset
        return dict(known)

    def _on_broker_change(self, up: bool) -> None:
        """BrokerWatch (its thread): hold the timers' writes from the moment
        the broker goes away; :meth:`_watch_for_reset` releases them."""
        if not up:
            self._hold_writes = True

    async def _watch_for_reset(self) -> None:
        last_check = time.monotonic()
        while True:
            await asyncio.sleep(0.2)
            held = self._hold_writes
            known = self._committed()  # every turn: a rebalance makes faust forget them
            if self._broker_watch is not None and not self._broker_watch.up:
                continue  # nothing to compare with while it is away
            if not held and time.monotonic() - last_check < self.options.reset_check_interval:
                continue
            last_check = time.monotonic()
            try:
                findings = await self.reset_watch.findings(known)
            except (OSError, asyncio.TimeoutError, _kafka_errors()) as error:
                log.debug("reset check failed: %s", describe_error(error))
                continue
            if findings:
                await self._on_broker_reset(findings)
            elif held:
                self._hold_writes = False
                log.info("broker back with its data: writing again")

    async def _reset_if_broker_lost(self, part: str, error: BaseException) -> bool:
        """Before the error policy ends the process for a Kafka error: was it
        a broker that lost its data? Then restart in place instead."""
        if not isinstance(error, _kafka_errors()):
            return False
        try:
            findings = await asyncio.wait_for(self.reset_watch.findings(self._committed()), 30.0)
        except (OSError, asyncio.TimeoutError, _kafka_errors()) as check_error:
            log.debug("reset check after %s failed: %s", part, describe_error(check_error))
            return False
        if not findings:
            return False
        await self._on_broker_reset(findings, f"{part} failed with {describe_error(error)}")
        return True

    async def _on_broker_reset(self, findings: list[str], trigger: str | None = None) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._restart_after_reset, findings, trigger)

    def _restart_after_reset(self, findings: list[str], trigger: str | None = None) -> None:
        log.warning("broker reset detected%s: %s. The broker lost this monitor's data (it restarted empty, or the "
                    "topics were deleted and created again); the state of these partitions went with its "
                    "changelogs: starting afresh", f" ({trigger})" if trigger else "", "; ".join(findings))
        from driftline.topics import create_topics

        # Whatever this process wrote to its state topics since the reset
        # would come back as stale state: start them empty. The inputs may be
        # gone too: create the Driftline topics as they were (idempotent).
        reset_state(self.settings, self.app_id, self.options.data_dir,
                    topics=[*changelog_topics(self.app_id), self.observations_topic])
        create_topics(self.settings, partitions=self.partitions)
        self.supervisor.restart("fresh state after a broker reset")

    def _on_faust_crash(self, reason: BaseException) -> None:
        """faust crashed one of its services: never returns (restart or exit)."""
        if isinstance(reason, _kafka_errors()):
            import concurrent.futures

            committed = self._committed()
            with concurrent.futures.ThreadPoolExecutor(1) as pool:  # the app's loop is busy crashing
                check = pool.submit(asyncio.run, self.reset_watch.findings(committed))
                try:
                    findings = check.result(timeout=30)
                except (OSError, concurrent.futures.TimeoutError, _kafka_errors()) as error:
                    log.debug("reset check after a faust crash failed: %s", describe_error(error))
                    findings = []
            if findings:
                self._restart_after_reset(findings, f"faust crashed with {describe_error(reason)}")
        self.supervisor.fail("faust", reason)

    # -- running ------------------------------------------------------------------------
    def run(self, loglevel: str = "WARNING") -> int:
        """Run as a faust worker until SIGINT/SIGTERM."""
        import faust

        if self.options.reset_state:
            reset_state(self.settings, self.app_id, self.options.data_dir)
            Path(self.options.data_dir).mkdir(parents=True, exist_ok=True)
        install_client_noise_filter()
        gc.set_threshold(*GC_THRESHOLDS)
        self._broker_watch = BrokerWatch(self.settings.bootstrap_list, COMPONENT,
                                         on_change=self._on_broker_change).start()
        observability.set_health_check(self.supervisor.health)
        observability.MODEL_SERIES.grace_s = float(self.options.series_grace_s)
        observability.start_metrics_server(self.options.metrics_port)
        probe = None
        if self.options.metrics_port:
            # faust does not expose its consumer lag: measure it from outside,
            # for both stages (stage 2 consumes the observations topic)
            probe = observability.LagProbe(self.settings, self.app_id,
                                           [self.topics.predictions, self.topics.labels, self.observations_topic],
                                           COMPONENT).start()
        worker = faust.Worker(self.app, loglevel=loglevel, quiet=True, override_logging=False)
        worker.spinner = None  # its terminal escapes would land in the middle of log lines
        try:
            worker.execute_from_commandline()
        except SystemExit as stop:
            return int(stop.code or 0)
        finally:
            if probe is not None:
                probe.stop()
            self._broker_watch.stop()
        return 0


def create_monitor(settings: Settings, options: MonitorOptions | None = None, **kwargs: Any) -> MonitorApp:
    """Build a monitor process for ``settings`` (see :class:`MonitorOptions`)."""
    return MonitorApp(settings, options or MonitorOptions(), **kwargs)


_dumps = orjson.dumps


def _import_analytics() -> None:
    # ~2 s of imports (scipy.stats, River's detectors) that the first events
    # would otherwise wait for (bench/monitor.py --profile): run in a thread
    # while the consumer group forms; stage 1 waits for them
    import river.drift.binary  # noqa: F401

    from . import model_monitor  # noqa: F401

    # what is alive now (modules, the app) lives as long as the process:
    # keep it out of every later collection
    gc.collect()
    gc.freeze()


def _kafka_errors() -> type[BaseException]:
    from aiokafka.errors import KafkaError

    return KafkaError


def _internal_dead_letter(payload: bytes, error: BaseException, topic: str, partition: int | None,
                          offset: int | None, index: int | None = None) -> DeadLetter:
    """The dead letter for a message (or bulk element) whose processing
    raised: the exception, bounded, is the reason."""
    reason = events.ValidationError("<message>", None, f"could not be processed: {describe_error(error)}", index)
    return DeadLetter.for_payload(payload if isinstance(payload, bytes) else bytes(payload), reason,
                                  source_topic=topic, component=COMPONENT, partition=partition, offset=offset)


def _chunks(records: list[dict]) -> list[list[dict]]:
    if not records:
        return []
    approx = len(_dumps(records[0])) + 1
    per = max(1, min(events.MAX_BATCH_EVENTS, _BULK_BYTES // approx))
    return [records[i:i + per] for i in range(0, len(records), per)]
