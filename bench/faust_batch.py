"""Prototype: a faust-compatible input path that hands raw record batches to a handler.

Study for issue 10 item 3 (not a product change). Faust's own per-message path
(``Consumer._drain_messages`` -> ``Service.wait_first(callback(message), ...)``
-> ``Conductor.on_message`` -> channel queue -> ``Stream._c_aiter`` -> agent)
costs several event-loop iterations, ~4 tasks and ~11 loop callbacks per
message. This path keeps faust's app, group membership/rebalancing, assignor
(co-partitioning), table recovery and commit loop, and replaces only the
per-message delivery for the topics given a batch handler:

* :class:`BatchConsumer` subclasses faust's aiokafka ``Consumer`` and overrides
  ``_drain_messages``: each ``getmany`` result for a batch topic partition goes
  to ``await handler(tp, records)`` (aiokafka ``ConsumerRecord`` objects:
  ``offset``, ``key``, ``value``, ``timestamp``) with faust's current event set
  to a stand-in for that partition, so table writes go to the co-partitioned
  changelog partition. Records of other topics (table changelogs during
  recovery, ordinary agents) take faust's usual per-message route.
* After the handler returns, ``offset + 1`` of the batch's last record is kept
  in ``_batch_done[tp]``; ``_new_offset`` (what faust's commit loop asks for
  each partition) returns it, so faust's own ``commit()`` (timer, rebalance,
  stop) commits it after flushing the producer (changelog writes first).
* ``wait_empty`` (faust's "wait for in-flight messages" before rebalance or
  stop) also waits for the batch in progress.

Run: ``.venv/bin/python bench/faust_batch.py [--events 50000] [--bulk-events 200000]``
measures raw aiokafka, the no-op faust agent (``bench/monitor.py``'s) and this
path in one run on the embedded broker, then checks commits (clean stop,
kill -9 + restart) and a table written from the handler being recovered.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
import weakref
from typing import Any, Awaitable, Callable

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from driftline.broker import EmbeddedBroker  # noqa: E402
from driftline.config import load_settings  # noqa: E402

BatchHandler = Callable[[Any, list], Awaitable[None]]


# -- the prototype -------------------------------------------------------------------------------
def _classes():
    """Build the faust subclasses lazily (faust import is slow)."""
    import faust
    from faust.streams import _current_event
    from faust.transport.consumer import CONSUMER_FETCHING
    from faust.transport.drivers import aiokafka as faust_aiokafka

    class _BatchMessage:
        """What tables read from ``current_event().message``."""

        __slots__ = ("topic", "partition", "tp", "offset", "__weakref__")

        def __init__(self, tp):
            self.topic, self.partition, self.tp, self.offset = tp.topic, tp.partition, tp, None

    class _BatchEvent:
        __slots__ = ("message", "__weakref__")

        def __init__(self, tp):
            self.message = _BatchMessage(tp)

    class BatchConsumer(faust_aiokafka.Consumer):
        """faust's aiokafka consumer with a batch route for some topics."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._batch_done: dict = {}
            self._batch_idle = asyncio.Event()
            self._batch_idle.set()
            self._events: dict = {}

        def _new_offset(self, tp):
            done = self._batch_done.get(tp)
            if done is not None:
                # Batch-owned partition: every record below ``done`` was handled, in order.
                return done
            return super()._new_offset(tp)

        async def on_partitions_revoked(self, revoked) -> None:
            # faust drops the acks of revoked partitions before its own revoke-time commit (it
            # iterates ``_acked``, popped first); commit the handled batches while the generation
            # is still ours, so a rebalance does not re-deliver a commit interval's work.
            await self._batch_idle.wait()
            mine = {tp for tp in revoked if tp in self._batch_done}
            if mine:
                await self.commit(topics=mine)
            await super().on_partitions_revoked(revoked)
            for tp in revoked:
                self._batch_done.pop(tp, None)

        async def highwaters(self, *partitions):
            # As streams/app.py does: tansu's ListOffsets stops short of the last record batch, and
            # faust's changelog recovery reads only up to it (bench/tansu_end_offsets.py).
            listed = await super().highwaters(*partitions)
            bootstrap = getattr(self.app, "verify_end_offsets_on", None)
            if not bootstrap:
                return listed
            from streams.offsets import verified_end_offsets

            return await verified_end_offsets(bootstrap, listed, quiet=True)

        async def wait_empty(self) -> None:
            await self._batch_idle.wait()
            await super().wait_empty()

        async def _drain_messages(self, fetcher) -> None:  # pragma: no cover - the fetcher's loop
            handlers: dict[str, BatchHandler] = self.app.batch_handlers
            callback = self.callback
            consumer_should_stop = self._stopped.is_set
            fetcher_should_stop = fetcher._stopped.is_set
            read_offset = self._read_offset
            acked = self._acked
            try:
                while not (consumer_should_stop() or fetcher_should_stop()):
                    self.diag.set_flag(CONSUMER_FETCHING)
                    records, active = await self._wait_next_records(1.0)
                    generation = self.app.consumer_generation_id
                    await asyncio.sleep(0)
                    if not records or self.should_stop:
                        continue
                    if not self.flow_active:
                        await self.perform_seek()  # as faust's getmany: back to committed offsets
                        continue
                    for tp, recs in records.items():
                        if not self.flow_active or self.app.consumer_generation_id != generation:
                            break
                        if active is not None and tp not in active and tp not in self._buffered_partitions:
                            continue
                        handler = handlers.get(tp.topic)
                        last_read = read_offset[tp]
                        if last_read is not None and recs[0].offset < last_read:
                            # faust's rule (offset >= read offset): after a seek the read offset is
                            # the next offset to read, not the last one read.
                            recs = [r for r in recs if r.offset >= last_read]
                            if not recs:
                                continue
                        if handler is None:
                            await self._per_message(tp, recs, callback)
                            continue
                        done = self._batch_done.get(tp)
                        if done is not None and recs[0].offset < done:
                            # Handled already in this assignment (faust seeks back to the committed
                            # offset after table recovery): not again.
                            recs = [r for r in recs if r.offset >= done]
                            if not recs:
                                continue
                        # As faust's Conductor.on_message: wait while flow control is suspended
                        # (rebalance, table recovery), so no batch meets a half-recovered table.
                        await self.app.flow_control.acquire()
                        if not self.flow_active or self.app.consumer_generation_id != generation:
                            break
                        event = self._events.get(tp) or self._events.setdefault(tp, _BatchEvent(tp))
                        _current_event.set(weakref.ref(event))
                        self._batch_idle.clear()
                        try:
                            await handler(tp, recs)
                        finally:
                            self._batch_idle.set()
                            _current_event.set(None)
                        end = recs[-1].offset
                        read_offset[tp] = end
                        self._batch_done[tp] = end + 1
                        acked[tp]  # (defaultdict) lists tp among those faust's commit considers
                        self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                        if self._commit_every is not None:
                            self._n_acked += len(recs)
                            if self._n_acked >= self._commit_every:
                                self._n_acked = 0
                                await self.commit()
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

        async def _per_message(self, tp, recs, callback) -> None:
            """faust's own route (changelogs, ordinary agents), as in its _drain_messages."""
            to_message = self._to_message
            direct = self.app.direct_callback
            for record in recs:
                message = to_message(tp, record)
                offset = message.offset
                r_offset = self._read_offset[tp]
                if r_offset is not None and offset - r_offset > 1 and self.app.topics.acks_enabled_for(tp.topic):
                    await self._add_gap(tp, r_offset + 1, offset)
                if direct:  # ablation: what faust's per-message wait_first (2 tasks + asyncio.wait) costs
                    await callback(message)
                else:
                    await self.wait_first(callback(message), self.suspend_flow.wait())
                self._read_offset[tp] = offset

    class BatchTransport(faust_aiokafka.Transport):
        Consumer = BatchConsumer

    class BatchApp(faust.App):
        """A faust App whose topics may have a batch handler (``@app.batch_agent(topic)``)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.batch_handlers: dict[str, BatchHandler] = {}
            self.direct_callback = False
            super().__init__(*args, **kwargs)

        def _new_transport(self):
            return BatchTransport(self.conf.broker_consumer, self)

        def batch_agent(self, topic):
            """Register ``async def handler(tp, records)`` for every topic of ``topic``."""

            def register(fn: BatchHandler) -> BatchHandler:
                for name in topic.topics:
                    self.batch_handlers[name] = fn
                self.topics.add(topic)  # subscribed, and co-partitioned by faust's assignor
                return fn

            return register

    return BatchApp


# -- child process: an app using the batch path --------------------------------------------------
def batch_child(expected: int, mode: str, sleep_per_batch: float) -> None:
    """``mode``: ``count`` (exit at ``expected``), ``serve`` (run until
    signalled; print progress), ``table`` (count per key in a table)."""
    import logging

    import faust

    logging.basicConfig(level=os.environ.get("NOOP_LOG", "WARNING"))
    settings = load_settings()
    BatchApp = _classes()
    group = os.environ.get("BATCH_GROUP", f"{settings.topic_prefix}batch")
    app = BatchApp(group, store="memory://", autodiscover=False, web_enabled=False,
                   topic_partitions=4, broker_session_timeout=6.0, broker_heartbeat_interval=1.0,
                   broker_commit_interval=float(os.environ.get("BATCH_COMMIT_INTERVAL", "2.8")),
                   broker_max_poll_records=int(os.environ["BATCH_MAX_POLL"]) if os.environ.get("BATCH_MAX_POLL")
                   else None,
                   consumer_auto_offset_reset="earliest", **settings.faust_broker_options())
    if os.environ.get("BATCH_VERIFY_END_OFFSETS", "1") == "1":
        app.verify_end_offsets_on = settings.bootstrap_servers
    topic = app.topic(*os.environ.get("BATCH_TOPICS", settings.topics.predictions).split(","),
                      key_serializer="raw", value_serializer="raw")
    table = app.Table("seen", default=int, partitions=4) if mode == "table" else None
    state = {"seen": 0, "first": None, "batches": 0, "first_batch": 0}
    log = open(os.environ["BATCH_LOG"], "a") if os.environ.get("BATCH_LOG") else None
    if mode.startswith("agent"):  # ablation: faust's per-message route to a counting agent, via BatchConsumer
        app.direct_callback = mode == "agent-direct"

        @app.agent(topic)
        async def count(stream):
            async for _value in stream:
                if state["first"] is None:
                    state["first"] = time.perf_counter()
                state["seen"] += 1
                if state["seen"] >= expected:
                    print(json.dumps({"seconds": time.perf_counter() - state["first"], "seen": state["seen"],
                                      "counted": state["seen"], "batches": 0}), flush=True)
                    os._exit(0)

        faust.Worker(app, loglevel="WARNING", quiet=True, override_logging=False).execute_from_commandline()
        return

    @app.batch_agent(topic)
    async def handle(tp, records):
        if state["first"] is None:
            # The clock starts after the first batch (what was prefetched during start-up is not
            # counted), as in raw_consume_fair.
            state["first"], state["first_batch"] = time.perf_counter(), len(records)
        state["seen"] += len(records)
        state["batches"] += 1
        if log is not None:  # what was handled, for the at-least-once check
            log.write("".join(f"{tp.topic} {tp.partition} {r.offset}\n" for r in records))
            log.flush()
        if table is not None:
            for r in records:  # key = the input message's key: co-partitioned with the input
                table[r.key.decode()] = tp.partition
        if sleep_per_batch:
            await asyncio.sleep(sleep_per_batch)
        if mode == "count" and state["seen"] >= expected:
            print(json.dumps({"seconds": time.perf_counter() - state["first"], "seen": state["seen"],
                              "counted": state["seen"] - state["first_batch"], "batches": state["batches"]}),
                  flush=True)
            os._exit(0)

    if table is not None:
        @app.timer(1.0)
        async def report():
            print(json.dumps({"table": dict(table.items()), "seen": state["seen"]}), flush=True)

    worker = faust.Worker(app, loglevel=os.environ.get("NOOP_LOG", "WARNING"), quiet=True, override_logging=False)
    worker.execute_from_commandline()


# -- parent: measure and check ------------------------------------------------------------------------
def _child_cmd(expected: int, mode: str, sleep: float = 0.0) -> list[str]:
    return [sys.executable, os.path.abspath(__file__), "--child", mode, str(expected), str(sleep)]


def batch_run(settings, expected: int, mode: str = "count") -> dict:
    from bench.monitor import ROOT, child_env

    proc = subprocess.run(_child_cmd(expected, mode), env=child_env(settings), capture_output=True,
                          text=True, timeout=900, cwd=ROOT)
    match = re.search(r'\{"seconds".*\}', proc.stdout)
    if match:
        return json.loads(match.group(0))
    raise RuntimeError(f"batch child failed:\n{proc.stderr[-3000:]}")


def committed_and_end(bootstrap: str, group: str, topics: list[str]) -> tuple[dict, dict]:
    """(committed offsets of ``group``, end offsets) per (topic, partition).

    Committed offsets with aiokafka's ``committed`` (OffsetFetch); end offsets
    from ListOffsets corrected by a fetch (``streams.offsets``, read only):
    tansu's ListOffsets is short after multi-record batches (bench/tansu_end_offsets.py).
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streams.offsets import verified_end_offsets

    async def read() -> tuple[dict, dict]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
            committed = {(tp.topic, tp.partition): (await consumer.committed(tp)) or 0 for tp in tps}
            listed = await consumer.end_offsets(tps)
        finally:
            await consumer.stop()
        end = await verified_end_offsets(bootstrap, listed, quiet=True)
        return committed, {(tp.topic, tp.partition): off for tp, off in end.items()}

    return asyncio.run(read())


