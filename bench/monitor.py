"""Throughput and memory of the monitor (``driftline monitor``) on a real broker.

Run: ``.venv/bin/python bench/monitor.py [--events 1000000] [--single-events 50000]
[--scale-events 200000] [--bootstrap HOST:PORT] [--skip-detectors] [--only bulk,single]
[--quix-python PATH | --skip-quix]``

Without ``--bootstrap`` it starts the embedded tansu broker. Every section
publishes its data first (predictions and their labels, 10 numeric
features, class probabilities and latency: every metric, per-feature data
drift, prediction drift, outliers, latency and concept drift are on with the
default policy), then measures, in the same run:

* raw aiokafka: one consumer reading the same topics (no decoding);
* a do-nothing faust agent on the same topics (a separate process);
* a hand-written quixstreams + River app (``bench/quix_baseline.py``: JSON,
  a dict join, River Accuracy/F1/LogLoss/ROCAUC, ADWIN per feature and on
  errors) in its own virtual environment, ``.bench-venv/quixstreams``
  (made with ``pip install quixstreams river`` when missing; or
  ``--quix-python``): the measuring stick, with its peak RSS;
* the monitor: a real ``python -m driftline.streams`` process; throughput is the time
  from stage 1's first read (its ``prediction``/``label`` counters) to the
  last event stage 2 applied (``applied_prediction``/``applied_joined``;
  Prometheus counters polled every 0.25 s), so
  process start and group join are not counted. An *event* is one
  prediction together with its label.

Then peak RSS of the monitor process (``VmHWM``) after the bulk section
(all predictions before all labels: the join holds every prediction) and
after a run whose labels trail their predictions by 20,000 events, one and
two monitor processes over four partitions (four models, data
published after the group is ready), and detection delay / false alarms of
the default detectors (``bench/monitor_detectors.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from driftline.broker import EmbeddedBroker, free_port  # noqa: E402
from driftline.config import Settings, load_settings  # noqa: E402
from driftline.sdk import partition_for  # noqa: E402
from driftline.topics import create_topics  # noqa: E402

PARTITIONS = 4
BULK = 1000  # events per bulk message
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- data ---------------------------------------------------------------------------------
def make_messages(n: int, models: list[str], bulk: bool, seed: int = 1, first: int = 0):
    """Encoded ``(partition, key, value)`` messages for predictions and labels
    of events ``first`` .. ``first + n - 1``."""
    rng = random.Random(seed + first)
    preds: dict[int, list] = {p: [] for p in range(PARTITIONS)}
    labels: dict[int, list] = {p: [] for p in range(PARTITIONS)}
    base = 1_700_000_000.0
    for i in range(first, first + n):
        event_id = f"e{i}"
        model = models[i % len(models)]
        p1 = round(rng.random(), 4)
        predicted = int(p1 >= 0.5)
        truth = predicted if rng.random() < 0.8 else 1 - predicted
        part = partition_for(event_id, PARTITIONS)
        preds[part].append({"event_id": event_id, "model": model, "model_version": 1, "timestamp": base + i * 0.001,
                            "features": {f"f{k}": round(rng.gauss(0, 1), 4) for k in range(10)},
                            "prediction": predicted, "probabilities": {"0": round(1 - p1, 4), "1": p1},
                            "latency_ms": round(rng.uniform(1, 20), 2)})
        labels[part].append({"event_id": event_id, "model": model, "label": truth, "timestamp": base + i * 0.001 + 5})
    out = {"predictions": [], "labels": []}
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    for kind, groups in (("predictions", preds), ("labels", labels)):
        for part, records in groups.items():
            if bulk:
                for start in range(0, len(records), BULK):
                    chunk = records[start:start + BULK]
                    out[kind].append((part, chunk[0]["event_id"].encode(), dumps(chunk).encode()))
            else:
                out[kind].extend((part, r["event_id"].encode(), dumps(r).encode()) for r in records)
    return out


async def publish(settings: Settings, messages: dict) -> float:
    """Send everything (predictions first, then labels); seconds taken."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5,
                                max_batch_size=1024 * 1024, max_request_size=2 * 1024 * 1024)
    await producer.start()
    start = time.perf_counter()
    try:
        for kind, topic in (("predictions", settings.topics.predictions), ("labels", settings.topics.labels)):
            futures = []
            for part, key, value in messages[kind]:
                futures.append(await producer.send(topic, value, key=key, partition=part))
                if len(futures) >= 5000:
                    await asyncio.gather(*futures)
                    futures = []
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - start


