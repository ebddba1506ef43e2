"""``driftline demo``: the whole loop on a drifting benchmark stream, live.

What happens, in order (one process orchestrates, the daemons are separate
OS processes in their own process groups):

1. start the embedded broker (tansu) and create the topics;
2. store the demo policy and train version 1 of model ``agrawal`` on
   River's Agrawal generator, classification function 0 [1]_;
3. start ``driftline monitor`` and ``driftline worker``;
4. replay the stream through :class:`~driftline.champion.Champion`, which
   loads ``agrawal@champion`` from the registry, publishes every
   prediction and swaps to the new version when a promotion arrives; labels
   follow one second later. Half-way the concept drifts: the
   labels switch to Agrawal's classification function 2, so version 1 falls
   to about coin-flip accuracy;
5. show live metrics, the drift alert, the retrain request, the promotion
   and the recovery; print a summary and write ``demo-report/index.html``.

Every child process is killed (process group, SIGTERM then SIGKILL) in a
``finally``, so Ctrl-C leaves nothing behind.

References
----------
.. [1] Agrawal, R., Imielinski, T. and Swami, A. (1993). Database mining: A
   performance perspective. IEEE Transactions on Knowledge and Data
   Engineering, 5(6), 914-925.
"""

from __future__ import annotations

import html
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .errors import DriftlineError

__all__ = ["DEMO_MODEL", "DEMO_POLICY", "DemoError", "agrawal_rows", "agrawal_frame", "Daemon", "run_demo",
           "scrape_metrics"]

DEMO_MODEL = "agrawal"
FEATURES = ("salary", "commission", "age", "elevel", "car", "zipcode", "hvalue", "hyears", "loan")
BEFORE_FUNCTION, AFTER_FUNCTION = 0, 2

#: The demo's policy: small windows and short waits so detection and
#: retraining happen within seconds; the worker retrains on the last few
#: seconds of labels, i.e. on data from after the drift (debounce_s and
#: window_s together make sure of that).
DEMO_POLICY: dict[str, Any] = {
    "monitor": {
        "task": "classification",
        "window": 500,
        "warmup": 200,
        "label_ttl_s": 60,
        "cooldown_s": 30,
        "drift_window": 300,
        "concept_drift": {"name": "adwin", "params": {"delta": 0.002}},
        "metric_thresholds": {"accuracy": 0.8},
        "retrain_on": ["concept_drift", "metric"],
        "retrain_cooldown_s": 20,
    },
    "retrain": {
        "window_rows": 2000,
        "window_s": 4,
        "min_rows": 300,
        "holdout_fraction": 0.2,
        "promotion_metric": "accuracy",
        "margin": 0.02,
        "debounce_s": 4,
        "estimator": "gradient_boosting",
    },
}


class DemoError(DriftlineError):
    """The demo could not run (or the loop did not complete)."""


# -- the benchmark stream --------------------------------------------------------------


def agrawal_rows(function: int, seed: int) -> Iterator[tuple[dict[str, Any], int]]:
    """Endless ``(features, label)`` pairs of River's Agrawal generator.

    >>> x, y = next(agrawal_rows(0, seed=1))
    >>> sorted(x) == sorted(FEATURES), y in (0, 1)
    (True, True)
    """
    from river.datasets import synth

    for x, y in synth.Agrawal(classification_function=function, seed=seed):
        yield {name: (float(v) if isinstance(v, float) else int(v)) for name, v in x.items()}, int(y)


def agrawal_frame(function: int, rows: int, seed: int):
    """A pandas frame of ``rows`` Agrawal rows with a ``label`` column."""
    import pandas as pd

    stream = agrawal_rows(function, seed)
    data = [dict(x, label=y) for x, y in (next(stream) for _ in range(rows))]
    return pd.DataFrame(data)


# -- child processes ----------------------------------------------------------------------


