"""The retraining daemon: retrain requests and schedules in, versions out.

Pieces, one concept each:

- :class:`OffsetTracker` — which request offsets have finished, so a
  partition's offset is committed only once every request before it has
  ended (registered, promoted, rejected or failed). A killed worker therefore
  sees its unfinished requests again after a restart; the trainer is
  idempotent by request id, so exactly one version exists per request.
- :class:`Coordinator` — debouncing and one-run-per-model: requests for a
  model inside its policy's ``debounce_s`` (counted from the first one)
  coalesce into one run; requests arriving while a run is busy wait for the
  next run. Runs execute on daemon threads (``concurrency`` at once).
- :class:`ScheduleBook` — APScheduler (3.x ``BackgroundScheduler``) jobs,
  one per model with ``retrain.schedule`` (``interval_s`` or ``cron``),
  re-synced when a ``policy_changed``/``registered`` model event arrives and
  every ``policy_refresh_s``.
- :class:`StatusBoard` — the status view: a JSON file, by default
  ``<registry dir>/worker-status.json`` (``driftline worker --status`` prints it).
- :class:`Worker` — start-up checks (broker, topics, registry, every
  model's policy), the consumer loop, dead letters, metrics, shutdown.

Nothing is lost: a request's offset is committed only after its outcome
model event (``promoted``, ``rejected`` or ``failed``) was acknowledged by
the broker. A run whose registry database or broker cannot be reached is
retried (:class:`driftline.retrain.resilience.RetryPolicy`); when the retries run out
on the registry it ends ``failed`` with a readable reason. When they run out
on the broker, or the outcome cannot be delivered, the offset stays open:
the run is tried again later, and after a restart. A request seen again whose version already exists (a redelivery)
gets its stored outcome again (``details.republished``): at least once,
never none.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from driftline import events
from driftline.config import Settings
from driftline.errors import DriftlineError
from driftline.events import DeadLetter, ModelEvent, RetrainRequest
from driftline.observability import (CONSUMER_LAG, EVENTS_PROCESSED, RETRAIN_RUNS, count_dead_letters,
                                     start_metrics_server)

from .log import log_event
from driftline.brokerwatch import BrokerWatch, tcp_reachable
from driftline.deadletters import reason_class

from .resilience import RetryPolicy, broker_watch, unavailable

__all__ = ["WorkerConfigError", "OffsetTracker", "Ticket", "Coordinator", "ScheduleBook", "StatusBoard",
           "Worker", "WorkerOptions", "status_path"]

logger = logging.getLogger("driftline.retrain.worker")
COMPONENT = "worker"


class WorkerConfigError(DriftlineError):
    """The worker cannot start: broker, topics, registry or a policy is wrong."""


# -- offsets ----------------------------------------------------------------------------


class OffsetTracker:
    """Committable positions per partition.

    Examples
    --------
    >>> t = OffsetTracker()
    >>> t.add("p0", 5); t.add("p0", 6); t.add("p0", 7)
    >>> t.done("p0", 6); t.committable()   # 5 is still open: nothing past it
    {'p0': 5}
    >>> t.done("p0", 5); t.committable()
    {'p0': 7}
    >>> t.done("p0", 7); t.committable()
    {'p0': 8}
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[Any, dict[int, int]] = defaultdict(dict)  # tp -> offset -> open tickets
        self._next: dict[Any, int] = {}  # tp -> highest offset seen + 1
        self._committed: dict[Any, int] = {}

    def add(self, tp: Any, offset: int, tickets: int = 1) -> None:
        with self._lock:
            self._pending[tp][offset] = self._pending[tp].get(offset, 0) + tickets
            self._next[tp] = max(self._next.get(tp, 0), offset + 1)

    def done(self, tp: Any, offset: int) -> None:
        with self._lock:
            left = self._pending[tp].get(offset, 0) - 1
            if left > 0:
                self._pending[tp][offset] = left
            else:
                self._pending[tp].pop(offset, None)

    def committable(self) -> dict[Any, int]:
        """Partition -> offset to commit, for partitions that moved on."""
        with self._lock:
            out = {}
            for tp, nxt in self._next.items():
                pending = self._pending.get(tp)
                position = min(pending) if pending else nxt
                if position > self._committed.get(tp, -1):
                    out[tp] = position
            return out

    def mark_committed(self, positions: dict[Any, int]) -> None:
        with self._lock:
            for tp, position in positions.items():
                self._committed[tp] = max(self._committed.get(tp, -1), position)

    def forget(self, tps) -> None:
        """Partitions taken away by a rebalance: their open requests will be
        redelivered to whoever owns them now."""
        with self._lock:
            for tp in tps:
                self._pending.pop(tp, None)
                self._next.pop(tp, None)
                self._committed.pop(tp, None)

    def open_count(self) -> int:
        with self._lock:
            return sum(sum(v.values()) for v in self._pending.values())


# -- coordination ------------------------------------------------------------------------


