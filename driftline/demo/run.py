"""``run_demo``: start everything, replay the stream, report, clean up.

This is the one place that composes the three services (the registry, the
retraining worker's trainer, and the monitor and worker daemons)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from .errors import DemoError
from .processes import Daemon, quietly, scrape_metrics, wait_for_port
from .report import DemoResult, print_summary, summarise, write_report
from .serving import Serving
from .stream import AFTER_FUNCTION, BEFORE_FUNCTION, DEMO_MODEL, DEMO_POLICY, agrawal_frame, agrawal_rows
from .view import View, fmt, show
from .watch import Happening, Watcher

__all__ = ["run_demo"]


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
        from ..broker import EmbeddedBroker, free_port
        from ..config import load_settings
        from ..topics import create_topics

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

        from ..policy import Policy

        registry = open_registry(settings, publish=True)
        registry.create_model(DEMO_MODEL, description="River Agrawal generator (demo)")
        registry.set_policy(DEMO_MODEL, Policy.from_dict(DEMO_POLICY))
        trained = train_frame(registry, DEMO_MODEL, agrawal_frame(BEFORE_FUNCTION, 2000, seed + 1000), "label")
        view.line(f"[{mark('v1_trained'):6.2f}s] trained {DEMO_MODEL} v{trained.version} on 2000 rows "
                  f"(holdout accuracy {fmt(trained.metrics.get('candidate_accuracy'))}), promoted to champion")

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
            wait_for_port(ports[daemon.name], daemon, timeout=60)
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
            show(view, watcher, truth, sent, total, serving.version, t)
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
                show(view, watcher, truth, sent, total, serving.version, time.monotonic() - started)
                time.sleep(0.3)
        show(view, watcher, truth, sent, total, serving.version, time.monotonic() - started, final=True)
        view.finish()
        for name, port in ports.items():
            try:
                result.metrics_scraped[name] = scrape_metrics(port)
            except OSError as error:
                result.metrics_scraped[name] = {"error": str(error)}  # type: ignore[dict-item]
        mark("summary")
        summarise(result, watcher, truth, drift_at, drift_t, promoted_at_event, serving.version)
        report = write_report(report_dir, settings, registry, result, drift_at)
        print_summary(view, result, report)
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
                quietly("closing the publisher", serving.close)
            for daemon in daemons:  # in parallel: SIGTERM all, then wait for each
                quietly(f"stopping the {daemon.name}", daemon.terminate)
            for daemon in daemons:
                quietly(f"stopping the {daemon.name}", daemon.stop)
            if watcher is not None:
                watcher.join(5)
            if registry is not None:
                quietly("closing the registry", registry.close)
            if broker is not None:
                quietly("stopping the broker", broker.stop)
            shutil.rmtree(work, ignore_errors=True)
        finally:
            root.setLevel(previous_level)
            kafka_logger.setLevel(previous_kafka)
            signal.signal(signal.SIGTERM, previous_term)
            signal.signal(signal.SIGINT, previous_int)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt
