"""Stage 1's state writes: to the join store, and raw to the join table's changelog."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any, Callable

import orjson

from .join_store import JoinStore
from .offsets import kafka_error
from .options import MonitorError
from .supervision import describe_error

__all__ = ["JoinStateWriter", "MAX_UNPERSISTED"]

#: State batches whose changelog may be in flight at once: a writer that gets
#: ahead waits for the oldest (its changes are held in memory until then; with
#: no bound they piled up whenever the changelog was slower than the join:
#: 220,000 changes, ~130 MB, in bench/monitor.py --only memory).
MAX_UNPERSISTED = 3

log = logging.getLogger("driftline.monitor")


class JoinStateWriter:
    """Writes stage 1's state changes to the store at once and to the
    changelog as record batches; persists the store once the changelog has them.

    Parameters
    ----------
    app
        The faust app (its producer sends the changelog records).
    join_store
        Stage 1's store.
    changelog_topic
        The join table's changelog topic.
    cpu
        The stage's CPU-seconds counter.
    on_failure
        Called with the error once when the store cannot persist a batch
        (the process ends there).
    """

    def __init__(self, app, join_store: JoinStore, changelog_topic: str, cpu,
                 on_failure: Callable[[BaseException], None]):
        self.app = app
        self.join_store = join_store
        self.changelog_topic = changelog_topic
        self._cpu = cpu
        self._on_failure = on_failure
        # the task that persists the last state batch once its changelog is delivered
        self._persisting: asyncio.Future | None = None
        self._unpersisted: deque[asyncio.Future] = deque()
        self._stopped = False

    async def write(self, writes) -> None:
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
        self._cpu.inc(time.thread_time() - cpu)
        producer = self.app.producer._ensure_producer()  # aiokafka's producer
        topic = self.changelog_topic
        batches: dict[int, Any] = {}
        sent: list[tuple[int, Any, int]] = []  # (partition, delivery future, records)
        for partition, key, value, *_entries in writes:
            # one record batch per partition instead of a send (and a future) per key
            raw_key = orjson.dumps(key)
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
        unpersisted = self._unpersisted
        unpersisted.append(self._persisting)
        while unpersisted and unpersisted[0].done():
            unpersisted.popleft()
        if len(unpersisted) > MAX_UNPERSISTED:
            # (asyncio.wait: its failure is _persisted's to report, not the join's)
            await asyncio.wait([unpersisted.popleft()])

    def _persisted(self, task: asyncio.Future) -> None:
        if not task.cancelled() and task.exception() is not None and not self._stopped:
            self._stopped = True
            self._on_failure(task.exception())  # a store that cannot write: exit

    async def close(self) -> None:
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
        if self._stopped:
            return  # an earlier batch was not delivered: nothing after it is persisted
        offsets: dict[int, int] = {}
        try:
            for partition, future, count in sent:
                metadata = await future
                offsets[partition] = max(offsets.get(partition, -1), metadata.offset + count - 1)
        except kafka_error() as error:
            # the changelog lacks this batch: keep the local store as a prefix of the
            # changelog (faust fails on the same error when it flushes before its commit)
            log.error("join state changelog not delivered (%s): local state no longer persisted",
                      describe_error(error))
            self._stopped = True
            return
        cpu = time.thread_time()
        self.join_store.persist(seq, offsets)
        self._cpu.inc(time.thread_time() - cpu)