@dataclass
class Ticket:
    """One retrain request waiting for (or in) a run."""

    model: str
    request_id: str
    trigger: str
    arrived: float = field(default_factory=time.monotonic)
    token: tuple[Any, int] | None = None  # (topic-partition, offset) to mark done


class Coordinator:
    """Debounce requests per model and run at most one run per model.

    Parameters
    ----------
    run
        ``run(model, tickets)``; called on a worker thread.
    debounce_for
        Model -> debounce seconds (from its policy).
    concurrency
        Runs of different models at once.
    """

    def __init__(self, run: Callable[[str, list[Ticket]], None], debounce_for: Callable[[str], float],
                 concurrency: int = 1):
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1 (got {concurrency})")
        self._run = run
        self._debounce_for = debounce_for
        self._cond = threading.Condition()
        self._pending: dict[str, list[Ticket]] = defaultdict(list)
        self._due: dict[str, float] = {}
        self._running: set[str] = set()
        self._ready: deque[tuple[str, list[Ticket]]] = deque()
        self._stopping = False
        self._threads = [threading.Thread(target=self._loop, name=f"retrain-run-{i}", daemon=True)
                         for i in range(concurrency)]
        self._timer = threading.Thread(target=self._clock, name="retrain-debounce", daemon=True)
        for thread in self._threads + [self._timer]:
            thread.start()

    def submit(self, ticket: Ticket) -> None:
        debounce = max(0.0, float(self._debounce_for(ticket.model)))
        with self._cond:
            if self._stopping:
                return
            pending = self._pending[ticket.model]
            pending.append(ticket)
            if ticket.model not in self._due and ticket.model not in self._running:
                self._due[ticket.model] = ticket.arrived + debounce
            self._cond.notify_all()

    def _clock(self) -> None:
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                for model, due in list(self._due.items()):
                    if due <= now and model not in self._running:
                        del self._due[model]
                        tickets = self._pending.pop(model, [])
                        if tickets:
                            self._running.add(model)
                            self._ready.append((model, tickets))
                            self._cond.notify_all()
                wait = min((d - now for d in self._due.values()), default=1.0)
                self._cond.wait(timeout=max(0.01, min(wait, 1.0)))

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._ready and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                model, tickets = self._ready.popleft()
            try:
                self._run(model, tickets)
            except Exception:  # pragma: no cover - run() handles its own errors
                logger.exception("run callback crashed")
            finally:
                with self._cond:
                    self._running.discard(model)
                    rest = self._pending.get(model)
                    if rest:
                        debounce = max(0.0, float(self._debounce_for(model)))
                        self._due[model] = max(time.monotonic(), rest[0].arrived + debounce)
                    self._cond.notify_all()

    def busy(self) -> bool:
        with self._cond:
            return bool(self._running or self._ready or self._due)

    def stop(self, grace_s: float) -> bool:
        """Stop taking work; wait up to ``grace_s`` for running runs.
        Returns whether every started run ended. Waiting requests are
        dropped (their offsets stay uncommitted, so they come back)."""
        deadline = time.monotonic() + grace_s
        with self._cond:
            self._pending.clear()
            self._due.clear()
            self._ready.clear()
            while self._running and time.monotonic() < deadline:
                self._cond.wait(timeout=0.2)
            ended = not self._running
            self._stopping = True
            self._cond.notify_all()
        return ended


# -- schedules ------------------------------------------------------------------------------


def make_trigger(schedule: dict[str, Any]):
    """APScheduler trigger for a policy schedule; ValueError names a bad cron."""
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    if "interval_s" in schedule:
        return IntervalTrigger(seconds=float(schedule["interval_s"]), timezone="UTC")
    return CronTrigger.from_crontab(schedule["cron"], timezone="UTC")


class ScheduleBook:
    """One APScheduler job per model with a ``retrain.schedule``."""

    def __init__(self, submit: Callable[[Ticket], None]):
        from apscheduler.schedulers.background import BackgroundScheduler

        self._submit = submit
        self._scheduler = BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1,
                                                                            "misfire_grace_time": 60})
        self._specs: dict[str, str] = {}

    def start(self) -> None:
        self._scheduler.start()

    def sync(self, schedules: dict[str, dict[str, Any] | None]) -> None:
        """Make the jobs match ``model -> schedule`` (``None``: no job)."""
        for model, schedule in schedules.items():
            spec = json.dumps(schedule, sort_keys=True) if schedule else None
            if spec == self._specs.get(model):
                continue
            job_id = f"retrain:{model}"
            if self._scheduler.get_job(job_id):
                self._scheduler.remove_job(job_id)
            self._specs.pop(model, None)
            if schedule:
                try:
                    trigger = make_trigger(schedule)
                except ValueError as error:
                    log_event(logger, "schedule_invalid", logging.ERROR, model=model, schedule=schedule,
                              error=str(error))
                    continue
                self._scheduler.add_job(self._fire, trigger, args=[model], id=job_id, replace_existing=True)
                self._specs[model] = spec
                log_event(logger, "schedule_set", model=model, schedule=schedule)
        for model in set(self._specs) - set(schedules):
            self._scheduler.remove_job(f"retrain:{model}")
            del self._specs[model]

    def jobs(self) -> dict[str, str]:
        return dict(self._specs)

    def _fire(self, model: str) -> None:
        # Deterministic id per firing second: two workers firing the same tick
        # produce one version (idempotent by request id).
        request_id = f"schedule-{model}-{int(time.time())}"
        log_event(logger, "schedule_fired", model=model, request_id=request_id)
        self._submit(Ticket(model=model, request_id=request_id, trigger="schedule"))

    def shutdown(self) -> None:
        try:
            self._scheduler.shutdown(wait=False)
        except Exception:  # not started
            pass


