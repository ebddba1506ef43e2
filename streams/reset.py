"""A broker that came back without the monitor's data, and a deliberate reset.

The embedded broker keeps nothing on disk, and a topic can be deleted and
created again on any broker. Either way the monitor's committed offsets are
then *beyond* the partitions' ends, and its state changelogs are empty. faust
cannot go on from there: it drops every record below the offset it read last
and never commits a lower offset, so a monitor that simply reconnected would
stay alive and count nothing.

:class:`ResetWatch` compares, every few seconds and whenever a Kafka error
reaches the error policy, the offsets this process committed with the
partitions' (verified) end offsets. When a committed offset is beyond the
end, or a topic is gone, it names the partitions and the reason in one
warning, creates the Driftline topics again if they are missing, and the
monitor restarts in place with fresh state (:meth:`Supervisor.restart
<driftline.streams.supervision.Supervisor.restart>`).

:class:`BrokerResetHandler` is the running monitor's side: it holds the
timers' writes while the broker is away, runs the checks, and restarts the
process when they find a reset.

:func:`reset_state` is ``driftline monitor --reset-state``: it deletes the
monitor's state changelogs (join state and model checkpoints) and its local
data directory, so the next start begins with empty state and goes on from
the committed input offsets.

What a broker reset loses is what the broker held: events not yet consumed,
the join state (predictions waiting for labels), the model checkpoints
(cumulative metrics, rolling windows, detectors) and the committed offsets.
After it the monitor counts the events that arrive from then on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

from driftline.config import Settings

from .offsets import kafka_error, verified_end_offsets
from .supervision import Supervisor, describe_error

__all__ = ["ResetWatch", "BrokerResetHandler", "reset_state", "changelog_topics"]

log = logging.getLogger("driftline.monitor")


def changelog_topics(app_id: str) -> list[str]:
    """The monitor's state changelogs (faust names them ``<app>-<table>-changelog``)."""
    return [f"{app_id}-join-changelog", f"{app_id}-models-changelog"]


class ResetWatch:
    """Finds committed offsets beyond the broker's ends.

    Parameters
    ----------
    settings
        Connection settings.
    topics
        The topics whose committed offsets are compared (the inputs and the
        observations topic).
    """

    def __init__(self, settings: Settings, topics: list[str]):
        self.settings = settings
        self.topics = list(topics)

    async def findings(self, committed: Mapping[Any, int | None]) -> list[str]:
        """What shows that the broker lost data: one line per partition or
        topic; empty when nothing does. ``committed`` maps
        ``(topic, partition)`` pairs to this process's committed offsets."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        mine = {(tp[0], tp[1]): offset for tp, offset in committed.items() if tp[0] in self.topics and offset}
        if not mine:
            return []
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap_servers, enable_auto_commit=False,
                                    client_id="driftline-monitor-reset-watch", request_timeout_ms=10_000,
                                    **self.settings.aiokafka_security())
        try:
            await consumer.start()
            await consumer._client.force_metadata_update()
            found: list[str] = []
            present = {}
            for topic in sorted({t for t, _ in mine}):
                partitions = consumer.partitions_for_topic(topic)
                if not partitions:
                    found.append(f"{topic}: the topic is gone")
                else:
                    present[topic] = partitions
            wanted = [TopicPartition(t, p) for t, p in sorted(mine) if t in present and p in present[t]]
            for topic, partition in sorted(mine):
                if topic in present and partition not in present[topic]:
                    found.append(f"{topic}[{partition}]: the partition is gone")
            if not wanted:
                return found
            listed = await consumer.end_offsets(wanted)
        finally:
            await consumer.stop()
        # tansu lists less than the true end: verify only where it looks like a reset
        suspicious = {tp: end for tp, end in listed.items() if end < mine[(tp.topic, tp.partition)]}
        if suspicious:
            verified = await verified_end_offsets(self.settings.bootstrap_servers, suspicious,
                                                  self.settings.aiokafka_security(), quiet=True)
            for tp, end in sorted(verified.items()):
                offset = mine[(tp.topic, tp.partition)]
                if (end or 0) < offset:
                    found.append(f"{tp.topic}[{tp.partition}]: committed offset {offset} is beyond the end {end or 0}")
        return found


class BrokerResetHandler:
    """A running monitor's watch for a broker that lost its data, and the
    restart in place when it did.

    Parameters
    ----------
    app
        The faust app (its consumer's committed offsets).
    settings
        Connection settings.
    app_id
        The faust app id (names the state changelogs).
    data_dir
        The monitor's data directory (deleted by a reset).
    observations_topic
        Stage 2's input (its offsets are compared too; it is deleted by a reset).
    partitions
        Partitions of the Driftline topics (created again by a reset).
    check_interval
        Seconds between checks while nothing looks wrong.
    supervisor
        The monitor's error policy (restarts the process).
    """

    def __init__(self, app, settings: Settings, app_id: str, data_dir: str | Path, observations_topic: str,
                 partitions: int, check_interval: float, supervisor: Supervisor):
        self.app = app
        self.settings = settings
        self.app_id = app_id
        self.data_dir = data_dir
        self.observations_topic = observations_topic
        self.partitions = partitions
        self.check_interval = check_interval
        self.supervisor = supervisor
        topics = settings.topics
        self.reset_watch = ResetWatch(settings, [topics.predictions, topics.labels, observations_topic])
        #: the BrokerWatch of the running monitor (set by its run)
        self.broker_watch = None
        # Set while the broker is away and until it is known to have kept
        # its data: the timers write nothing meanwhile (a write to a broker
        # that restarted empty is lost, and tansu creates the topic badly).
        self.hold_writes = False
        self._known_committed: dict[tuple[str, int], int] = {}

    def committed(self) -> dict:
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

    def on_broker_change(self, up: bool) -> None:
        """BrokerWatch (its thread): hold the timers' writes from the moment
        the broker goes away; :meth:`watch` releases them."""
        if not up:
            self.hold_writes = True

    async def watch(self) -> None:
        """The ``reset_watch`` task: check now and then, and at once when the broker comes back."""
        last_check = time.monotonic()
        while True:
            await asyncio.sleep(0.2)
            held = self.hold_writes
            known = self.committed()  # every turn: a rebalance makes faust forget them
            if self.broker_watch is not None and not self.broker_watch.up:
                continue  # nothing to compare with while it is away
            if not held and time.monotonic() - last_check < self.check_interval:
                continue
            last_check = time.monotonic()
            try:
                findings = await self.reset_watch.findings(known)
            except (OSError, asyncio.TimeoutError, kafka_error()) as error:
                log.debug("reset check failed: %s", describe_error(error))
                continue
            if findings:
                await self._on_broker_reset(findings)
            elif held:
                self.hold_writes = False
                log.info("broker back with its data: writing again")

    async def reset_if_broker_lost(self, part: str, error: BaseException) -> bool:
        """Before the error policy ends the process for a Kafka error: was it
        a broker that lost its data? Then restart in place instead."""
        if not isinstance(error, kafka_error()):
            return False
        try:
            findings = await asyncio.wait_for(self.reset_watch.findings(self.committed()), 30.0)
        except (OSError, asyncio.TimeoutError, kafka_error()) as check_error:
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
        reset_state(self.settings, self.app_id, self.data_dir,
                    topics=[*changelog_topics(self.app_id), self.observations_topic])
        create_topics(self.settings, partitions=self.partitions)
        self.supervisor.restart("fresh state after a broker reset")

    def on_faust_crash(self, reason: BaseException) -> None:
        """faust crashed one of its services: never returns (restart or exit)."""
        if isinstance(reason, kafka_error()):
            committed = self.committed()
            with concurrent.futures.ThreadPoolExecutor(1) as pool:  # the app's loop is busy crashing
                check = pool.submit(asyncio.run, self.reset_watch.findings(committed))
                try:
                    findings = check.result(timeout=30)
                except (OSError, concurrent.futures.TimeoutError, kafka_error()) as error:
                    log.debug("reset check after a faust crash failed: %s", describe_error(error))
                    findings = []
            if findings:
                self._restart_after_reset(findings, f"faust crashed with {describe_error(reason)}")
        self.supervisor.fail("faust", reason)


def reset_state(settings: Settings, app_id: str, data_dir: str | Path, topics: list[str] | None = None) -> list[str]:
    """Delete the monitor's state changelogs (or ``topics``) and its local
    data directory (for ``--reset-state``); returns the topics deleted. Stop
    every monitor of the group first: a running one would write its state
    back."""
    from kafka.errors import UnknownTopicOrPartitionError

    from driftline.kafka import admin_client

    admin = admin_client(settings)
    try:
        existing = set(admin.list_topics())
        doomed = [topic for topic in (topics or changelog_topics(app_id)) if topic in existing]
        if doomed:
            try:
                admin.delete_topics(doomed, timeout_ms=30_000)
            except UnknownTopicOrPartitionError:  # deleted meanwhile: the goal
                pass
    finally:
        admin.close()
    path = Path(data_dir)
    if path.exists():
        shutil.rmtree(path)
    log.warning("monitor state reset: deleted %s and %s; the next start begins with empty state",
                ", ".join(doomed) or "no changelog (none existed)", path)
    return doomed
