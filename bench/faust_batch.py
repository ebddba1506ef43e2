"""faust's per-message route against the monitor's batch route (:mod:`driftline.streams.batch_input`).

Measures, in one run on the embedded broker: raw aiokafka, the no-op faust
agent (``bench/monitor.py``'s) and a faust app whose handler gets record
batches through :mod:`driftline.streams.batch_input`; then checks its commits: a
kill -9 mid-stream commits nothing past what was handled, a restart handles
every offset at least once, and a clean stop commits to the end.

Run: ``.venv/bin/python bench/faust_batch.py [--events 50000] [--bulk-events 200000]``
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

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from driftline.broker import EmbeddedBroker  # noqa: E402
from driftline.config import load_settings  # noqa: E402

# -- child process: an app using the batch path --------------------------------------------------
def batch_child(expected: int, mode: str, sleep_per_batch: float) -> None:
    """``mode``: ``count`` (exit at ``expected``) or ``serve`` (run until signalled)."""
    import logging

    import faust

    from driftline.streams.batch_input import batch_app_class

    logging.basicConfig(level=os.environ.get("NOOP_LOG", "WARNING"))
    settings = load_settings()
    group = os.environ.get("BATCH_GROUP", f"{settings.topic_prefix}batch")
    app = batch_app_class()(group, store="memory://", autodiscover=False, web_enabled=False,
                            topic_partitions=4, broker_session_timeout=6.0, broker_heartbeat_interval=1.0,
                            broker_commit_interval=float(os.environ.get("BATCH_COMMIT_INTERVAL", "2.8")),
                            broker_max_poll_records=int(os.environ["BATCH_MAX_POLL"])
                            if os.environ.get("BATCH_MAX_POLL") else None,
                            consumer_auto_offset_reset="earliest", **settings.faust_broker_options())
    topic = app.topic(*os.environ.get("BATCH_TOPICS", settings.topics.predictions).split(","),
                      key_serializer="raw", value_serializer="raw")
    state = {"seen": 0, "first": None, "batches": 0, "first_batch": 0}
    log = open(os.environ["BATCH_LOG"], "a") if os.environ.get("BATCH_LOG") else None

    @app.batch_agent(topic)
    async def handle(batches):
        size = sum(len(records) for _tp, records in batches)
        if state["first"] is None:
            # The clock starts after the first read (what was prefetched during start-up is not
            # counted), as in raw_consume_fair.
            state["first"], state["first_batch"] = time.perf_counter(), size
        state["seen"] += size
        state["batches"] += 1
        if log is not None:  # what was handled, for the at-least-once check
            log.write("".join(f"{tp.topic} {tp.partition} {r.offset}\n" for tp, records in batches for r in records))
            log.flush()
        if sleep_per_batch:
            await asyncio.sleep(sleep_per_batch)
        if mode == "count" and state["seen"] >= expected:
            print(json.dumps({"seconds": time.perf_counter() - state["first"], "seen": state["seen"],
                              "counted": state["seen"] - state["first_batch"], "batches": state["batches"]}),
                  flush=True)
            os._exit(0)

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
    from ListOffsets corrected by a fetch (``driftline.streams.offsets``, read only):
    tansu's ListOffsets is short after multi-record batches (bench/tansu_end_offsets.py).
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from driftline.streams.offsets import verified_end_offsets

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
    batch = batch_run(settings, count)
    rate = batch["counted"] / batch["seconds"]  # messages/s
    print(f"  {'faust + batch route (batch_input)':34} {rate * per:>12,.0f} ev/s  ({rate:>10,.0f} msg/s; "
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000, help="single-event section size")
    parser.add_argument("--bulk-events", type=int, default=200_000, help="bulk section size")
    parser.add_argument("--only", default="single,bulk,correctness")
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
    finally:
        broker.stop()
    print(f"\nchecks {'passed' if ok else 'FAILED'}")


if __name__ == "__main__":
    main()
