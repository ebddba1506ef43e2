"""Stage 1, the ``join`` agent's work: decode the input, join it, publish what it gives.

:class:`JoinStage` takes each read of ``predictions`` + ``labels`` (record
batches from :mod:`driftline.streams.batch_input`), decodes it, dead-letters
bad records, joins the rest by ``event_id`` (:class:`driftline.streams.join.Joiner`),
publishes joined pairs to ``labeled`` and observations, keyed by model, to
``<app id>-observations``, then writes the join state
(:class:`driftline.streams.join_changelog.JoinStateWriter`). The expiry timer
sweeps unmatched predictions past their label TTL the same way.

Examples
--------
>>> [len(chunk) for chunk in chunk_records([{"model": "m", "n": i} for i in range(3)])]
[3]
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

import orjson

from driftline import events, observability
from driftline.events import DeadLetter, Label, Prediction
from driftline.logs import log_event

from .join import COMPONENT, Joiner, JoinOutput
from .join_changelog import JoinStateWriter
from .join_store import JoinStore
from .observations import encode_message
from .publishing import Publisher, internal_dead_letter
from .supervision import describe_error

try:  # faust's TopicPartition (a namedtuple), used as key of committed offsets
    from faust.types import TP
except ImportError:  # pragma: no cover
    from collections import namedtuple

    TP = namedtuple("TP", "topic partition")

__all__ = ["JoinStage", "chunk_records"]

log = logging.getLogger("driftline.monitor")

#: Largest ``labeled`` message (a JSON array of records), roughly.
_BULK_BYTES = 512 * 1024

#: Events per ``<app id>-observations`` message (columns of about 150 bytes an event).
_OBSERVATIONS_PER_MESSAGE = 1000


class JoinStage:
    """Stage 1 of one monitor process.

    Parameters
    ----------
    app
        The faust app (consumer assignment and committed offsets).
    publisher
        The monitor's sends and counts.
    joiner
        The join over ``join_store``.
    join_store
        Stage 1's state.
    writer
        Writes the joiner's state changes to the store and the changelog.
    observations_topic
        Stage 2's input.
    store_kind
        ``--state`` (for the ``join_state_ready`` log line).
    batch_events
        Events joined at a time at most (see :meth:`join_batch`).
    """

    def __init__(self, app, publisher: Publisher, joiner: Joiner, join_store: JoinStore, writer: JoinStateWriter,
                 observations_topic: str, store_kind: str, batch_events: int = 10_000):
        self.app = app
        self.publisher = publisher
        self.topics = publisher.topics
        self.joiner = joiner
        self.join_store = join_store
        self.writer = writer
        self.observations_topic = observations_topic
        self.store_kind = store_kind
        self.batch_events = batch_events
        # a read and the expiry sweep take turns with the join state
        self._lock = asyncio.Lock()
        self._indexed: set[int] = set()
        self._replayed_told = 0  # changelog records replayed, as of the last join_state_ready line
        self._cpu = observability.MONITOR_CPU.labels("join")
        self._input_messages = observability.EVENTS_PROCESSED.labels(COMPONENT, "input_message")

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
            log_event(log, "join_state_ready", store=self.store_kind, partitions=sorted(new),
                      replayed=replayed - self._replayed_told, entries=self.join_store.count())
            self._replayed_told = replayed
        self._indexed = owned

    def forget(self, partitions: set[int]) -> None:
        """Input partitions revoked: their join state goes with them."""
        self.joiner.forget(partitions)
        self._indexed -= partitions

    async def join_batch(self, batches: list) -> None:
        """Decode, join and publish one read: ``[(tp, records), ...]`` from
        :mod:`driftline.streams.batch_input` (every partition's records in offset order).

        A read is joined in parts of whole messages of at most
        ``batch_events`` events (one message may hold more), each published
        and written before the next is decoded: a part is what a smaller
        read would have been, and the memory of a read is bounded by the
        setting, not by how many bulk messages one fetch brought."""
        cpu = time.thread_time()
        self._input_messages.inc(sum(len(records) for _tp, records in batches))  # read, not yet handled
        items: list = []
        dead: list[DeadLetter] = []
        single: set[tuple[str, int, int]] = set()  # messages that are one event, not a bulk array
        predictions = self.topics.predictions
        decode_batch = events.decode_batch
        limit = self.batch_events
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
                except Exception as error:  # the per-message error policy: what breaks decoding is dead-lettered
                    dead.append(internal_dead_letter(payload, error, topic, partition, offset))
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
                del decoded
                if len(items) >= limit:
                    await self._join_part(items, dead, single, batches, time.thread_time() - cpu)
                    items, dead, single = [], [], set()
                    cpu = time.thread_time()
        if items or dead:
            await self._join_part(items, dead, single, batches, time.thread_time() - cpu)

    async def _join_part(self, items: list, dead: list[DeadLetter], single: set, batches: list,
                         spent: float) -> None:
        """Join, publish and write one part of a read (``spent``: its decoding's CPU seconds)."""
        async with self._lock:
            cpu = time.thread_time()
            self._sync_partitions()
            self.joiner.single = single
            now = time.time()
            try:
                out = self.joiner.process(items, now)
            except Exception as error:  # the per-message error policy: find the failing records, one by one
                log.warning("stage 1: a batch of %d records failed (%s); joining it record by record",
                            len(items), describe_error(error))
                out = self._join_one_by_one(items, now, batches)
            out.dead_letters[:0] = dead
            out.counts["dead_letter"] += len(dead)
            self._cpu.inc(spent + time.thread_time() - cpu)
            await self._publish_join_output(out)
            await self.writer.write(out.writes)

    def _join_one_by_one(self, items: list, now: float, batches: list) -> JoinOutput:
        """Join ``items`` one at a time; a record that fails is dead-lettered
        with the exception as the reason, the others are joined as usual.
        Each record's state change goes to the store at once, so later
        records see it; the changelog gets them all in :meth:`JoinStateWriter.write`."""
        payloads = {(tp.topic, tp.partition, record.offset): record.value
                    for tp, records in batches for record in records}
        topic_of = {"p": self.topics.predictions, "l": self.topics.labels}
        out = JoinOutput()
        for item in items:
            kind, partition, offset, index, _record = item
            try:
                one = self.joiner.process([item], now)
            except Exception as error:  # the per-message error policy: this record alone is dead-lettered
                payload = payloads.get((topic_of[kind], partition, offset)) or b""
                out.dead_letters.append(internal_dead_letter(payload, error, topic_of[kind], partition, offset,
                                                             index))
                out.counts["dead_letter"] += 1
                continue
            self.joiner.apply(one.writes)
            out.merge(one)
        return out

    async def expire(self) -> None:
        """The expiry timer: predictions past their label TTL, published and written."""
        if self.app.consumer is None:
            return
        async with self._lock:
            self._sync_partitions()
            out = self.joiner.expire(time.time(), self._indexed)
            if out.writes or out.dead_letters:
                await self._publish_join_output(out)
                await self.writer.write(out.writes)

    async def _publish_join_output(self, out: JoinOutput) -> None:
        """Dead letters, ``labeled`` records and observations, all delivered
        before the state that stands for them is written."""
        futures = await self.publisher.dead_letters(out.dead_letters)
        # encoded first, then sent: a send may wait for room in the producer's
        # buffer, and the stage's CPU clock must not run while other work does
        cpu = time.thread_time()
        outgoing: list[tuple[str, bytes, bytes]] = []
        dumps = orjson.dumps
        # labeled records are built from validated records: encoded once, as they are
        by_model: dict[str, list[dict]] = defaultdict(list)
        for record in out.labeled:
            by_model[record["model"]].append(record)
        for model, records in by_model.items():
            for chunk in chunk_records(records):
                outgoing.append((self.topics.labeled, model.encode(),
                                 dumps(chunk) if len(chunk) > 1 else dumps(chunk[0])))
        committed = self.app.consumer._committed_offset if self.app.consumer is not None else {}
        for (model, kind, partition), items in out.observations.items():
            # Lowest offsets stage 1 could still replay in this partition:
            # stage 2 forgets re-join guards below them.
            low = [committed.get(TP(self.topics.predictions, partition)) or 0,
                   committed.get(TP(self.topics.labels, partition)) or 0]
            for start in range(0, len(items), _OBSERVATIONS_PER_MESSAGE):
                payload = encode_message(model, kind, partition, low, items[start:start + _OBSERVATIONS_PER_MESSAGE])
                outgoing.append((self.observations_topic, model.encode(), payload))
        self._cpu.inc(time.thread_time() - cpu)
        send = self.publisher.send
        for topic, key, value in outgoing:
            futures.append(await send(topic, key, value))
        if futures:
            # Outputs must be on the broker before the state that stands for them.
            await asyncio.gather(*futures)
        counts = self.publisher.counts
        for name, value in out.counts.items():
            counts[name] += value
            if name != "dead_letter":
                observability.EVENTS_PROCESSED.labels(COMPONENT, name).inc(value)


def chunk_records(records: list[dict]) -> list[list[dict]]:
    """``records`` in chunks of about :data:`_BULK_BYTES` (at most
    ``events.MAX_BATCH_EVENTS`` each): one ``labeled`` message per chunk."""
    if not records:
        return []
    approx = len(orjson.dumps(records[0])) + 1
    per = max(1, min(events.MAX_BATCH_EVENTS, _BULK_BYTES // approx))
    return [records[i:i + per] for i in range(0, len(records), per)]
