"""The monitor's faust-streaming application (see :mod:`streams` for the design).

:func:`create_monitor` builds a :class:`MonitorApp` — a faust app with

* ``join`` (stage 1, :mod:`driftline.streams.stage1`): an agent on ``predictions`` +
  ``labels`` that decodes, dead-letters bad records, joins by ``event_id``
  (:class:`driftline.streams.join.Joiner` over a changelog-backed table whose store is
  RocksDB or memory, :mod:`driftline.streams.join_store`, written by
  :mod:`driftline.streams.join_changelog`), publishes joined pairs to ``labeled`` and
  forwards observations to ``<app id>-observations`` keyed by model;
* ``models`` (stage 2, :mod:`driftline.streams.stage2`): an agent on the observations
  that drives one :class:`driftline.streams.model_monitor.ModelMonitor` per model,
  publishes alerts and retrain requests, and checkpoints state + watermarks to
  a second table before acknowledging (:mod:`driftline.streams.checkpoint`);
* timers for label expiry, checkpoints, metric snapshots and policy
  refreshes, and a task that follows ``model-events`` (every process sees
  every event: no group; :mod:`driftline.streams.model_events`);
* a task that watches for a broker that lost its data (:mod:`driftline.streams.reset`).

Its options are :class:`driftline.streams.options.MonitorOptions`; the faust
classes it runs on are in :mod:`driftline.streams.faust_types`.

Every agent, timer and task runs under one error policy
(:mod:`driftline.streams.supervision`): one message's failure dead-letters that
message; anything else ends the process with one line and exit code 70.

:meth:`MonitorApp.run` runs it as a faust worker until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import os
import time
from pathlib import Path
from typing import IO, Any

from driftline import events, observability
from driftline.brokerwatch import BrokerWatch, install_client_noise_filter
from driftline.config import Settings
from driftline.errors import DriftlineError
from driftline.kafka import partition_counts

from . import native_memory
from .faust_types import app_class, join_table_class, partitioned_table_class
from .join import COMPONENT, Joiner, index_of
from .join_changelog import JoinStateWriter
from .join_store import open_join_store
from .model_events import ModelEventFollower
from .offsets import kafka_error
from .options import STATE_STORES, MonitorError, MonitorOptions
from .policies import PolicySource
from .publishing import Publisher
from .reset import BrokerResetHandler, reset_state
from .stage1 import JoinStage
from .stage2 import ModelStage
from .supervision import Supervisor

__all__ = ["MonitorOptions", "MonitorApp", "create_monitor", "lock_data_dir", "PolicySource", "MonitorError", "STATE_STORES"]

log = logging.getLogger("driftline.monitor")


#: The monitor's garbage-collector thresholds. With Python's default (a
#: collection every 700 new containers) collections walked the batch's live
#: records every few events: half of the join's time (a 100,000-pair join
#: in-process, 21.8 vs 11.5 us per pair). 50,000 keeps at most a few MB of
#: young objects waiting.
GC_THRESHOLDS = (50_000, 20, 100)


class MonitorApp:
    """One monitor process: both stages, timers and the model-event follower.

    The work is in its parts: :attr:`stage1` (:class:`~driftline.streams.stage1.JoinStage`),
    :attr:`stage2` (:class:`~driftline.streams.stage2.ModelStage`, with its
    :attr:`~driftline.streams.stage2.ModelStage.checkpoints`), :attr:`model_events`
    (:class:`~driftline.streams.model_events.ModelEventFollower`) and :attr:`resets`
    (:class:`~driftline.streams.reset.BrokerResetHandler`); this class builds
    the faust app, its tables, agents, timers and tasks over them.
    """

    def __init__(self, settings: Settings, options: MonitorOptions, partitions: int | None = None):

        options.check()
        self.settings = settings
        self.options = options
        topics = settings.topics
        self.topics = topics
        if partitions is None:
            counts = partition_counts(settings, [topics.predictions, topics.labels],
                                      client_id="driftline-monitor-probe")
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
        if options.web_port is not None:
            app_options.update(web_port=options.web_port, web_bind="127.0.0.1")
        app_options.update(settings.faust_broker_options())
        self.app = app = app_class()(self.app_id, **app_options)
        app.driftline_monitor = self
        self.policies = PolicySource(settings)
        self.observations_topic = f"{self.app_id}-observations"
        self.publisher = Publisher(app, topics)
        self.counts = self.publisher.counts
        self.supervisor = Supervisor(COMPONENT)

        self.join_store = open_join_store(options.state, Path(options.data_dir) / "join-state", index_of,
                                          options.state_memory_mb)
        self.join_table = app.tables.add(join_table_class(self.join_store)(
            app, name="join", default=None, key_type=str, value_type=bytes, beacon=app.tables.beacon,
            partitions=partitions, help="stage 1: join state per event_id"))
        self.state_table = app.tables.add(partitioned_table_class()(
            app, name="models", default=None, key_type=str, value_type=bytes, beacon=app.tables.beacon,
            partitions=partitions, help="stage 2: checkpoints per model"))
        joiner = Joiner(self.policies.label_ttl, store=self.join_store,
                        topics={"p": topics.predictions, "l": topics.labels})
        writer = JoinStateWriter(app, self.join_store, self.join_table.changelog_topic.get_topic_name(),
                                 observability.MONITOR_CPU.labels("join"),
                                 lambda error: self.supervisor.fail("join", error))
        self.stage1 = JoinStage(app, self.publisher, joiner, self.join_store, writer, self.observations_topic,
                                options.state, options.batch_events)
        self.stage2 = ModelStage(app, self.publisher, self.policies, self.state_table, self.observations_topic,
                                 options.checkpoint_events, options.checkpoint_interval)
        self.model_events = ModelEventFollower(settings, self.stage2)
        self.resets = BrokerResetHandler(app, settings, self.app_id, options.data_dir, self.observations_topic,
                                         partitions, options.reset_check_interval, self.supervisor)
        self.supervisor.before_fail = self.resets.reset_if_broker_lost
        self._analytics_loaded = asyncio.Event()
        self._define_agents()

    def _define_agents(self) -> None:
        """The faust agents, timers, tasks and signal handlers over the parts."""
        app, options, topics, guard = self.app, self.options, self.topics, self.supervisor.guard
        stage1, stage2, resets = self.stage1, self.stage2, self.resets
        checkpoints = stage2.checkpoints

        inputs = app.topic(topics.predictions, topics.labels, key_serializer="raw", value_serializer="raw")
        observations = app.topic(self.observations_topic, key_serializer="raw", value_serializer="raw",
                                 partitions=self.partitions, internal=True)

        @app.batch_agent(inputs)
        @guard("join")
        async def join_records(batches):
            if not self._analytics_loaded.is_set():
                # the imports hold the GIL: a batch joined meanwhile would take twice as long
                await self._analytics_loaded.wait()
            await stage1.join_batch(batches)

        @app.agent(observations, name="models")
        @guard("models")
        async def model_agent(stream):
            manual = stream.noack()
            checkpoints.stream = manual
            async for event in manual.events():
                cpu = time.thread_time()
                letters = stage2.observe(event)
                stage2.cpu.inc(time.thread_time() - cpu)
                if letters:
                    await self.publisher.dead_letters(letters)  # delivered before the commit that follows the ack
                if checkpoints.cover(event):
                    await checkpoints.checkpoint()

        @app.timer(options.expiry_interval)
        @guard("expiry", options.expiry_interval)
        async def expiry_timer():
            if not resets.hold_writes:
                await stage1.expire()

        @app.timer(options.checkpoint_interval)
        @guard("checkpoint", options.checkpoint_interval)
        async def checkpoint_timer():
            if not resets.hold_writes and checkpoints.overdue():
                await checkpoints.checkpoint()

        @app.timer(options.snapshot_interval)
        @guard("snapshot", options.snapshot_interval)
        async def snapshot_timer():
            if not resets.hold_writes:
                await self._publish_snapshots()

        @app.timer(native_memory.TRIM_INTERVAL_S)
        @guard("malloc_trim", native_memory.TRIM_INTERVAL_S)
        async def malloc_trim_timer():
            native_memory.trim()

        @app.timer(options.policy_refresh_interval)
        @guard("policy_refresh", options.policy_refresh_interval)
        async def policy_refresh_timer():
            if not resets.hold_writes:
                await self.model_events.refresh_policies()

        @app.task
        @guard("model_events")
        async def follow_model_events():
            await self.model_events.follow()

        @app.task
        async def import_analytics():
            await asyncio.get_running_loop().run_in_executor(None, _import_analytics)
            self._analytics_loaded.set()

        @app.task
        @guard("reset_watch")
        async def reset_watch():
            await resets.watch()

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

    # -- across the stages -------------------------------------------------------------
    async def _publish_snapshots(self) -> None:
        """The snapshot timer: every model's metric snapshots, and the join state's size."""
        futures = await self.stage2.send_snapshots()
        observability.JOIN_STATE.labels(COMPONENT).set(self.join_store.count())
        if futures:
            await asyncio.gather(*futures)

    def _on_revoked(self, revoked) -> None:
        stage2 = {tp.partition for tp in revoked if tp.topic == self.observations_topic}
        if stage2:
            self.stage2.forget(stage2)
        stage1 = {tp.partition for tp in revoked if tp.topic == self.topics.predictions}
        if stage1:
            self.stage1.forget(stage1)

    async def before_stop(self) -> None:
        """faust stops (its consumer still runs): every model flushed and
        checkpointed, so that its offsets can be committed; the join store closed."""
        await self.stage2.flush_all()
        await self.stage2.checkpoints.checkpoint()
        await self.stage1.writer.close()

    async def _on_shutdown(self) -> None:
        try:
            await self._publish_snapshots()
        except (kafka_error(), DriftlineError, OSError, asyncio.TimeoutError) as error:  # pragma: no cover
            log.warning("final checkpoint/snapshot failed: %s", error)  # best effort while stopping
        finally:
            self.policies.close()

    # -- running ------------------------------------------------------------------------
    def run(self, loglevel: str = "WARNING") -> int:
        """Run as a faust worker until SIGINT/SIGTERM."""
        import faust

        native_memory.limit_arenas()  # before the threads start (see streams/native_memory.py)
        self._data_dir_lock = lock_data_dir(self.options.data_dir)  # held until the process ends
        if self.options.reset_state:
            reset_state(self.settings, self.app_id, self.options.data_dir)
            Path(self.options.data_dir).mkdir(parents=True, exist_ok=True)
        install_client_noise_filter()
        gc.set_threshold(*GC_THRESHOLDS)
        broker_watch = self.resets.broker_watch = BrokerWatch(self.settings.bootstrap_list, COMPONENT,
                                                              on_change=self.resets.on_broker_change).start()
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
            broker_watch.stop()
        return 0


def lock_data_dir(data_dir: str | Path) -> IO[str]:
    """Hold ``<data_dir>.lock`` for this process, or raise :class:`MonitorError`
    when another monitor process holds it. Two processes on one data
    directory would share RocksDB's files (RocksDB refuses the second one
    only once its partitions are assigned, mid-rebalance). The lock file sits
    beside the directory, which a reset deletes; the kernel releases it when
    the process ends, however it ends."""
    import fcntl

    path = Path(data_dir).resolve()
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_path, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise MonitorError(f"--data-dir {str(data_dir)!r} is in use by another monitor process (pid {holder}); "
                           "give each process its own --data-dir") from None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def create_monitor(settings: Settings, options: MonitorOptions | None = None, **kwargs: Any) -> MonitorApp:
    """Build a monitor process for ``settings`` (see :class:`MonitorOptions`)."""
    return MonitorApp(settings, options or MonitorOptions(), **kwargs)


def _import_analytics() -> None:
    # ~1 s of imports (SciPy's special functions, River's detectors) that the first events would otherwise wait for
    # (bench/monitor.py --profile): run in a thread while the consumer group
    # forms; stage 1 waits for them. River's packages thin (driftline.river_modules).
    from driftline.river_modules import river_module

    for name in ("river.drift.adwin", "river.drift.binary", "river.anomaly.hst"):
        river_module(name)
    for name in ("scipy.special", "driftline.streams.model_monitor"):
        importlib.import_module(name)

    # what is alive now (modules, the app) lives as long as the process:
    # keep it out of every later collection
    gc.collect()
    gc.freeze()