# -- status --------------------------------------------------------------------------------


def status_path(settings: Settings, override: str | None = None) -> Path:
    """Where the status view lives: ``override``, else
    ``<registry dir>/worker-status.json``, else (database registry)
    ``./.driftline/worker-status.json``."""
    if override:
        return Path(override)
    if settings.registry_is_database:
        return Path(".driftline") / "worker-status.json"
    return Path(settings.registry) / "worker-status.json"


class StatusBoard:
    """The last runs and the runs in progress, kept in a JSON file
    (written atomically: temporary file + rename)."""

    def __init__(self, path: Path, keep: int = 50, **info: Any):
        self.path = Path(path)
        self.keep = keep
        self._lock = threading.Lock()
        self._runs: deque[dict] = deque(maxlen=keep)
        self._active: dict[str, dict] = {}
        self._counts: dict[str, int] = defaultdict(int)
        self._info = {"pid": os.getpid(), "started_at": events.now(), "state": "starting", **info}
        if self.path.exists():  # keep history across restarts
            try:
                old = json.loads(self.path.read_text(encoding="utf-8"))
                self._runs.extend(old.get("runs", [])[-keep:])
            except (OSError, ValueError):
                pass

    def set_state(self, state: str, **info: Any) -> None:
        with self._lock:
            self._info.update(state=state, **info)
        self.write()

    def phase(self, model: str, request_ids: list[str], phase: str) -> None:
        with self._lock:
            entry = self._active.setdefault(model, {"model": model, "request_ids": request_ids,
                                                    "started_at": events.now()})
            entry["phase"] = phase
        self.write()

    def finished(self, result: dict) -> None:
        with self._lock:
            self._active.pop(result["model"], None)
            self._runs.append(result)
            self._counts[result["outcome"]] += 1
        self.write()

    def snapshot(self) -> dict:
        with self._lock:
            return {**self._info, "updated_at": events.now(), "active": list(self._active.values()),
                    "counts": dict(self._counts), "runs": list(self._runs)}

    def write(self) -> None:
        data = json.dumps(self.snapshot(), indent=2, sort_keys=True, default=str)
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
                tmp.write_text(data, encoding="utf-8")
                os.replace(tmp, self.path)
            except OSError as error:
                log_event(logger, "status_not_written", logging.WARNING, path=str(self.path), error=str(error))


def format_status(data: dict) -> str:
    """The status file as a short table for people."""
    lines = [f"worker pid={data.get('pid')} state={data.get('state')} group={data.get('group_id')} "
             f"updated={_iso(data.get('updated_at'))}"]
    counts = data.get("counts") or {}
    if counts:
        lines.append("runs since start: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    for entry in data.get("active", []):
        lines.append(f"running  {entry['model']:<20} phase={entry.get('phase')} since={_iso(entry.get('started_at'))} "
                     f"requests={','.join(entry.get('request_ids', []))}")
    runs = data.get("runs") or []
    if not runs:
        lines.append("no runs yet")
    else:
        lines.append(f"{'ended':<20} {'model':<20} {'outcome':<10} {'version':>7} {'secs':>7}  metrics / reason")
    for run in runs[-20:]:
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted((run.get("metrics") or {}).items())
                            if isinstance(v, (int, float)) and k.startswith(("candidate_", "champion_")))
        detail = metrics + (f"  ({run['reason']})" if run.get("reason") else "")
        version = run.get("version")
        lines.append(f"{_iso(run.get('ended_at')):<20} {run['model']:<20} {run['outcome']:<10} "
                     f"{'-' if version is None else version:>7} {run.get('duration_s', 0):>7.1f}  {detail}")
    return "\n".join(lines)


def _iso(ts: Any) -> str:
    if not isinstance(ts, (int, float)):
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))


# -- the daemon -----------------------------------------------------------------------------