def new_settings(bootstrap: str, registry: str) -> Settings:
    settings = load_settings(environ={}, bootstrap_servers=bootstrap, topic_prefix=f"b{uuid.uuid4().hex[:8]}.",
                             registry=registry)
    create_topics(settings, partitions=PARTITIONS)
    return settings


def child_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update(DRIFTLINE_BOOTSTRAP_SERVERS=settings.bootstrap_servers, DRIFTLINE_TOPIC_PREFIX=settings.topic_prefix,
               DRIFTLINE_REGISTRY=settings.registry, PYTHONUNBUFFERED="1", DRIFTLINE_LOG_LEVEL="INFO")
    return env


# -- baselines ------------------------------------------------------------------------------
async def raw_consume(settings: Settings, expected_messages: int) -> float:
    """Seconds from the first to the last message read by one aiokafka consumer."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                                max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in (settings.topics.predictions, settings.topics.labels)
               for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen, first, last = 0, None, None
        deadline = time.monotonic() + 600
        while seen < expected_messages and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                if records:
                    first = first or time.perf_counter()
                    seen += len(records)
                    last = time.perf_counter()
        if seen < expected_messages:
            raise RuntimeError(f"raw consumer read {seen} of {expected_messages} messages")
        return last - first
    finally:
        await consumer.stop()


def noop_faust_child(expected: int) -> None:
    """A faust app whose agent only counts messages; prints JSON timings."""
    import logging

    import faust

    logging.basicConfig(level=os.environ.get("NOOP_LOG", "WARNING"))
    settings = load_settings()
    app = faust.App(f"{settings.topic_prefix}noop", store="memory://", autodiscover=False, web_enabled=False,
                    topic_partitions=PARTITIONS, broker_session_timeout=6.0, broker_heartbeat_interval=1.0,
                    consumer_auto_offset_reset="earliest", **settings.faust_broker_options())
    topic = app.topic(settings.topics.predictions, settings.topics.labels, key_serializer="raw",
                      value_serializer="raw")
    state = {"seen": 0, "first": None}

    @app.agent(topic)
    async def count(stream):
        async for _value in stream:
            state["first"] = state["first"] or time.perf_counter()
            state["seen"] += 1
            if state["seen"] >= expected:
                print(json.dumps({"seconds": time.perf_counter() - state["first"], "seen": state["seen"]}),
                      flush=True)
                os._exit(0)

    worker = faust.Worker(app, loglevel=os.environ.get("NOOP_LOG", "WARNING"), quiet=True, override_logging=False)
    worker.execute_from_commandline()


def noop_faust(settings: Settings, expected_messages: int) -> float:
    proc = subprocess.run([sys.executable, __file__, "--noop-child", str(expected_messages)], env=child_env(settings),
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    match = re.search(r'\{"seconds".*\}', proc.stdout)  # (faust's terminal codes may precede it)
    if match:
        return json.loads(match.group(0))["seconds"]
    raise RuntimeError(f"no-op faust agent failed:\n{proc.stderr[-2000:]}")


PROFILE_DIR: str | None = None  # --profile
MEMTRACE_DIR: str | None = None  # --memtrace
MONITOR_ARGS: list[str] = []  # --monitor-args (memory section)
QUIX_VENV = os.path.join(ROOT, ".bench-venv", "quixstreams")


def quix_python(explicit: str | None) -> str:
    """The interpreter of the quixstreams + River baseline's own virtual
    environment, made on first use (a measuring stick, not a dependency)."""
    if explicit:
        return explicit
    python = os.path.join(QUIX_VENV, "bin", "python")
    if not os.path.exists(os.path.join(QUIX_VENV, ".installed")):
        print(f"  (making {os.path.relpath(QUIX_VENV, ROOT)}: pip install quixstreams river)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", QUIX_VENV], check=True)
        install = subprocess.run([python, "-m", "pip", "install", "--quiet", "quixstreams", "river"],
                                 capture_output=True, text=True)
        if install.returncode != 0:
            raise RuntimeError(f"pip install quixstreams river failed:\n{install.stderr[-2000:]}")
        open(os.path.join(QUIX_VENV, ".installed"), "w").close()
    return python


def quix_baseline(python: str, settings: Settings, n: int) -> dict:
    """Run bench/quix_baseline.py over the section's topics; its JSON summary."""
    script = os.path.join(ROOT, "bench", "quix_baseline.py")
    group = f"{settings.topic_prefix}quix-{uuid.uuid4().hex[:6]}"
    proc = subprocess.run([python, script, settings.bootstrap_servers, settings.topics.predictions,
                           settings.topics.labels, str(n), group], capture_output=True, text=True, timeout=1800,
                          cwd=ROOT)
    match = re.search(r'\{"seconds".*\}', proc.stdout)
    if proc.returncode == 0 and match:
        result = json.loads(match.group(0))
        if result["joined"] >= n:
            return result
    raise RuntimeError(f"quixstreams baseline failed (exit {proc.returncode}):\n{proc.stdout[-1000:]}"
                       f"{proc.stderr[-2000:]}")


# -- the monitor -----------------------------------------------------------------------------
class Monitor:
    """A real ``python -m driftline.streams`` process with its Prometheus port."""

    def __init__(self, settings: Settings, workdir: str, name: str, *extra: str, data: str | None = None):
        self.port = free_port()
        self.log_path = os.path.join(workdir, f"{name}.log")
        entry = ["-m", "driftline.streams"]
        if MEMTRACE_DIR:  # --memtrace: the monitor under bench/memtrace.py's sampler
            self.trace_path = os.path.join(MEMTRACE_DIR, f"{name}.jsonl")
            entry = [os.path.join(ROOT, "bench", "memtrace.py"), self.trace_path]
        command = [sys.executable, *entry, "--data-dir", os.path.join(workdir, f"data-{data or name}"),
                   "--metrics-port", str(self.port), "--snapshot-interval", "5", "--session-timeout", "6", *extra]
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            command, env=child_env(settings), stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT, cwd=ROOT)
        self.profiler = None
        if PROFILE_DIR:  # --profile: py-spy samples the whole run (collapsed stacks; summarised at stop)
            self.profile_path = os.path.join(PROFILE_DIR, f"{name}-{self.proc.pid}.raw")
            self.profiler = subprocess.Popen(
                [os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "-r", "250", "-f", "raw",
                 "-o", self.profile_path, "--pid", str(self.proc.pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def scrape(self) -> tuple[dict[str, float], dict[str, float]]:
        """One ``/metrics`` read: the ``driftline_events_processed_total`` counters
        by kind, and the CPU seconds of the monitor's own work by stage (``join``,
        ``models``: ``driftline_monitor_cpu_seconds_total``; the rest of the
        process's CPU is faust's, the Kafka client's and the event loop's)."""
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2).read().decode()
        except OSError:
            return {}, {}
        counters = {m.group(1): float(m.group(2)) for m in re.finditer(
            r'driftline_events_processed_total\{component="monitor",kind="(\w+)"\} (\S+)', text)}
        stages = {m.group(1): float(m.group(2)) for m in re.finditer(
            r'driftline_monitor_cpu_seconds_total\{stage="(\w+)"\} (\S+)', text)}
        return counters, stages

    def counters(self) -> dict[str, float]:
        return self.scrape()[0]

    def ready(self) -> bool:
        with open(self.log_path, "rb") as handle:
            return b"monitor ready" in handle.read()

    def replayed(self) -> int:
        """Join-state changelog records this process replayed (its ``join_state_ready`` lines)."""
        with open(self.log_path, "rb") as handle:
            text = handle.read().decode(errors="replace")
        return sum(int(m) for m in re.findall(r"event=join_state_ready .*?replayed=(\d+)", text))

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the process has used."""
        with open(f"/proc/{self.proc.pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def thread_cpu(self) -> dict[str, float]:
        """CPU seconds per thread (by thread name; the event loop is the
        process's first thread, faust's consumer runs aiokafka in its own)."""
        out: dict[str, float] = {}
        tick = os.sysconf("SC_CLK_TCK")
        for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
            try:
                with open(f"/proc/{self.proc.pid}/task/{tid}/stat") as handle:
                    text = handle.read()
            except OSError:
                continue
            name = "event loop" if tid == str(self.proc.pid) else text[text.index("(") + 1:text.rindex(")")]
            fields = text.rsplit(")", 1)[1].split()
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
        return out

    def rss_mb(self) -> tuple[float, float]:
        """(current, peak) resident set size in MB."""
        fields = {}
        with open(f"/proc/{self.proc.pid}/status") as handle:
            for line in handle:
                if line.startswith(("VmRSS", "VmHWM")):
                    key, value = line.split(":")
                    fields[key] = int(value.split()[0]) / 1024
        return fields["VmRSS"], fields["VmHWM"]

    def stop(self) -> None:
        if self.profiler is not None:
            self.profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            self.profiler.wait(60)
            self.profiler = None
            print_profile(self.profile_path)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


#: leaf frames of a thread that waits: py-spy samples them as busy here
_WAITING = (".select (selectors.py", "Condition.wait (threading.py", "_wait_for_tstate_lock (threading.py")


def print_profile(path: str, top: int = 25) -> None:
    """Where the monitor's CPU went: inclusive share of the busiest frames in
    py-spy's collapsed stacks, leaving out samples of threads that wait."""
    inclusive: Counter = Counter()
    busy = waiting = 0
    with open(path) as handle:
        for line in handle:
            stack, _, count = line.rstrip().rpartition(" ")
            frames = stack.split(";")
            if not frames[-1] or any(wait in frames[-1] for wait in _WAITING):
                waiting += int(count)
                continue
            busy += int(count)
            for frame in set(frames):
                inclusive[frame] += int(count)
    print(f"  profile: {busy} busy samples ({busy / 250:.1f} thread-seconds), {waiting} waiting left out; {path}")
    for frame, count in inclusive.most_common(top):
        print(f"    {count / max(1, busy):6.1%}  {frame[:140]}")


def watch(monitors: list[Monitor], n: int, timeout_s: float = 1800.0) -> tuple[float, float, dict[str, float]]:
    """(seconds, CPU seconds, CPU seconds by stage) from stage 1's first read
    (its ``input_message`` counter, counted as the read begins) to the last of
    ``n`` events applied by stage 2; CPU summed over the processes."""
    first = last = None
    cpu_first = 0.0
    stages_first: Counter = Counter()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        totals = {"applied_prediction": 0.0, "applied_joined": 0.0, "input_message": 0.0}
        stages: Counter = Counter()
        for monitor in monitors:
            if monitor.proc.poll() is not None:
                raise RuntimeError(f"monitor exited; see {monitor.log_path}")
            counters, by_stage = monitor.scrape()
            stages.update(by_stage)
            for key, value in counters.items():
                if key in totals:
                    totals[key] += value
        now = time.perf_counter()
        if first is None and totals["input_message"] > 0:
            first = now
            cpu_first = sum(monitor.cpu_seconds() for monitor in monitors)
            stages_first = Counter(stages)
        if totals["applied_prediction"] >= n and totals["applied_joined"] >= n:
            last = now
            cpu = sum(monitor.cpu_seconds() for monitor in monitors) - cpu_first
            stages.subtract(stages_first)
            return last - first, cpu, dict(stages)
        time.sleep(0.25)  # each poll is a /metrics scrape, which costs the monitor CPU
    raise RuntimeError(f"timed out; last counters {totals}")


def run_monitor(settings: Settings, workdir: str, n: int, name: str) -> dict:
    monitor = Monitor(settings, workdir, name)
    try:
        seconds, cpu, stages = watch([monitor], n)
        current, peak = monitor.rss_mb()
        counters = monitor.counters()
        threads = ", ".join(f"{name} {value:.1f} s" for name, value in
                            sorted(monitor.thread_cpu().items(), key=lambda kv: -kv[1]) if value >= 0.1)
        print(f"  monitor CPU by thread over its whole run (start-up included): {threads}", flush=True)
        print(f"  monitor CPU per event by stage: {stage_split(stages, cpu, n)}", flush=True)
        return {"seconds": seconds, "cpu": cpu, "rss_mb": current, "peak_rss_mb": peak, "counters": counters}
    finally:
        monitor.stop()


def stage_split(stages: dict[str, float], cpu: float, n: int) -> str:
    """Stage 1 (join), stage 2 (models) and the rest of ``cpu`` per event."""
    join, models = stages.get("join", 0.0), stages.get("models", 0.0)
    rest = cpu - join - models
    return (f"join {join / n * 1e6:.1f} us, models {models / n * 1e6:.1f} us, faust + Kafka client + event loop "
            f"{rest / n * 1e6:.1f} us (stage 2 {models / max(cpu, 1e-9):.0%} of the CPU)")


def section(title: str, settings: Settings, workdir: str, n: int, models: list[str], bulk: bool,
            quix: str | None = None) -> dict:
    print(f"\n== {title}: {n:,} events ({'bulk messages of %d' % BULK if bulk else 'one event per message'}), "
          f"10 numeric features, {len(models)} model(s), {PARTITIONS} partitions", flush=True)
    t0 = time.perf_counter()
    messages = make_messages(n, models, bulk)
    count = len(messages["predictions"]) + len(messages["labels"])
    size = sum(len(v) for kind in messages.values() for _p, _k, v in kind)
    built = time.perf_counter() - t0
    sent = asyncio.run(publish(settings, messages))
    del messages
    print(f"  data: {count:,} messages, {size / 1e6:,.0f} MB; built in {built:.1f} s, published in {sent:.1f} s "
          f"({n / sent:,.0f} ev/s)", flush=True)
    raw = asyncio.run(raw_consume(settings, count))
    print(f"  {'raw aiokafka consumer':36} {n / raw:>12,.0f} ev/s  ({count / raw:,.0f} msg/s)", flush=True)
    noop = noop_faust(settings, count)
    print(f"  {'do-nothing faust agent':36} {n / noop:>12,.0f} ev/s  ({count / noop:,.0f} msg/s)", flush=True)
    quix_eps = None
    if quix:
        baseline = quix_baseline(quix, settings, n)
        quix_eps = n / baseline["seconds"]
        print(f"  {'quixstreams + River app (baseline)':36} {quix_eps:>12,.0f} ev/s  ({baseline['seconds']:.1f} s; "
              f"{baseline['seconds'] / n * 1e6:.0f} us/event; peak RSS {baseline['peak_rss_mb']:.0f} MB)", flush=True)
    result = run_monitor(settings, workdir, n, title.split()[0])
    seconds = result["seconds"]
    print(f"  {'driftline monitor (1 process)':36} {n / seconds:>12,.0f} ev/s  ({seconds:.1f} s; "
          f"{seconds / n * 1e6:.0f} us/event; takes {seconds / raw:,.0f}x raw aiokafka's time, "
          f"{seconds / noop:,.1f}x the no-op faust agent's; CPU {result['cpu'] / n * 1e6:.0f} us/event, "
          f"busy {result['cpu'] / seconds:.0%} of the time)", flush=True)
    print(f"  monitor RSS after {n:,} events: {result['rss_mb']:.0f} MB now, {result['peak_rss_mb']:.0f} MB peak",
          flush=True)
    if quix_eps:
        print(f"  monitor / quixstreams + River app: {n / seconds / quix_eps:.2f}x the events/s, "
              f"{result['peak_rss_mb'] / baseline['peak_rss_mb']:.2f}x the peak RSS", flush=True)
    skipped = result["counters"].get("replay_skipped", 0)
    if skipped:
        print(f"  (replayed observations skipped: {skipped:,.0f})")
    return {"raw": n / raw, "noop": n / noop, "quix": quix_eps, "monitor": n / seconds, **result}


def feed_trailing(settings: Settings, n: int, chunk: int, first: int = 0) -> None:
    """Publish events ``first`` .. ``first + n - 1``, labels one chunk behind."""
    async def feed():
        for start in range(first, first + n, chunk):
            messages = make_messages(min(chunk, first + n - start), ["churn"], bulk=True, first=start)
            await publish(settings, messages)

    asyncio.run(feed())


def memory_section(settings_for, workdir: str, n: int, chunk: int, states: list[str], step: int = 1_000_000) -> None:
    """Labels trail their predictions by one chunk (not all predictions
    first): the join then holds few pending predictions, and what stays is
    one joined marker per event for a label TTL (default 1 hour). The peak
    RSS is also printed as each ``step`` events are applied (flat: memory
    bounded by settings, not by traffic)."""
    print(f"\n== memory: {n:,} events, bulk, labels published {chunk:,} events behind their predictions "
          f"(default label TTL: every joined marker is kept)", flush=True)
    for state in states:
        settings = settings_for()
        monitor = Monitor(settings, workdir, f"memory-{state}", "--state", state, *MONITOR_ARGS)
        ready_rss: list[float] = []
        milestones: dict[int, float] = {}
        done = threading.Event()

        def follow() -> None:
            # peak RSS when the process is ready (nothing processed) and at every step
            while not done.is_set() and monitor.proc.poll() is None:
                if not ready_rss and monitor.ready():
                    ready_rss.append(monitor.rss_mb()[1])
                applied = monitor.counters().get("applied_joined", 0)
                for mark in range(step, n + 1, step):
                    if applied >= mark and mark not in milestones:
                        milestones[mark] = monitor.rss_mb()[1]
                done.wait(0.5)

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        try:
            feed_trailing(settings, n, chunk)
            seconds, _cpu, _stages = watch([monitor], n)
            current, peak = monitor.rss_mb()
            done.set()
            follower.join(5)
            milestones.setdefault(n, peak)
            print(f"  --state {state:8} {n / seconds:,.0f} ev/s ({seconds:.1f} s; includes waiting for the "
                  f"publisher); RSS after {n:,} events {current:.0f} MB now, {peak:.0f} MB peak", flush=True)
            steps = ", ".join(f"{mark:,}: {mb:.0f} MB" for mark, mb in sorted(milestones.items()))
            print(f"  --state {state:8} peak RSS when ready (nothing processed) "
                  f"{ready_rss[0] if ready_rss else float('nan'):.0f} MB; after {steps}", flush=True)
            if MEMTRACE_DIR:
                print(f"  memory trace: {monitor.trace_path}", flush=True)
        finally:
            done.set()
            monitor.stop()


def restart_section(settings_for, workdir: str, n: int, chunk: int, states: list[str], new: int = 10_000) -> None:
    """A monitor holding ``n`` events of join history is killed (SIGKILL)
    and started again; then ``new`` events arrive. Time from the restart to
    the new events applied by stage 2, and the join-state changelog records
    the restarted process read again."""
    print(f"\n== restart after kill -9: {n:,} events of join history (labels {chunk:,} behind), then "
          f"{new:,} new events", flush=True)
    for state in states:
        settings = settings_for()
        name = f"restart-{state}"
        monitor = Monitor(settings, workdir, name, "--state", state)
        try:
            feed_trailing(settings, n, chunk)
            watch([monitor], n)
            time.sleep(3.0)  # commits and the state's persistence catch up, as in a running system
            monitor.proc.kill()
            monitor.proc.wait(30)
            feed_trailing(settings, new, chunk, first=n)
            restarted = Monitor(settings, workdir, f"{name}-2", "--state", state, data=name)
            try:
                seconds, _cpu, _stages = watch([restarted], new, timeout_s=3600)
                processing = time.perf_counter() - restarted.started
                _current, peak = restarted.rss_mb()
                print(f"  --state {state:8} new events applied {processing:.1f} s after the restart "
                      f"(process start, group join and recovery included; {seconds:.1f} s of it processing); "
                      f"join-state changelog records replayed: {restarted.replayed():,}; "
                      f"peak RSS {peak:.0f} MB", flush=True)
            finally:
                restarted.stop()
        finally:
            monitor.stop()


def models_on_distinct_partitions(count: int) -> list[str]:
    chosen: dict[int, str] = {}
    i = 0
    while len(chosen) < count:
        name = f"model{i}"
        chosen.setdefault(partition_for(name, PARTITIONS), name)
        i += 1
    return sorted(chosen.values())


def scale_section(bootstrap: str, registry: str, workdir: str, n: int) -> None:
    models = models_on_distinct_partitions(4)
    print(f"\n== scale-out: {n:,} events, bulk, {len(models)} models on distinct observation partitions; "
          f"published after the group is ready", flush=True)
    messages = make_messages(n, models, bulk=True, seed=3)
    rates, cpus = {}, {}
    for processes in (1, 2):
        settings = new_settings(bootstrap, registry)
        monitors = [Monitor(settings, workdir, f"scale{processes}-{i}") for i in range(processes)]
        try:
            deadline = time.monotonic() + 120
            while not all(m.ready() for m in monitors) and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(7)  # a second member's join rebalances the first: let it settle
            asyncio.run(publish(settings, messages))
            seconds, cpu, stages = watch(monitors, n)
            rates[processes] = n / seconds
            cpus[processes] = cpu / n
            print(f"  {processes} process(es): {n / seconds:>12,.0f} ev/s  ({seconds:.1f} s; CPU {cpu / n * 1e6:.0f} "
                  f"us/event: {stage_split(stages, cpu, n)})", flush=True)
        finally:
            for monitor in monitors:
                monitor.stop()
    print(f"  speed-up with two processes: {rates[2] / rates[1]:.2f}x; CPU per event {cpus[2] / cpus[1]:.2f}x one "
          f"process's (two cores shared with other work)")


SECTIONS = ("bulk", "single", "scale", "memory", "restart", "detectors")


def _sections(text: str) -> set[str]:
    chosen = {part.strip() for part in text.split(",") if part.strip()}
    unknown = chosen - set(SECTIONS)
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"sections are {', '.join(SECTIONS)}; got {text!r}")
    return chosen


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="bulk section size (default 1,000,000)")
    parser.add_argument("--single-events", type=int, default=50_000, help="single-event section size")
    parser.add_argument("--scale-events", type=int, default=200_000, help="scale-out section size")
    parser.add_argument("--bootstrap", default=None, help="use this broker instead of an embedded tansu")
    parser.add_argument("--skip-detectors", action="store_true")
    parser.add_argument("--memory-events", type=int, default=1_000_000, help="memory section size")
    parser.add_argument("--restart-events", type=int, default=1_000_000,
                        help="restart section: events of join history before the kill -9")
    parser.add_argument("--state", default="rocksdb,memory",
                        help="memory and restart sections: comma-separated --state values to run "
                             "(default rocksdb,memory)")
    parser.add_argument("--only", type=_sections, default=None,
                        help="comma-separated sections to run: bulk, single, scale, memory, restart, detectors")
    parser.add_argument("--quix-python", default=None,
                        help="python of an environment with quixstreams and river (default: make .bench-venv)")
    parser.add_argument("--skip-quix", action="store_true", help="leave out the quixstreams + River baseline")
    parser.add_argument("--profile", default=None, metavar="DIR",
                        help="sample each monitor process with py-spy, write DIR/NAME-PID.raw and print a summary")
    parser.add_argument("--memtrace", default=None, metavar="DIR",
                        help="run each monitor under bench/memtrace.py: DIR/NAME.jsonl samples where its memory "
                             "goes (MEMTRACE_TRACEMALLOC=N adds Python allocation sites, N frames)")
    parser.add_argument("--monitor-args", default="",
                        help="memory section: more arguments for the monitor, e.g. '--batch-events 5000'")
    parser.add_argument("--memory-step", type=int, default=1_000_000,
                        help="memory section: print the peak RSS each time this many more events are applied")
    parser.add_argument("--noop-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.noop_child is not None:
        noop_faust_child(args.noop_child)
        return
    wanted = args.only or set(SECTIONS)
    global PROFILE_DIR, MEMTRACE_DIR, MONITOR_ARGS
    MONITOR_ARGS = args.monitor_args.split()
    if args.memtrace:
        MEMTRACE_DIR = os.path.abspath(args.memtrace)
        os.makedirs(MEMTRACE_DIR, exist_ok=True)
    if args.profile:
        PROFILE_DIR = os.path.abspath(args.profile)
        os.makedirs(PROFILE_DIR, exist_ok=True)

    workdir = tempfile.mkdtemp(prefix="driftline-bench-monitor-")
    registry = os.path.join(workdir, "registry")
    broker = None
    try:
        if args.bootstrap:
            bootstrap = args.bootstrap
        else:
            broker = EmbeddedBroker()
            broker.start()
            bootstrap = broker.bootstrap_servers
        print(f"broker: {'embedded tansu' if broker else bootstrap}; machine: {os.cpu_count()} cores "
              f"(busy: shared with other work); python {sys.version.split()[0]}")
        quix = None if args.skip_quix or not wanted & {"bulk", "single"} else quix_python(args.quix_python)
        if "bulk" in wanted:
            section("bulk", new_settings(bootstrap, registry), workdir, args.events, ["churn"], bulk=True, quix=quix)
        if "single" in wanted:
            section("single", new_settings(bootstrap, registry), workdir, args.single_events, ["churn"], bulk=False,
                    quix=quix)
        if "scale" in wanted:
            scale_section(bootstrap, registry, workdir, args.scale_events)
        states = [part.strip() for part in args.state.split(",") if part.strip()]
        if "memory" in wanted:
            memory_section(lambda: new_settings(bootstrap, registry), workdir, args.memory_events, 20_000, states,
                           args.memory_step)
        if "restart" in wanted:
            restart_section(lambda: new_settings(bootstrap, registry), workdir, args.restart_events, 20_000, states)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    if not args.skip_detectors and "detectors" in wanted:
        detectors = os.path.join(os.path.dirname(os.path.abspath(__file__)), "monitor_detectors.py")
        if os.path.exists(detectors):
            print("\n== default detectors (bench/monitor_detectors.py --events 50000 --seeds 2)", flush=True)
            subprocess.run([sys.executable, detectors, "--events", "50000", "--seeds", "2"], cwd=ROOT, check=False)


if __name__ == "__main__":
    main()
