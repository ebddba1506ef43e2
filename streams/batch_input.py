"""A faust input path that hands whole record batches to a handler.

faust delivers each message on its own: ``Consumer._drain_messages`` ->
``Service.wait_first(callback(message), ...)`` -> ``Conductor.on_message`` ->
a channel queue -> ``Stream.__aiter__`` -> the agent, then an acknowledgement
per message. That route costs about 80 µs per message here (two tasks and
about a dozen event-loop callbacks), which caps a process at ~12,000 messages/s
whatever the agent does; with one event per message it capped the monitor's
stage 1 (issue "The monitor at production rates").

:class:`BatchConsumer` keeps everything else of faust — the app, group
membership and rebalancing, the assignor's co-partitioning, table recovery
and the commit loop — and replaces only the delivery for the topics that have
a batch handler (:meth:`BatchApp.batch_agent`):

* each ``getmany`` result for those topics goes, all partitions at once, to
  ``await handler(batches)`` as ``[(tp, [ConsumerRecord, ...]), ...]``
  (aiokafka records: ``offset``, ``key``, ``value``, ``timestamp``). Records
  of other topics (table changelogs during recovery, ordinary agents) take
  faust's usual per-message route;
* when the handler returns, ``offset + 1`` of each partition's last record is
  what faust's commit loop commits for it (``_new_offset``); faust flushes the
  producer before it commits, so whatever the handler sent is on the broker
  before the input it stands for is committed. A handler that raises leaves
  the batch uncommitted;
* a rebalance waits for the batch in hand and commits the handled partitions
  while they are still this member's (faust drops the acknowledgements of
  revoked partitions before its own revoke-time commit).

Measured with ``bench/faust_batch.py --only single`` (one event per message,
2 topics x 4 partitions, embedded broker, one run on 2 shared cores): faust's
per-message route to a no-op agent 10,900 messages/s (92 µs per message), this
route 316,000 messages/s (3.2 µs), a raw aiokafka consumer 349,000.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

__all__ = ["BatchHandler", "batch_app_class"]

#: ``async handler([(tp, records), ...])``
BatchHandler = Callable[[list], Awaitable[None]]

#: Reads queued ahead of the handler: while it works, the fetch loop goes on
#: fetching and feeding faust's own route (the monitor's stage 2), so the two
#: stages overlap instead of taking turns.
READ_AHEAD = 2

#: How long the broker may hold a fetch that finds no new data (faust fixes it
#: at 1.5 s). aiokafka keeps one fetch in flight per broker and leaves out the
#: partitions it still holds records of: while the monitor's stage 2 works
#: through observations, the next fetch asks only for caught-up partitions,
#: and a long-polling broker then holds it the whole time, however many new
#: observations wait (seen as 0.5-1.5 s stalls of stage 2).
FETCH_MAX_WAIT_MS = 50


def batch_app_class() -> type:
    """``BatchApp``, a ``faust.App`` with :meth:`batch_agent` (built on first
    use: importing faust is slow)."""
    global _BATCH_APP
    if _BATCH_APP is None:
        _BATCH_APP = _build()
    return _BATCH_APP


_BATCH_APP: type | None = None


def _build() -> type:
    import faust
    from faust.transport.consumer import CONSUMER_FETCHING
    from faust.transport.drivers import aiokafka as faust_aiokafka

    class BatchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport):
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when it starts (aiokafka 0.11-0.14)
            return consumer

    class BatchConsumer(faust_aiokafka.Consumer):
        """faust's aiokafka consumer with a batch route for some topics."""

        def _new_consumer_thread(self):
            return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # tp -> next offset to commit: every record below it was handled, in order
            self._batch_done: dict = {}
            self._batch_queue: asyncio.Queue | None = None
            # the queue is full: the next fetch leaves the batch partitions out (see _drain_messages)
            self._hold_batch_partitions = False
            # tp -> next offset to hand over, in this assignment and since the last seek
            self._batch_next: dict = {}
            self._handler_idle = asyncio.Event()
            self._handler_idle.set()

        def _get_active_partitions(self):
            active = super()._get_active_partitions()
            if self._hold_batch_partitions:
                # The fetch's own call (set just before it, no await between). Every other
                # caller gets faust's set itself: pause_partitions/resume_partitions update it
                # in place, and a resume applied to a copy left partitions unfetched for good.
                self._hold_batch_partitions = False
                return self._without_batch_topics(active)
            return active

        def _without_batch_topics(self, partitions) -> set:
            handlers = self.app.batch_handlers
            return {tp for tp in partitions if tp.topic not in handlers}

        def _new_offset(self, tp):
            done = self._batch_done.get(tp)
            if done is not None:
                return done
            return super()._new_offset(tp)

        async def on_partitions_revoked(self, revoked) -> None:
            # Read-ahead not yet handled is dropped (the worker drops batches of an older
            # generation; faust seeks to the committed offsets after the rebalance), and what
            # was handled is committed while the partitions are still ours: faust drops the
            # acknowledgements of revoked partitions before its own revoke-time commit.
            await self._handler_idle.wait()
            mine = {tp for tp in revoked if tp in self._batch_done}
            if mine:
                await self.commit(topics=mine)
            await super().on_partitions_revoked(revoked)
            for tp in revoked:
                self._batch_done.pop(tp, None)
                self._batch_next.pop(tp, None)

        async def perform_seek(self) -> None:
            # faust seeks back to the committed offsets after every rebalance (and when it reads
            # while its flow is stopped): what was read before is read again
            await super().perform_seek()
            self._batch_next.clear()

        async def wait_empty(self) -> None:
            await self._handler_idle.wait()
            await super().wait_empty()

        async def _drain_messages(self, fetcher) -> None:  # pragma: no cover - the fetcher's loop
            handlers: dict[str, BatchHandler] = self.app.batch_handlers
            consumer_should_stop = self._stopped.is_set
            fetcher_should_stop = fetcher._stopped.is_set
            read_offset = self._read_offset
            if self._batch_queue is None:
                self._batch_queue = asyncio.Queue(READ_AHEAD)
                self.add_future(self._run_batches(self._batch_queue))
            queue = self._batch_queue
            try:
                while not (consumer_should_stop() or fetcher_should_stop()):
                    self.diag.set_flag(CONSUMER_FETCHING)
                    # With the handler's queue full, fetch only the other topics (faust's route
                    # goes on), looking back soon for room in the queue.
                    held = queue.full()
                    if held and not self._without_batch_topics(self._get_active_partitions()):
                        await asyncio.sleep(0.01)  # (faust would sleep 1 s on an empty fetch set)
                        continue
                    # With flow active, _wait_next_records reads the active partitions before it
                    # first awaits; with flow stopped it waits first, and the hold must not apply
                    # to whatever else reads them meanwhile.
                    self._hold_batch_partitions = held and self.flow_active
                    try:
                        records, active = await self._wait_next_records(0.02 if held else 1.0)
                    finally:
                        self._hold_batch_partitions = False
                    generation = self.app.consumer_generation_id
                    await asyncio.sleep(0)
                    if not records or self.should_stop:
                        continue
                    if not self.flow_active:
                        await self.perform_seek()  # as faust's getmany: back to the committed offsets
                        continue
                    by_handler: dict[Any, list] = {}
                    for tp, recs in records.items():
                        if active is not None and tp not in active and tp not in self._buffered_partitions:
                            continue
                        handler = handlers.get(tp.topic)
                        if handler is None:
                            # faust's rule: records below the read offset were delivered already
                            last_read = read_offset[tp]
                            if last_read is not None and recs[0].offset < last_read:
                                recs = [r for r in recs if r.offset >= last_read]
                            if recs:
                                await self._per_message(tp, recs)
                            continue
                        handed = self._batch_next.get(tp)
                        if handed is not None and recs[0].offset < handed:
                            recs = [r for r in recs if r.offset >= handed]
                        if recs:
                            by_handler.setdefault(handler, []).append((tp, recs))
                    if not by_handler:
                        continue
                    if not self.flow_active or self.app.consumer_generation_id != generation:
                        # a rebalance or a seek began while faust's route was fed: faust reads these
                        # again from the committed offsets (no await from this check to the update)
                        continue
                    for batches in by_handler.values():
                        for tp, recs in batches:
                            self._batch_next[tp] = recs[-1].offset + 1
                    for handler, batches in by_handler.items():
                        # bounded: a full queue holds the fetch loop back (and with it faust's route)
                        await queue.put((handler, batches, generation))
                    self.diag.unset_flag(CONSUMER_FETCHING)
            except self.consumer_stopped_errors:
                if self.transport.app.should_stop:
                    return
                raise
            except asyncio.CancelledError:
                if self.transport.app.should_stop:
                    return
                raise
            finally:
                self.diag.unset_flag(CONSUMER_FETCHING)

        async def _run_batches(self, queue: asyncio.Queue) -> None:
            """The handler's loop: one batch at a time, in the order read."""
            while True:
                handler, batches, generation = await queue.get()
                # As faust's Conductor.on_message: wait while flow control is suspended
                # (rebalance, table recovery), so that no batch meets a half-recovered table.
                await self.app.flow_control.acquire()
                if not self.flow_active or self.app.consumer_generation_id != generation:
                    continue  # read before a rebalance: faust's seek reads it again
                todo = []
                for tp, recs in batches:
                    done = self._batch_done.get(tp)
                    if done is not None and recs[0].offset < done:
                        # handled already (read twice after a seek back to the committed offset)
                        recs = [r for r in recs if r.offset >= done]
                    if recs:
                        todo.append((tp, recs))
                if not todo:
                    continue
                self._handler_idle.clear()
                try:
                    await handler(todo)
                except Exception as error:  # as faust's consumer does with errors it cannot handle
                    await self.crash(error)
                    return
                finally:
                    self._handler_idle.set()
                handled = 0
                for tp, recs in todo:
                    self._batch_done[tp] = recs[-1].offset + 1
                    self._acked[tp]  # (a defaultdict) lists tp among the partitions faust's commit considers
                    self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                    handled += len(recs)
                if self._commit_every is not None:
                    self._n_acked += handled
                    if self._n_acked >= self._commit_every:
                        self._n_acked = 0
                        await self.commit()

        async def _per_message(self, tp, recs) -> None:
            """faust's own route (changelogs, ordinary agents), as its ``_drain_messages``."""
            callback = self.callback
            for record in recs:
                message = self._to_message(tp, record)
                offset = message.offset
                r_offset = self._read_offset[tp]
                if r_offset is not None and offset - r_offset > 1 and self.app.topics.acks_enabled_for(tp.topic):
                    await self._add_gap(tp, r_offset + 1, offset)
                await self.wait_first(callback(message), self.suspend_flow.wait())
                self._read_offset[tp] = offset

    class BatchTransport(faust_aiokafka.Transport):
        Consumer = BatchConsumer

    class BatchApp(faust.App):
        """A faust App whose topics may have a batch handler (:meth:`batch_agent`)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.batch_handlers: dict[str, BatchHandler] = {}
            super().__init__(*args, **kwargs)

        def _new_transport(self):
            return BatchTransport(self.conf.broker_consumer, self)

        def batch_agent(self, topic) -> Callable[[BatchHandler], BatchHandler]:
            """Register ``async def handler(batches)`` for every topic of ``topic``
            (a faust topic): subscribed, and co-partitioned by faust's assignor."""

            def register(fn: BatchHandler) -> BatchHandler:
                for name in topic.topics:
                    self.batch_handlers[name] = fn
                self.topics.add(topic)
                return fn

            return register

    return BatchApp
