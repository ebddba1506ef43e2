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

import logging
import shutil
from pathlib import Path
from typing import Any, Mapping

from driftline.config import Settings

from .offsets import verified_end_offsets

__all__ = ["ResetWatch", "reset_state", "changelog_topics"]

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


def reset_state(settings: Settings, app_id: str, data_dir: str | Path, topics: list[str] | None = None) -> list[str]:
    """Delete the monitor's state changelogs (or ``topics``) and its local
    data directory (for ``--reset-state``); returns the topics deleted. Stop
    every monitor of the group first: a running one would write its state
    back."""
    from kafka import KafkaAdminClient
    from kafka.errors import UnknownTopicOrPartitionError

    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_list, client_id="driftline-monitor-reset",
                             **settings.kafka_security())
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