class Daemon:
    """A ``driftline`` sub-command run as a child process in its own process
    group (so stopping it stops everything it started)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "driftline", *args], env=env, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def terminate(self) -> None:
        """Ask the process group to stop (SIGTERM); :meth:`stop` waits."""
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)

    def stop(self, grace_s: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``grace_s``."""
        try:
            if self.process.poll() is None:
                _signal_group(self.process.pid, signal.SIGTERM)
                try:
                    self.process.wait(grace_s)
                except subprocess.TimeoutExpired:
                    pass
            # the group may hold grandchildren even after the leader exited
            _signal_group(self.process.pid, signal.SIGKILL)
            if self.process.poll() is None:
                self.process.wait(5)
        finally:
            self._log.close()
        return self.process.returncode

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def scrape_metrics(port: int, timeout: float = 3.0) -> dict[str, float]:
    """``/metrics`` of a daemon as ``{"name{labels}": value}`` (Driftline's series only)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as response:
        text = response.read().decode("utf-8")
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("driftline_"):
            name, _, value = line.rpartition(" ")
            try:
                values[name] = float(value)
            except ValueError:
                continue
    return values


def _wait_for_port(port: int, daemon: Daemon, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not daemon.running:
            raise DemoError(f"{daemon.name} exited with code {daemon.process.returncode}:\n{daemon.tail()}")
        try:
            scrape_metrics(port, timeout=1.0)
            return
        except OSError:
            time.sleep(0.2)
    raise DemoError(f"{daemon.name} did not serve /metrics on port {port} within {timeout:.0f}s")


# -- what the demo saw -------------------------------------------------------------------


@dataclass
class Happening:
    t: float  # seconds since the demo started
    kind: str  # drift, alert, request, registered, promoted, rejected, failed, info
    text: str
    data: dict[str, Any] = field(default_factory=dict)


class Watcher(threading.Thread):
    """Follows alerts, metrics, retrain requests and model events (no
    consumer group) and records what arrived, with arrival times."""

    def __init__(self, settings, started: float):
        super().__init__(name="demo-watcher", daemon=True)
        self.settings = settings
        self.started = started
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.news: queue.Queue[Happening] = queue.Queue()
        self.happenings: list[Happening] = []
        self.snapshots: dict[int, Any] = {}
        self.snapshot_history: list[tuple[float, Any]] = []
        self.error: BaseException | None = None
        self.ready = threading.Event()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as error:  # reported by the main thread
            self.error = error
            self.ready.set()

    def _run(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        from . import events

        topics = self.settings.topics
        kinds = {topics.alerts: events.Alert, topics.metrics: events.MetricsSnapshot,
                 topics.retrain_requests: events.RetrainRequest, topics.model_events: events.ModelEvent}
        consumer = KafkaConsumer(bootstrap_servers=self.settings.bootstrap_list, enable_auto_commit=False,
                                 auto_offset_reset="earliest", client_id="driftline-demo-watcher")
        try:
            assigned = []
            for topic in kinds:
                assigned += [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
            consumer.assign(assigned)
            consumer.seek_to_beginning()
            self.ready.set()
            while not self.stop_event.is_set():
                for tp, messages in consumer.poll(timeout_ms=200).items():
                    for message in messages:
                        for record in events.decode_batch(kinds[tp.topic], message.value).records:
                            self._on_record(record)
        finally:
            consumer.close()

    def _add(self, kind: str, text: str, **data: Any) -> None:
        happening = Happening(time.monotonic() - self.started, kind, text, data)
        with self.lock:
            self.happenings.append(happening)
        self.news.put(happening)

    def _on_record(self, record: Any) -> None:
        from .events import Alert, MetricsSnapshot, ModelEvent, RetrainRequest

        if isinstance(record, MetricsSnapshot):
            if record.model != DEMO_MODEL:
                return
            with self.lock:
                self.snapshots[record.model_version] = record
                self.snapshot_history.append((time.monotonic() - self.started, record))
        elif isinstance(record, Alert):
            self._add("alert", f"ALERT {record.kind} on {record.subject} (v{record.model_version}, "
                               f"{record.detector}): {record.message}", alert=record.to_dict())
        elif isinstance(record, RetrainRequest):
            self._add("request", f"retrain request ({record.reason}) for {record.model}"
                                 + (f" v{record.model_version}" if record.model_version else ""),
                      request=record.to_dict())
        elif isinstance(record, ModelEvent):
            shown = ", ".join(f"{k}={v:.3f}" for k, v in sorted(record.metrics.items())
                              if v is not None and "rows" not in k)
            if record.event == "policy_changed":
                text = f"policy changed: {record.model}: " + _describe_policy_change(record.details)
            else:
                text = f"model {record.event}: {record.model} v{record.version}" + (f" [{shown}]" if shown else "")
            if record.reason:
                text += f" ({record.reason})"
            self._add(record.event, text, event=record.to_dict())

    def first(self, kind: str, after: float = 0.0) -> Happening | None:
        with self.lock:
            return next((h for h in self.happenings if h.kind == kind and h.t >= after), None)


def _describe_policy_change(details: dict) -> str:
    """``monitor.window 1000 -> 500, ...`` from a policy_changed event's details.

    >>> _describe_policy_change({"changed": {"monitor.window": [1000, 500], "retrain.min_rows": [200, 300]}})
    'monitor.window 1000 -> 500, retrain.min_rows 200 -> 300'
    >>> _describe_policy_change({"changed": {}})
    'no setting changed'
    """
    changed = (details or {}).get("changed")
    if changed is None:
        return "new policy (the event does not say what changed)"
    if not changed:
        return "no setting changed"
    return ", ".join(f"{name} {json.dumps(old)} -> {json.dumps(new)}" for name, (old, new) in sorted(changed.items()))


# -- the serving side -------------------------------------------------------------------------


class Serving:
    """The demo's application: a :class:`~driftline.champion.Champion`
    (it loads ``agrawal@champion``, follows promotions and publishes every
    prediction) plus the labels, sent ``label_delay_s`` later."""

    def __init__(self, settings, registry, label_delay_s: float):
        from .champion import Champion

        self.champion = Champion(DEMO_MODEL, settings=settings, registry=registry)
        self.label_delay_s = label_delay_s
        self.pending: deque = deque()

    @property
    def version(self) -> int:
        return self.champion.version

    def serve(self, rows: list[tuple[dict, int]], ids: list[str]) -> tuple[list[int], int]:
        """Predict a batch (published by the champion), queue its labels;
        returns the predictions and the version that made them."""
        result = self.champion.predict([x for x, _ in rows], event_ids=ids)
        due = time.monotonic() + self.label_delay_s
        for (_, y), event_id in zip(rows, ids):
            self.pending.append((due, event_id, y))
        return result.predictions, result.model_version

    def send_due_labels(self, everything: bool = False) -> int:
        now, labels = time.monotonic(), []
        while self.pending and (everything or self.pending[0][0] <= now):
            _, event_id, y = self.pending.popleft()
            labels.append((event_id, y))
        if labels:
            self.champion.publish_labels(labels)
        return len(labels)

    def flush(self, timeout: float) -> None:
        self.champion.flush(timeout)

    def close(self) -> None:
        self.champion.close(10)


# -- the live view ------------------------------------------------------------------------------


class View:
    """A refreshing table on a terminal, plain lines otherwise."""

    def __init__(self, plain: bool, stream=None):
        self.stream = stream or sys.stdout
        self.tty = not plain and self.stream.isatty() and os.environ.get("TERM") != "dumb"
        self.drawn = 0
        self.last_progress = 0.0

    def line(self, text: str) -> None:
        if self.tty:
            self._clear()
        print(text, file=self.stream, flush=True)

    def _clear(self) -> None:
        if self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")
            self.drawn = 0

    def table(self, lines: list[str], progress: str, t: float) -> None:
        if self.tty:
            self._clear()
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
            self.drawn = len(lines)
        elif t - self.last_progress >= 5.0:
            self.last_progress = t
            print(progress, file=self.stream, flush=True)

    def finish(self) -> None:
        self.drawn = 0


def _bar(done: int, total: int, width: int = 30) -> str:
    filled = int(width * min(1.0, done / max(1, total)))
    return "#" * filled + "-" * (width - filled)


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


# -- the run ------------------------------------------------------------------------------------------


@dataclass
class DemoResult:
    timings: dict[str, float] = field(default_factory=dict)
    accuracy: dict[str, float | None] = field(default_factory=dict)
    alert_delay_events: int | None = None
    promoted_version: int | None = None
    events_sent: int = 0
    metrics_scraped: dict[str, dict[str, float]] = field(default_factory=dict)
    ok: bool = False
    problem: str | None = None


def run_demo(events: int | None = None, report_dir: str | Path = "demo-report", seed: int = 42,
             plain: bool = False, rate_eps: float = 250.0, label_delay_s: float = 1.0,
             drift_at: int = 3000, after_promotion: int = 2000, deadline_s: float = 110.0) -> int:
    """Run the demo; returns the process exit code (0 when the loop completed).

    Parameters
    ----------
    events
        Most events to replay (default ``drift_at + 6000``); the replay stops
        earlier, ``after_promotion`` events after the new version took over.
    report_dir
        Where ``index.html`` (and the daemons' logs) go.
    rate_eps
        Replay speed, events per second.
    deadline_s
        The replay gives up this long after the broker started.
    """
    report_dir = Path(report_dir)
    total = events if events is not None else drift_at + 6000
    if total <= drift_at:
        raise DemoError(f"--events must exceed the drift point {drift_at} (got {total})")
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "logs").mkdir(exist_ok=True)
    view = View(plain)
    work = Path(tempfile.mkdtemp(prefix="driftline-demo-"))
    started = time.monotonic()
    result = DemoResult()
    daemons: list[Daemon] = []
    broker = watcher = serving = registry = None
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    # Ctrl-C must stop the demo even when started from a shell that ignores
    # SIGINT for background jobs.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    # Client libraries log every connection at INFO: too much next to a live table.
    root = logging.getLogger()
    previous_level = root.level
    root.setLevel(max(previous_level, logging.WARNING))
    kafka_logger = logging.getLogger("kafka")
    previous_kafka = kafka_logger.level
    kafka_logger.setLevel(logging.ERROR)  # slow-poll warnings on a busy machine are not news here
    try:
        from .broker import EmbeddedBroker, free_port
        from .config import load_settings
        from .topics import create_topics

        def mark(name: str) -> float:
            result.timings[name] = round(time.monotonic() - started, 2)
            return result.timings[name]

        view.line("Driftline demo: Agrawal stream, concept drift (classification function "
                  f"{BEFORE_FUNCTION} -> {AFTER_FUNCTION}) after {drift_at} events")
        broker = EmbeddedBroker(log_path=report_dir / "logs" / "broker.log").start()
        settings = load_settings(environ={}, bootstrap_servers=broker.bootstrap_servers, topic_prefix="demo.",
                                 registry=str(work / "registry"))
        create_topics(settings, partitions=2)
        view.line(f"[{mark('broker_ready'):6.2f}s] broker {broker.bootstrap_servers} (pid {broker.process.pid}) up, "
                  "topics created")

        from driftline.registry import open_registry
        from driftline.retrain.trainer import train_frame

        from .policy import Policy

        registry = open_registry(settings, publish=True)
        registry.create_model(DEMO_MODEL, description="River Agrawal generator (demo)")
        registry.set_policy(DEMO_MODEL, Policy.from_dict(DEMO_POLICY))
        trained = train_frame(registry, DEMO_MODEL, agrawal_frame(BEFORE_FUNCTION, 2000, seed + 1000), "label")
        view.line(f"[{mark('v1_trained'):6.2f}s] trained {DEMO_MODEL} v{trained.version} on 2000 rows "
                  f"(holdout accuracy {_fmt(trained.metrics.get('candidate_accuracy'))}), promoted to champion")

        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
        env.update(DRIFTLINE_BOOTSTRAP_SERVERS=settings.bootstrap_servers, DRIFTLINE_TOPIC_PREFIX="demo.",
                   DRIFTLINE_REGISTRY=settings.registry, PYTHONUNBUFFERED="1")
        ports = {"monitor": free_port(), "worker": free_port()}
        daemons.append(Daemon("monitor", ["--log-level", "WARNING", "monitor", "--metrics-port",
                                          str(ports["monitor"]), "--data-dir", str(work / "monitor"),
                                          "--snapshot-interval", "1", "--session-timeout", "6"],
                              env, report_dir / "logs" / "monitor.log"))
        daemons.append(Daemon("worker", ["--log-level", "INFO", "worker", "--metrics-port", str(ports["worker"]),
                                         "--session-timeout-ms", "6000", "--heartbeat-interval-ms", "1000",
                                         "--quiet-ms", "500", "--shutdown-grace-s", "5"],
                              env, report_dir / "logs" / "worker.log"))
        for daemon in daemons:
            _wait_for_port(ports[daemon.name], daemon, timeout=60)
        view.line(f"[{mark('daemons_up'):6.2f}s] monitor (pid {daemons[0].process.pid}, /metrics :{ports['monitor']}) "
                  f"and worker (pid {daemons[1].process.pid}, /metrics :{ports['worker']}) running")

        watcher = Watcher(settings, started)
        watcher.start()
        watcher.ready.wait(30)
        if watcher.error:
            raise DemoError(f"cannot follow the output topics: {watcher.error}")
        serving = Serving(settings, registry, label_delay_s)

        # -- replay -----------------------------------------------------------------------
        before, after = agrawal_rows(BEFORE_FUNCTION, seed), agrawal_rows(AFTER_FUNCTION, seed + 1)
        truth: list[tuple[float, int, int, int]] = []  # (t, index, version, correct)
        batch = max(1, int(rate_eps / 10))
        sent = 0
        drift_t = promoted_t = None
        promoted_at_event = None
        known_version = serving.version
        replay_start = time.monotonic()
        mark("replay_started")
        while sent < total:
            if time.monotonic() - started > deadline_s:
                result.problem = f"the loop did not complete within {deadline_s:.0f}s"
                break
            for daemon in daemons:
                if not daemon.running:
                    raise DemoError(f"{daemon.name} exited with code {daemon.process.returncode}:\n"
                                    f"{daemon.tail()}")
            if watcher.error:
                raise DemoError(f"following the output topics failed: {watcher.error}")
            if serving.version != known_version:  # the champion swapped versions on a promotion
                known_version = serving.version
                if promoted_t is None and sent > drift_at:
                    promoted_t, promoted_at_event = mark("new_version_serving"), sent
            n = min(batch, total - sent)
            source = before if sent < drift_at else after
            n = min(n, drift_at - sent) if sent < drift_at else n
            rows = [next(source) for _ in range(n)]
            ids = [f"demo-{seed}-{sent + i}" for i in range(n)]
            predictions, version = serving.serve(rows, ids)
            t = time.monotonic() - started
            truth.extend((t, sent + i, version, int(p == y)) for i, (p, (_, y)) in
                         enumerate(zip(predictions, rows)))
            sent += n
            if drift_t is None and sent >= drift_at:
                drift_t = mark("drift_injected")
                watcher.news.put(Happening(drift_t, "drift", f"concept drift injected at event {drift_at}: "
                                           f"labels now follow Agrawal function {AFTER_FUNCTION}"))
            serving.send_due_labels()
            _show(view, watcher, truth, sent, total, serving.version, t)
            if promoted_at_event is not None and sent - promoted_at_event >= after_promotion:
                break
            # pace the replay: where we should be by now
            ahead = (sent / rate_eps) - (time.monotonic() - replay_start)
            if ahead > 0:
                time.sleep(ahead)
        result.events_sent = sent
        serving.send_due_labels(everything=True)
        serving.flush(30)
        # the monitor's snapshot of the new version after the last labels
        if promoted_at_event is not None:
            wait_until = time.monotonic() + 8
            while time.monotonic() < wait_until:
                with watcher.lock:
                    snap = watcher.snapshots.get(serving.version)
                    joined = (snap.stats or {}).get("joined", 0) if snap else 0
                if joined >= sent - promoted_at_event - batch:
                    break
                _show(view, watcher, truth, sent, total, serving.version, time.monotonic() - started)
                time.sleep(0.3)
        _show(view, watcher, truth, sent, total, serving.version, time.monotonic() - started, final=True)
        view.finish()
        for name, port in ports.items():
            try:
                result.metrics_scraped[name] = scrape_metrics(port)
            except OSError as error:
                result.metrics_scraped[name] = {"error": str(error)}  # type: ignore[dict-item]
        mark("summary")
        _summarise(result, watcher, truth, drift_at, drift_t, promoted_at_event, serving.version)
        report = write_report(report_dir, settings, registry, result, drift_at)
        _print_summary(view, result, report)
        return 0 if result.ok else 1
    except KeyboardInterrupt:
        view.finish()
        print("\ninterrupted: stopping the monitor, the worker and the broker ...", file=sys.stderr, flush=True)
        return 130
    finally:
        # A second Ctrl-C must not cut the cleanup short and leave daemons behind,
        # and one failing step must not skip the others.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if watcher is not None:
                watcher.stop_event.set()
            if serving is not None:
                _quietly("closing the publisher", serving.close)
            for daemon in daemons:  # in parallel: SIGTERM all, then wait for each
                _quietly(f"stopping the {daemon.name}", daemon.terminate)
            for daemon in daemons:
                _quietly(f"stopping the {daemon.name}", daemon.stop)
            if watcher is not None:
                watcher.join(5)
            if registry is not None:
                _quietly("closing the registry", registry.close)
            if broker is not None:
                _quietly("stopping the broker", broker.stop)
            shutil.rmtree(work, ignore_errors=True)
        finally:
            root.setLevel(previous_level)
            kafka_logger.setLevel(previous_kafka)
            signal.signal(signal.SIGTERM, previous_term)
            signal.signal(signal.SIGINT, previous_int)


def _quietly(what: str, step) -> None:
    try:
        step()
    except Exception as error:  # report and go on: the remaining steps still run
        print(f"driftline demo: {what} failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _rolling(truth: list, last: int = 500) -> float | None:
    window = truth[-last:]
    return sum(c for *_, c in window) / len(window) if window else None


def _show(view: View, watcher: Watcher, truth: list, sent: int, total: int, version: int, t: float,
          final: bool = False) -> None:
    while not watcher.news.empty():
        happening = watcher.news.get()
        view.line(f"[{happening.t:6.2f}s] {happening.text}")
    serving_acc = _rolling(truth)
    progress = (f"[{t:6.2f}s] {sent}/{total} events, serving v{version}, "
                f"accuracy (last 500) {_fmt(serving_acc)}")
    with watcher.lock:
        snapshots = sorted(watcher.snapshots.items())
    lines = [
        f"  replay  [{_bar(sent, total)}] {sent}/{total} events   serving v{version}   t={t:5.1f}s",
        f"  ground truth accuracy, last 500 events: {_fmt(serving_acc)}",
        "",
        "  version   joined   accuracy   rolling   f1       log_loss   coverage   p95 ms   est. acc",
    ]
    for v, snap in snapshots:
        stats = snap.stats or {}
        lines.append(f"  v{v:<8} {stats.get('joined', 0):<8} {_fmt(snap.cumulative.get('accuracy')):<10} "
                     f"{_fmt(snap.rolling.get('accuracy')):<9} {_fmt(snap.rolling.get('f1')):<8} "
                     f"{_fmt(snap.rolling.get('log_loss')):<10} {_fmt(stats.get('label_coverage')):<10} "
                     f"{_fmt(stats.get('latency_p95_ms'), 2):<8} "
                     # estimated from calibrated confidence before labels (streams/estimation.py)
                     f"{_fmt((stats.get('estimated') or {}).get('accuracy'))}")
    if not snapshots:
        lines.append("  (waiting for the monitor's first snapshot)")
    view.table(lines, progress, t if not final else 1e9)


def _accuracy(truth: list, start: int, end: int | None, version: int | None = None) -> float | None:
    rows = [c for _, i, v, c in truth if i >= start and (end is None or i < end) and (version is None or v == version)]
    return round(sum(rows) / len(rows), 4) if rows else None


def _summarise(result: DemoResult, watcher: Watcher, truth: list, drift_at: int, drift_t: float | None,
               promoted_at_event: int | None, final_version: int) -> None:
    t = result.timings
    after = drift_t or 0.0
    alert = watcher.first("alert", after)
    request = watcher.first("request", after)
    promoted = watcher.first("promoted", after)
    if alert:
        t["first_alert"] = round(alert.t, 2)
        t["alert_delay_s"] = round(alert.t - after, 2)
        result.alert_delay_events = sum(1 for ts, i, *_ in truth if i >= drift_at and ts <= alert.t)
    if request:
        t["retrain_request"] = round(request.t, 2)
    if promoted:
        t["promoted"] = round(promoted.t, 2)
        t["drift_to_promotion_s"] = round(promoted.t - after, 2)
        result.promoted_version = promoted.data["event"]["version"]
    result.accuracy = {
        "v1_before_drift": _accuracy(truth, 500, drift_at),
        "v1_after_drift": _accuracy(truth, drift_at, promoted_at_event, version=1),
        f"v{final_version}_after_promotion": (_accuracy(truth, promoted_at_event, None, final_version)
                                              if promoted_at_event is not None else None),
    }
    with watcher.lock:
        snap = watcher.snapshots.get(final_version)
    result.accuracy["monitor_reported_new_version"] = snap.cumulative.get("accuracy") if snap and final_version > 1 else None
    missing = [name for name, h in (("a drift alert", alert), ("a retrain request", request),
                                    ("a promoted version", promoted)) if h is None]
    recovered = result.accuracy.get(f"v{final_version}_after_promotion")
    if missing:
        result.problem = result.problem or "did not see " + ", ".join(missing)
    elif recovered is None or recovered < 0.9:
        result.problem = result.problem or f"accuracy did not recover (new version: {recovered})"
    result.ok = result.problem is None


def _print_summary(view: View, result: DemoResult, report: Path) -> None:
    t, acc = result.timings, result.accuracy
    lines = ["", "Summary", "-------"]
    lines.append(f"  events replayed            {result.events_sent}")
    lines.append(f"  broker up                  {t.get('broker_ready', '-')}s")
    lines.append(f"  v1 trained                 {t.get('v1_trained', '-')}s")
    lines.append(f"  monitor + worker up        {t.get('daemons_up', '-')}s")
    lines.append(f"  drift injected             {t.get('drift_injected', '-')}s")
    lines.append(f"  first alert                {t.get('first_alert', '-')}s  "
                 f"(+{t.get('alert_delay_s', '-')}s, {result.alert_delay_events} events after the drift)")
    lines.append(f"  retrain request            {t.get('retrain_request', '-')}s")
    lines.append(f"  new version promoted       {t.get('promoted', '-')}s  (v{result.promoted_version}, "
                 f"+{t.get('drift_to_promotion_s', '-')}s after the drift)")
    lines.append(f"  loop finished              {t.get('summary', '-')}s")
    lines.append("  accuracy (ground truth)    " + ", ".join(f"{k}={_fmt(v)}" for k, v in acc.items()))
    for name, values in result.metrics_scraped.items():
        shown = {k: v for k, v in values.items() if k.startswith(("driftline_events_processed_total",
                                                                  "driftline_alerts_total",
                                                                  "driftline_retrain_runs_total"))}
        lines.append(f"  /metrics {name:<8}          " + ", ".join(f"{k}={v:g}" for k, v in sorted(shown.items())))
    lines.append(f"  report                     {report.resolve()}")
    lines.append("  result                     " + ("OK: drift detected, retrained, promoted, recovered"
                                                     if result.ok else f"INCOMPLETE: {result.problem}"))
    for line in lines:
        view.line(line)


# -- the HTML report -----------------------------------------------------------------------------------


def write_report(report_dir: Path, settings, registry, result: DemoResult, drift_at: int) -> Path:
    """``index.html``: the report ``driftline report agrawal`` writes (from
    the topics and the registry), followed by what only the demo knows: the
    ground-truth accuracy, the timings, the policy and the Prometheus series."""
    from .report import gather
    from .report import write_report as write_model_report
    from .report.page import pretty_json, table

    data = gather(settings, DEMO_MODEL, registry=registry, quiet_s=1.0)
    status = "OK" if result.ok else f"INCOMPLETE: {html.escape(str(result.problem))}"
    about = (f"<p>Model <code>{DEMO_MODEL}</code> on River's Agrawal stream; concept drift (classification "
             f"function {BEFORE_FUNCTION} &rarr; {AFTER_FUNCTION}) injected after {drift_at} events. "
             f"{result.events_sent} events replayed. Result: <b>{status}</b>. Alert delay: "
             f"{html.escape(str(result.timings.get('alert_delay_s', '-')))}s "
             f"({html.escape(str(result.alert_delay_events))} events after the drift).</p>")
    extra = [
        ("The demo", about + table(["period", "accuracy (ground truth)"],
                                   [(k, _fmt(v)) for k, v in result.accuracy.items()])),
        ("Timings (seconds since start)", table(["step", "seconds"], result.timings.items())),
        ("Policy", pretty_json(DEMO_POLICY)),
        ("Prometheus series at the end", pretty_json(result.metrics_scraped)),
    ]
    return write_model_report(data, report_dir, title=f"Driftline demo report: {DEMO_MODEL}", extra_sections=extra)