@dataclass
class WorkerOptions:
    """Knobs of the daemon itself (per-model behaviour is in the policy).

    ``session_timeout_ms``/``heartbeat_interval_ms``: consumer-group timing;
    short values make group joins fast on tansu. ``quiet_ms``: how long the
    training-data read waits without news before it stops. ``retry_*``:
    how a run whose registry or broker is unreachable is retried;
    ``publish_timeout_s``: how long one delivery of a model event or dead
    letter may take; ``broker_log_interval_s``: seconds between two
    "broker still down" lines.
    """

    group_id: str = "driftline-worker"
    concurrency: int = 1
    metrics_port: int = 0
    status_file: str | None = None
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    quiet_ms: int = 1_000
    policy_refresh_s: float = 60.0
    shutdown_grace_s: float = 30.0
    startup_timeout_s: float = 15.0
    retry_attempts: int = 5
    retry_backoff_s: float = 2.0
    retry_max_backoff_s: float = 30.0
    publish_timeout_s: float = 30.0
    broker_log_interval_s: float = 30.0
    store: bool = True  # training data from the segment store (retrain/store.py); False: scan the topic
    store_dir: str | None = None

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(self.retry_attempts, self.retry_backoff_s, self.retry_max_backoff_s)

    def check(self) -> None:
        from driftline.events import ValidationError

        try:
            events.validate_name(self.group_id, "group_id")
        except ValidationError as error:
            raise WorkerConfigError(f"--group-id: {error}") from None
        if self.concurrency < 1:
            raise WorkerConfigError(f"--concurrency must be at least 1 (got {self.concurrency})")
        if not 0 <= self.metrics_port < 65536:
            raise WorkerConfigError(f"--metrics-port must be between 0 and 65535 (got {self.metrics_port})")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise WorkerConfigError("--heartbeat-interval-ms must be below --session-timeout-ms "
                                    f"(got {self.heartbeat_interval_ms} >= {self.session_timeout_ms})")
        if self.quiet_ms < 50:
            raise WorkerConfigError(f"--quiet-ms must be at least 50 (got {self.quiet_ms})")
        try:
            self.retry.check()
        except ValueError as error:
            raise WorkerConfigError(str(error)) from None
        if not self.publish_timeout_s > 0:
            raise WorkerConfigError(f"--publish-timeout-s must be above 0 (got {self.publish_timeout_s})")
        if not self.broker_log_interval_s > 0:
            raise WorkerConfigError(f"--broker-log-interval-s must be above 0 (got {self.broker_log_interval_s})")