async def raw_consume_fair(settings, expected_messages: int) -> tuple[float, int]:
    """(seconds, messages counted) for one aiokafka consumer in a group (the
    prototype's rule: the clock starts after the first ``getmany`` batch, whose
    records are not counted)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(settings.topics.predictions, settings.topics.labels,
                                bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                                group_id=f"raw-{uuid.uuid4().hex[:6]}", auto_offset_reset="earliest",
                                max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    try:
        seen, first, first_batch, last = 0, None, 0, None
        deadline = time.monotonic() + 600
        while seen < expected_messages and time.monotonic() < deadline:
            batch = sum(len(r) for r in (await consumer.getmany(timeout_ms=500)).values())
            if batch:
                seen += batch
                last = time.perf_counter()
                if first is None:
                    first, first_batch = last, batch
        if seen < expected_messages:
            raise RuntimeError(f"raw consumer read {seen} of {expected_messages} messages")
        return last - first, seen - first_batch
    finally:
        await consumer.stop()


def throughput(bootstrap: str, n: int, bulk: bool, registry: str) -> None:
    from bench.monitor import make_messages, new_settings, noop_faust, publish, raw_consume

    settings = new_settings(bootstrap, registry)
    messages = make_messages(n, ["churn"], bulk=bulk)
    count = len(messages["predictions"]) + len(messages["labels"])
    asyncio.run(publish(settings, messages))
    del messages
    kind = "bulk messages of 1000 events" if bulk else "one event per message"
    print(f"\n== {n:,} events ({kind}), {count:,} messages, 2 topics x 4 partitions", flush=True)
    os.environ["BATCH_TOPICS"] = f"{settings.topics.predictions},{settings.topics.labels}"
    raw = asyncio.run(raw_consume(settings, count))
    print(f"  {'raw aiokafka consumer (monitor.py)':34} {n / raw:>12,.0f} ev/s  ({count / raw:>10,.0f} msg/s)",
          flush=True)
    raw_s, raw_counted = asyncio.run(raw_consume_fair(settings, count))
    raw_rate = raw_counted / raw_s  # messages/s
    per = n / count
    print(f"  {'raw aiokafka, group, first batch out':34} {raw_rate * per:>12,.0f} ev/s  ({raw_rate:>10,.0f} msg/s; "
          f"{raw_counted:,} counted)", flush=True)
    noop = noop_faust(settings, count)
    print(f"  {'do-nothing faust agent':34} {n / noop:>12,.0f} ev/s  ({count / noop:>10,.0f} msg/s; "
          f"{noop / count * 1e6:.1f} us/msg)", flush=True)
    if not bulk and os.environ.get("BATCH_ABLATION") == "1":  # (the direct variant stalled once at 200,000 messages)
        for mode, label in (("agent", "no-op agent via BatchConsumer route"),
                            ("agent-direct", "  same, callback awaited directly")):
            ab = batch_run(settings, count, mode)
            print(f"  {label:34} {n / ab['seconds']:>12,.0f} ev/s  ({count / ab['seconds']:>10,.0f} msg/s; "
                  f"{ab['seconds'] / count * 1e6:.1f} us/msg)", flush=True)
    batch = batch_run(settings, count)
    rate = batch["counted"] / batch["seconds"]  # messages/s
    print(f"  {'faust + batch handler (prototype)':34} {rate * per:>12,.0f} ev/s  ({rate:>10,.0f} msg/s; "
          f"{1e6 / rate:.2f} us/msg; {batch['batches']:,} batches, {batch['counted']:,} counted; "
          f"{rate / (count / noop):.1f}x the no-op agent, {rate / raw_rate:.2f}x raw's)", flush=True)


def _offsets_from_log(path: str) -> list[tuple[str, int, int]]:
    with open(path) as handle:
        return [(t, int(p), int(o)) for t, p, o in (line.split() for line in handle if line.strip())]


def correctness(bootstrap: str, registry: str) -> bool:
    """Clean stop: committed == end. kill -9 mid-stream, restart: every offset
    handled at least once, re-delivered ones only at or after the committed point."""
    from bench.monitor import ROOT, child_env, make_messages, new_settings, publish

    ok = True
    settings = new_settings(bootstrap, registry)
    topics = [settings.topics.predictions, settings.topics.labels]
    asyncio.run(publish(settings, make_messages(20_000, ["churn"], bulk=False)))
    env = child_env(settings)
    group = f"{settings.topic_prefix}batch-{uuid.uuid4().hex[:6]}"
    log_path = f"/tmp/faust_batch_{uuid.uuid4().hex[:6]}.log"
    env.update(BATCH_TOPICS=",".join(topics), BATCH_GROUP=group, BATCH_LOG=log_path, BATCH_COMMIT_INTERVAL="1.0")
    _, end = committed_and_end(bootstrap, group, topics)
    total = sum(end.values())
    print(f"\n== correctness: {total:,} single-event messages on 2 topics x 4 partitions, group {group}")

    # 1) slow handler (so it is mid-stream), kill -9, check what was committed
    proc = subprocess.Popen(_child_cmd(0, "serve", 0.05), env={**env, "BATCH_MAX_POLL": "200"}, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if os.path.exists(log_path) and len(_offsets_from_log(log_path)) > total // 4:
            break
    time.sleep(2.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    handled_before = _offsets_from_log(log_path)
    committed_kill, _ = committed_and_end(bootstrap, group, topics)
    committed_total = sum(committed_kill.values())
    print(f"  kill -9 after {len(handled_before):,} handled; committed then: {committed_total:,} "
          f"(each partition's committed offset <= what it handled: ", end="")
    highest: dict = {}
    for t, p, o in handled_before:
        highest[(t, p)] = max(highest.get((t, p), -1), o)
    bounded = all(committed_kill.get(k, 0) <= highest.get(k, -1) + 1 for k in end)
    print(f"{bounded})")
    ok &= bounded and committed_total > 0

    # 2) restart, fast, run to the end, stop cleanly (SIGTERM)
    proc = subprocess.Popen(_child_cmd(0, "serve", 0.0), env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        time.sleep(0.5)
        handled = _offsets_from_log(log_path)
        if len({x for x in handled}) >= total:
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    handled = _offsets_from_log(log_path)
    after = handled[len(handled_before):]
    distinct = set(handled)
    expected = {(t, p, o) for (t, p), e in end.items() for o in range(e)}
    missing = expected - distinct
    redelivered = [x for x in after if x in set(handled_before)]
    below_commit = [x for x in after if x[2] < committed_kill.get((x[0], x[1]), 0)]
    committed, end2 = committed_and_end(bootstrap, group, topics)
    clean = committed == end2
    print(f"  restart: handled {len(after):,} more; distinct offsets handled {len(distinct):,} of {total:,} "
          f"(missing {len(missing)}); re-delivered after kill -9: {len(redelivered):,} "
          f"(any below the committed offset: {len(below_commit)})")
    print(f"  clean stop (SIGTERM, exit {proc.returncode}): committed == end offsets: {clean} "
          f"({sum(committed.values()):,} vs {sum(end2.values()):,})")
    if missing:
        sample = sorted(missing)[:10]
        print(f"  missing (first 10): {sample}; committed at kill: "
              f"{ {k: v for k, v in committed_kill.items() if k in {(t, p) for t, p, _o in sample}} }; "
              f"highest handled before kill: { {k: highest.get(k) for k in {(t, p) for t, p, _o in sample}} }")
    ok &= not missing and not below_commit and clean
    if ok:
        os.unlink(log_path)
    else:
        print(f"  (handled-offsets log kept: {log_path})")
    return ok


def table_check(bootstrap: str, registry: str) -> bool:
    """A table written from the batch handler: changelog written, recovered after restart."""
    from bench.monitor import ROOT, child_env, make_messages, new_settings, publish

    settings = new_settings(bootstrap, registry)
    topics = [settings.topics.predictions]
    messages = make_messages(4_000, ["churn"], bulk=False)
    asyncio.run(publish(settings, {"predictions": messages["predictions"], "labels": []}))
    env = child_env(settings)
    group = f"{settings.topic_prefix}table-{uuid.uuid4().hex[:6]}"
    env.update(BATCH_TOPICS=",".join(topics), BATCH_GROUP=group, BATCH_COMMIT_INTERVAL="1.0")
    expected = {key.decode(): part for part, key, _v in messages["predictions"]}
    print(f"\n== table written from the batch handler (memory store; table[message key] = input partition; "
          f"{len(messages['predictions']):,} messages)")

    def run_until(predicate, seconds: float) -> dict:
        stderr = open(os.environ["TABLE_STDERR"], "a") if os.environ.get("TABLE_STDERR") else subprocess.DEVNULL
        proc = subprocess.Popen(_child_cmd(0, "table"), env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=stderr, text=True)
        last: dict = {}
        deadline = time.monotonic() + seconds
        try:
            for line in proc.stdout:
                match = re.search(r'\{"table".*\}', line)
                if match:
                    last = json.loads(match.group(0))
                    if predicate(last) or time.monotonic() > deadline:
                        break
        finally:
            time.sleep(2.0)  # past a commit interval
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=60)  # keeps reading: a full pipe would block its timer's print
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
        committed, end = committed_and_end(bootstrap, group, topics)
        print(f"    (stopped, exit {proc.returncode}: committed {sum(committed.values()):,} of "
              f"{sum(end.values()):,} input offsets)")
        return last

    first = run_until(lambda s: s["table"] == expected, 120)
    ok1 = first.get("table") == expected
    print(f"  first run: table == expected: {ok1} (seen {first.get('seen')}, {len(first.get('table', {})):,} keys)")
    # restart: nothing new to read; the memory store must be rebuilt from the changelog
    second = run_until(lambda s: s["table"] == expected, 60)
    ok2 = second.get("table") == expected
    if not ok2:
        lost = set(expected) - set(second.get("table", {}))
        print(f"  (recovered {len(second.get('table', {})):,} keys; {len(lost):,} missing)")
    print(f"  after restart: recovered table == expected: {ok2} (new input handled: {second.get('seen')})")
    more = make_messages(1_000, ["churn"], bulk=False, first=4_000)
    asyncio.run(publish(settings, {"predictions": more["predictions"], "labels": []}))
    expected.update({key.decode(): part for part, key, _v in more["predictions"]})
    third = run_until(lambda s: s["table"] == expected, 60)
    ok3 = third.get("table") == expected
    print(f"  third run after 1,000 more: table == expected: {ok3} (new input handled: {third.get('seen')}, "
          f"{len(third.get('table', {})):,} keys)")
    # co-partitioning: every changelog record sits in the partition its input message came from
    changelog = f"{group}-seen-changelog"
    placed = asyncio.run(_changelog_partitions(bootstrap, changelog))
    wrong = sum(1 for key, part in placed.items() if expected.get(key) != part)
    print(f"  changelog {changelog}: {len(placed):,} keys; in another partition than their input: {wrong}")
    return ok1 and ok2 and ok3 and wrong == 0 and len(placed) == len(expected)


async def _changelog_partitions(bootstrap: str, topic: str) -> dict[str, int]:
    """{key: partition} of every record of ``topic`` (read to its fetch high watermark)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    out: dict[str, int] = {}
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + 30
        idle = 0
        while time.monotonic() < deadline and idle < 3:
            batch = await consumer.getmany(timeout_ms=500)
            idle = 0 if any(batch.values()) else idle + 1
            for tp, records in batch.items():
                for r in records:
                    out[r.key.decode().strip('"')] = tp.partition
    finally:
        await consumer.stop()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000, help="single-event section size")
    parser.add_argument("--bulk-events", type=int, default=200_000, help="bulk section size")
    parser.add_argument("--only", default="single,bulk,correctness,table")
    parser.add_argument("--child", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        batch_child(int(args.child[1]), args.child[0], float(args.child[2]))
        return
    wanted = set(args.only.split(","))
    import tempfile

    workdir = tempfile.mkdtemp(prefix="faust-batch-")
    broker = EmbeddedBroker()
    broker.start()
    ok = True
    try:
        bootstrap = broker.bootstrap_servers
        registry = os.path.join(workdir, "registry")
        print(f"broker: embedded tansu; machine: {os.cpu_count()} cores (shared with other work)")
        if "single" in wanted:
            throughput(bootstrap, args.events, False, registry)
        if "bulk" in wanted:
            throughput(bootstrap, args.bulk_events, True, registry)
        if "correctness" in wanted:
            ok &= correctness(bootstrap, registry)
        if "table" in wanted:
            ok &= table_check(bootstrap, registry)
    finally:
        broker.stop()
    print(f"\nchecks {'passed' if ok else 'FAILED'}")


if __name__ == "__main__":
    main()