class Worker:
    """The retraining daemon. :meth:`start` checks everything and raises
    :class:`WorkerConfigError` before any work is taken; :meth:`serve` runs
    until ``stop`` is set and returns the exit code (0)."""

    def __init__(self, settings: Settings, options: WorkerOptions | None = None):
        self.settings = settings
        self.options = options or WorkerOptions()
        self.topics = settings.topics
        self.tracker = OffsetTracker()
        self.stop_event = threading.Event()
        self._local = threading.local()
        self._registries: list = []
        self._reg_lock = threading.Lock()
        self._producer = None  # dead letters (driftline.registry.publish.RecoveringProducer)
        self._outcomes = None  # failed / re-published outcome events (driftline.registry.publish.EventPublisher)
        self.watch: BrokerWatch | None = None
        self._said: dict[str, float] = {}  # throttled log lines: key -> last time
        self._consumer = None
        self._events_consumer = None
        self._refresh_needed = True
        self._changed_policies: set[str] = set()  # models whose policy_changed event awaits a refresh
        self._last_refresh = 0.0
        self.status: StatusBoard | None = None
        self.coordinator: Coordinator | None = None
        self.schedules: ScheduleBook | None = None
        self.store = self.store_writer = None

    # -- registry per thread (SQLite connections are not shared between threads) ---------
    def registry(self):
        reg = getattr(self._local, "registry", None)
        if reg is None:
            from driftline.registry import open_registry

            reg = open_registry(self.settings, publish=True, publish_timeout_s=self.options.publish_timeout_s)
            self._local.registry = reg
            with self._reg_lock:
                self._registries.append(reg)
        return reg

    def _drop_registry(self) -> None:
        """Forget this thread's registry (after its database or broker
        failed): the next call opens a fresh one."""
        reg = getattr(self._local, "registry", None)
        self._local.registry = None
        if reg is None:
            return
        with self._reg_lock:
            if reg in self._registries:
                self._registries.remove(reg)
        try:
            reg.close()
        except Exception:  # a broken connection may fail to close; it is dropped either way
            pass

    def _say(self, key: str, interval_s: float) -> bool:
        """Whether a repeated line may be logged now (once per interval)."""
        now = time.monotonic()
        if now - self._said.get(key, -float("inf")) < interval_s:
            return False
        self._said[key] = now
        return True

    def _window_reader(self):
        """The segment store (retrain/store.py), or the full topic scan with --no-store."""
        from .data import LabeledReader
        from .store import StoreWindowReader

        if self.store_writer is None:
            return LabeledReader(self.settings, quiet_ms=self.options.quiet_ms)
        return StoreWindowReader(self.store, self.store_writer, topic=self.topics.labeled)

    # -- start-up ------------------------------------------------------------------------
    def start(self) -> None:
        """Check the configuration and connect; raises WorkerConfigError."""
        from driftline.broker import BrokerError, wait_for_kafka

        self.options.check()
        if not any(tcp_reachable(server, timeout_s=2.0) for server in self.settings.bootstrap_list):
            raise WorkerConfigError(f"cannot reach the Kafka broker: nothing listens at "
                                    f"{self.settings.bootstrap_servers} (DRIFTLINE_BOOTSTRAP_SERVERS)")
        try:
            wait_for_kafka(self.settings.bootstrap_servers, timeout=self.options.startup_timeout_s)
        except BrokerError as error:
            raise WorkerConfigError(f"cannot reach the Kafka broker: {error}") from None
        self._check_topics()
        reg = self._open_registry_at_start()
        schedules = self._load_policies(reg, strict=True)
        path = status_path(self.settings, self.options.status_file)
        self.status = StatusBoard(path, group_id=self.options.group_id)
        start_metrics_server(self.options.metrics_port)
        self._producer = self._make_producer()
        from driftline.registry.publish import EventPublisher

        self._outcomes = EventPublisher(self.settings, timeout_s=self.options.publish_timeout_s,
                                        client_id="driftline-worker")
        self.watch = broker_watch(self.settings.bootstrap_list, interval_s=self.options.broker_log_interval_s).start()
        self.coordinator = Coordinator(self._run, self._debounce_for, self.options.concurrency)
        self.schedules = ScheduleBook(self.submit)
        self.schedules.sync(schedules)
        self.schedules.start()
        self._last_refresh = time.monotonic()
        self._refresh_needed = False
        from .store import start_store

        self.store, self.store_writer = start_store(
            self.settings, self.options, lambda model: self.registry().get_policy(model).retrain.store_retention_s)
        self._consumer = self._make_consumer()
        self._events_consumer = self._make_events_consumer()
        self.status.set_state("running")
        log_event(logger, "worker_started", group_id=self.options.group_id, topic=self.topics.retrain_requests,
                  status_file=str(path), schedules=self.schedules.jobs(), metrics_port=self.options.metrics_port)

    def _open_registry_at_start(self):
        """The registry, or WorkerConfigError; an unreachable database is
        retried with the retry policy first (it may still be starting)."""
        from .resilience import safe_url

        where = safe_url(self.settings.registry) if self.settings.registry_is_database else repr(self.settings.registry)
        policy = self.options.retry
        failed = 0
        while True:
            try:
                return self.registry()
            except Exception as error:  # every failure to open is a start-up error; some are retried first
                down = unavailable(error, self.settings)
                failed += 1
                if down is not None and failed >= policy.attempts:
                    detail = f"{down.detail} after {failed} attempt{'s' if failed > 1 else ''}"
                elif down is not None:
                    detail = None
                elif isinstance(error, DriftlineError):
                    detail = str(error)
                else:
                    detail = f"{type(error).__name__}: {error}"
                if detail is not None:
                    raise WorkerConfigError(f"cannot open the registry {where}: {detail}") from None
                log_event(logger, "registry_unreachable", logging.WARNING, attempt=failed, attempts=policy.attempts,
                          retry_in_s=policy.delay(failed), error=str(down))
                if self.stop_event.wait(policy.delay(failed)):
                    raise WorkerConfigError(f"stopped while waiting for the registry {where}") from None

    def _check_topics(self) -> None:
        from driftline.topics import admin_client

        try:
            admin = admin_client(self.settings)
            try:
                existing = set(admin.list_topics())
            finally:
                admin.close()
        except Exception as error:
            raise WorkerConfigError(f"cannot list topics on {self.settings.bootstrap_servers}: {error}") from None
        needed = [self.topics.retrain_requests, self.topics.labeled, self.topics.model_events,
                  self.topics.dead_letter]
        missing = [name for name in needed if name not in existing]
        if missing:
            raise WorkerConfigError(f"topic(s) {', '.join(missing)} do not exist: run 'driftline topics create'")

    def _load_policies(self, reg, strict: bool) -> dict[str, dict | None]:
        """Model -> schedule; with ``strict`` a bad policy is a start-up error,
        otherwise it is logged and that model's schedule dropped."""
        from .recipes import check_policy

        schedules: dict[str, dict | None] = {}
        for model in reg.list_models():
            try:
                policy = reg.get_policy(model.name)
                check_policy(policy)
                if policy.retrain.schedule:
                    make_trigger(policy.retrain.schedule)
                schedules[model.name] = policy.retrain.schedule
            except (DriftlineError, ValueError) as error:
                if strict:
                    raise WorkerConfigError(f"policy of model {model.name!r} is invalid: {error}") from None
                log_event(logger, "policy_invalid", logging.ERROR, model=model.name, error=str(error))
                schedules[model.name] = None
        return schedules

    def _make_producer(self):
        from driftline.registry.publish import RecoveringProducer

        return RecoveringProducer(self.settings, "driftline-worker", timeout_s=self.options.publish_timeout_s)

    def _make_consumer(self):
        from kafka import KafkaConsumer
        from kafka.consumer.subscription_state import ConsumerRebalanceListener

        worker = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                worker._commit()
                worker.tracker.forget(revoked)
                log_event(logger, "partitions_revoked", partitions=sorted(tp.partition for tp in revoked))

            def on_partitions_assigned(self, assigned):
                log_event(logger, "partitions_assigned", partitions=sorted(tp.partition for tp in assigned))

        consumer = KafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_list,
            group_id=self.options.group_id,
            client_id="driftline-worker",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self.options.session_timeout_ms,
            heartbeat_interval_ms=self.options.heartbeat_interval_ms,
            max_poll_records=100,
            **self.settings.kafka_security(),
        )
        consumer.subscribe([self.topics.retrain_requests], listener=Listener())
        return consumer

    def _make_events_consumer(self):
        """Model events from now on (no group: every worker sees every
        policy change). Missing an old event is harmless — policies are
        also re-read every ``policy_refresh_s``."""
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.settings.bootstrap_list, enable_auto_commit=False,
                                 client_id="driftline-worker-events", auto_offset_reset="latest",
                                 **self.settings.kafka_security())
        partitions = consumer.partitions_for_topic(self.topics.model_events) or []
        consumer.assign([TopicPartition(self.topics.model_events, p) for p in sorted(partitions)])
        consumer.seek_to_end()
        return consumer

    # -- requests ------------------------------------------------------------------------
    def submit(self, ticket: Ticket) -> None:
        assert self.coordinator is not None
        self.coordinator.submit(ticket)

    def _debounce_for(self, model: str) -> float:
        try:
            return self.registry().get_policy(model).retrain.debounce_s
        except Exception:  # unknown model: no debounce, the run reports it
            return 0.0

    def _handle(self, message) -> None:
        from kafka import TopicPartition

        EVENTS_PROCESSED.labels(component=COMPONENT, kind="retrain_request").inc()
        tp = TopicPartition(message.topic, message.partition)
        decoded = events.decode_batch(RetrainRequest, message.value if message.value is not None else b"")
        # the extra ticket stands for the dead letters: done once they are acknowledged
        self.tracker.add(tp, message.offset, tickets=len(decoded.records) + 1)
        for request in decoded.records:
            log_event(logger, "request_received", model=request.model, request_id=request.request_id,
                      reason=request.reason, partition=message.partition, offset=message.offset)
            self.submit(Ticket(model=request.model, request_id=request.request_id, trigger=request.reason,
                               token=(tp, message.offset)))
        if all(self._dead_letter(message, error) for error in decoded.errors):
            self.tracker.done(tp, message.offset)

    def _dead_letter(self, message, error: Exception) -> bool:
        """Send one dead letter and wait for the broker's acknowledgement,
        retrying while the broker is away; False only when stopping first
        (the message stays uncommitted and comes back after a restart)."""
        from kafka.errors import KafkaError

        EVENTS_PROCESSED.labels(component=COMPONENT, kind="dead_letter").inc()
        letter = DeadLetter.for_payload(message.value or b"", error, source_topic=message.topic,
                                        component=COMPONENT, partition=message.partition, offset=message.offset)
        count_dead_letters(COMPONENT, [letter])
        log_event(logger, "dead_letter", logging.WARNING, reason_class=reason_class(letter), topic=message.topic,
                  partition=message.partition, offset=message.offset, index=letter.index, field=letter.field,
                  error_id=letter.error_id, reason=letter.reason)
        payload = events.encode(letter)
        while True:
            try:
                self._producer.send(self.topics.dead_letter, payload)
                return True
            except KafkaError as failure:
                if self._say("dead_letter_retry", self.options.broker_log_interval_s):
                    log_event(logger, "dead_letter_retry", logging.WARNING, offset=message.offset,
                              error=f"{type(failure).__name__}: {failure}")
                if self.stop_event.wait(min(self.options.retry_max_backoff_s, 5.0)):
                    return False

    def _run(self, model: str, tickets: list[Ticket]) -> None:
        """One run for ``tickets``; retried while the registry or the broker
        is unreachable. The tickets are done (their offsets committable) only
        once the outcome event is on the broker."""
        from .trainer import RunResult, Trainer

        request_ids = list(dict.fromkeys(t.request_id for t in tickets))
        trigger = tickets[0].trigger
        if len(request_ids) > 1:
            log_event(logger, "requests_coalesced", model=model, request_ids=request_ids)
        policy = self.options.retry
        began, started_at = time.monotonic(), events.now()
        result: RunResult | None = None
        failures = 0
        in_doubt = False  # a broker failure after the registry may have saved the outcome
        while result is None:
            try:
                trainer = Trainer(self.settings, self.registry(),
                                  self._window_reader(),
                                  publish_failures=False, retry_unavailable=True)
                result = trainer.run(model, request_ids, trigger,
                                     on_phase=lambda phase: self.status.phase(model, request_ids, phase))
            except Exception as error:  # opening the registry, or Unavailable from the run
                down = unavailable(error, self.settings)
                if down is None:  # not a dependency failure: a bug; fail the run, keep serving
                    logger.exception("run could not start")
                    result = RunResult(model=model, request_ids=request_ids, trigger=trigger, outcome="failed",
                                       started_at=started_at, reason=f"worker error: {type(error).__name__}: {error}")
                    break
                failures += 1
                in_doubt = in_doubt or down.what == "broker"
                self._drop_registry()
                if failures >= policy.attempts and down.what == "broker":
                    # a failed event could not get out either, and the registry may
                    # already hold the outcome: keep the offset open and try later
                    self._retry_later(model, tickets, request_ids, f"{down} after {failures} attempts")
                    return
                if failures >= policy.attempts:
                    spent = time.monotonic() - began
                    result = RunResult(model=model, request_ids=request_ids, trigger=trigger, outcome="failed",
                                       started_at=started_at,
                                       reason=f"{down} after {failures} attempt{'s' if failures > 1 else ''} "
                                              f"over {spent:.0f} s")
                    RETRAIN_RUNS.labels(model=model, outcome="failed").inc()
                    log_event(logger, "run_ended", logging.WARNING, model=model, outcome="failed",
                              reason=result.reason, request_ids=request_ids, duration_s=round(spent, 3))
                    break
                delay = policy.delay(failures)
                log_event(logger, "run_retry", logging.WARNING if failures == 1 else logging.INFO, model=model,
                          request_ids=request_ids, attempt=failures, attempts=policy.attempts,
                          retry_in_s=delay, error=str(down))
                if self.stop_event.wait(delay):
                    log_event(logger, "run_abandoned", logging.WARNING, model=model, request_ids=request_ids,
                              note="stopping while retrying; the request is redelivered after restart")
                    return
        result.ended_at = result.ended_at or events.now()
        event = self._outcome_event(result, tickets, in_doubt)
        if event is not None and not self._deliver(event):
            self._retry_later(model, tickets, request_ids, f"{event.event} event not delivered")
            return
        if self.status:
            self.status.finished(result.to_dict())
        for ticket in tickets:
            if ticket.token is not None:
                self.tracker.done(*ticket.token)

    def _outcome_event(self, result, tickets: list[Ticket], in_doubt: bool) -> ModelEvent | None:
        """The outcome event the worker must publish itself: ``failed``, or
        the stored outcome of a version that already existed when the
        request came from the topic (a redelivery: its first outcome event
        may never have got out) or when an earlier try may have lost it.
        ``promoted``/``rejected`` of a new version came from the registry,
        acknowledged."""
        from .trainer import _event_metrics, failed_event

        if result.outcome == "failed":
            return failed_event(result)
        if result.outcome != "duplicate" or result.version is None:
            return None
        if not in_doubt and all(ticket.token is None for ticket in tickets):
            return None  # e.g. two workers firing the same schedule tick
        kind = "rejected" if result.decision == "reject" else "promoted"
        return ModelEvent(event=kind, model=result.model, timestamp=events.now(), version=result.version,
                          alias="champion" if kind == "promoted" else None,
                          metrics=_event_metrics(result.metrics), request_id=result.request_ids[0],
                          reason=result.reason, details={"republished": True, "request_ids": result.request_ids,
                                                         "trigger": result.trigger})

    def _deliver(self, event: ModelEvent) -> bool:
        """Publish ``event`` with the retry policy; whether it was acknowledged."""
        from driftline.registry.errors import PublishError

        policy = self.options.retry
        for attempt in range(1, policy.attempts + 1):
            try:
                self._outcomes.publish(event)
                return True
            except PublishError as error:
                if attempt == policy.attempts:
                    log_event(logger, "outcome_not_published", logging.ERROR, model=event.model,
                              event_kind=event.event, request_id=event.request_id, attempts=attempt,
                              error=str(unavailable(error, self.settings) or error))
                    return False
                if attempt == 1:
                    log_event(logger, "outcome_retry", logging.WARNING, model=event.model, event_kind=event.event,
                              request_id=event.request_id, error=str(unavailable(error, self.settings) or error))
                if self.stop_event.wait(policy.delay(attempt)):
                    return False
        return False

    def _retry_later(self, model: str, tickets: list[Ticket], request_ids: list[str], why: str) -> None:
        """The outcome could not be delivered: keep the offsets open and run
        the tickets again after the longest back-off (after a restart, if the
        worker stops first)."""
        delay = self.options.retry_max_backoff_s
        log_event(logger, "run_postponed", logging.WARNING, model=model, request_ids=request_ids, error=why,
                  retry_in_s=delay, note="outcome not on the broker: offset left uncommitted")

        def again() -> None:
            if not self.stop_event.is_set() and self.coordinator is not None:
                for ticket in tickets:
                    self.coordinator.submit(ticket)

        timer = threading.Timer(delay, again)
        timer.daemon = True
        timer.start()

    # -- loop ----------------------------------------------------------------------------
    def _commit(self) -> None:
        positions = self.tracker.committable()
        if not positions or self._consumer is None:
            return
        from kafka.structs import OffsetAndMetadata

        # (dead letters and outcome events were acknowledged before their tickets were done)
        try:
            self._consumer.commit({tp: OffsetAndMetadata(pos, "", -1) for tp, pos in positions.items()},
                                  timeout_ms=10_000)
            self.tracker.mark_committed(positions)
            log_event(logger, "offsets_committed", logging.DEBUG,
                      positions={tp.partition: pos for tp, pos in positions.items()})
        except Exception as error:  # rebalance in progress, broker away: retried next loop
            broker_down = self.watch is not None and self.watch.down  # the watch says so, once
            if not broker_down and self._say("commit_failed", self.options.broker_log_interval_s):
                log_event(logger, "commit_failed", logging.WARNING, error=f"{type(error).__name__}: {error}")

    def _poll_model_events(self) -> None:
        try:
            batch = self._events_consumer.poll(timeout_ms=0)
        except Exception as error:  # pragma: no cover
            if self._say("model_events_poll_failed", self.options.broker_log_interval_s):
                log_event(logger, "model_events_poll_failed", logging.WARNING, error=str(error))
            return
        for messages in batch.values():
            for message in messages:
                decoded = events.decode_batch(ModelEvent, message.value or b"")
                for event in decoded.records:
                    if event.event in ("policy_changed", "registered"):
                        self._refresh_needed = True
                    if event.event == "policy_changed":
                        self._changed_policies.add(event.model)

    def _refresh(self) -> None:
        try:
            schedules = self._load_policies(self.registry(), strict=False)
            self.schedules.sync(schedules)
        except Exception as error:
            down = unavailable(error, self.settings)
            if down is not None:
                self._drop_registry()
            log_event(logger, "policy_refresh_failed", logging.WARNING,
                      error=str(down) if down else f"{type(error).__name__}: {error}")
        else:
            for model in sorted(self._changed_policies):
                log_event(logger, "policy_reloaded", model=model, trigger="policy_changed",
                          schedule=schedules.get(model))
            self._changed_policies.clear()
        self._refresh_needed = False
        self._last_refresh = time.monotonic()

    def _update_lag(self) -> None:
        if self.watch is not None and self.watch.down:
            return  # would only wait for timeouts
        try:
            assigned = list(self._consumer.assignment())
            if not assigned:
                return
            ends = self._consumer.end_offsets(assigned, timeout_ms=2000)
            for tp in assigned:
                position = self._consumer.position(tp, timeout_ms=2000)
                lag = max(0, (ends.get(tp) or 0) - (position or 0))  # a hint: tansu's end offsets can be low
                CONSUMER_LAG.labels(component=COMPONENT, topic=tp.topic, partition=str(tp.partition)).set(lag)
        except Exception:  # lag is best-effort
            pass

    def serve(self) -> int:
        """Consume until :attr:`stop_event` is set; then shut down cleanly."""
        last_lag = 0.0
        try:
            while not self.stop_event.is_set():
                batch = self._consumer.poll(timeout_ms=300)
                for messages in batch.values():
                    for message in messages:
                        self._handle(message)
                self._commit()
                self._poll_model_events()
                if self._refresh_needed or time.monotonic() - self._last_refresh > self.options.policy_refresh_s:
                    self._refresh()
                if time.monotonic() - last_lag > 5:
                    self._update_lag()
                    last_lag = time.monotonic()
        finally:
            self.shutdown()
        return 0

    def shutdown(self) -> None:
        log_event(logger, "worker_stopping", open_requests=self.tracker.open_count())
        if self.watch:
            self.watch.stop()
        if self.schedules:
            self.schedules.shutdown()
        if self.coordinator:
            ended = self.coordinator.stop(self.options.shutdown_grace_s)
            if not ended:
                log_event(logger, "runs_abandoned", logging.WARNING,
                          note="a run outlived the shutdown grace; its request is redelivered after restart")
        try:
            self._commit()
        except Exception:  # pragma: no cover
            pass
        if self.store_writer is not None:
            self.store_writer.stop()
        for client in (self._consumer, self._events_consumer):
            if client is not None:
                try:
                    client.close(autocommit=False) if client is self._consumer else client.close()
                except Exception:
                    pass
        for producer in (self._producer, self._outcomes):
            if producer is not None:
                try:
                    producer.close()
                except Exception:  # a broker that is away: nothing left to deliver anyway
                    pass
        if self.status:
            self.status.set_state("stopped", stopped_at=events.now())
        with self._reg_lock:
            for reg in self._registries:
                try:
                    reg.close()
                except Exception:
                    pass
        log_event(logger, "worker_stopped")
        self._consumer = self._events_consumer = self._producer = self._outcomes = None
