"""The retraining daemon: retrain requests and schedules in, versions out.

:class:`Worker` wires the pieces together, one module each:

- :mod:`~driftline.retrain.offsets` — :class:`OffsetTracker`: which request
  offsets may be committed (only once every request before them ended).
- :mod:`~driftline.retrain.coordinator` — :class:`Coordinator`: debouncing
  and one run per model, on the run threads.
- :mod:`~driftline.retrain.schedules` — :class:`ScheduleBook`: the
  APScheduler jobs of the models with ``retrain.schedule``.
- :mod:`~driftline.retrain.status` — :class:`StatusBoard`: the status file,
  by default ``<registry dir>/worker-status.json`` (``driftline worker --status``).
- :mod:`~driftline.retrain.run` — :class:`RetrainRunner`: the run of one
  retrain, its retries and its outcome event.
- :mod:`~driftline.retrain.options` — :class:`WorkerOptions`: the daemon's knobs.
- :mod:`~driftline.retrain.registries` — ``ThreadRegistries``: one open
  registry per thread.

The worker itself: start-up checks (broker, topics, registry, every model's
policy), the consumer loop (requests, dead letters, commits, model events,
policy refresh, lag), shutdown. What a dependency raises is caught where it
is expected, logged, and retried on the next turn; anything else reaches the
loop's one error policy (:meth:`Worker.serve`): logged with its traceback,
and the worker keeps serving (the requests of that turn stay uncommitted
and come back after a restart). The run threads have their own: a run never
raises (:meth:`driftline.retrain.trainer.Trainer.run`).
"""

from __future__ import annotations

import logging
import threading
import time

from driftline import events
from driftline.brokerwatch import BrokerWatch, tcp_reachable
from driftline.config import Settings
from driftline.deadletters import reason_class
from driftline.errors import DriftlineError
from driftline.events import DeadLetter, ModelEvent, RetrainRequest
from driftline.kafka import follow_topics, require_topics
from driftline.observability import CONSUMER_LAG, EVENTS_PROCESSED, count_dead_letters, start_metrics_server

from .coordinator import Coordinator, Ticket
from .log import log_event
from .offsets import OffsetTracker
from .options import WorkerConfigError, WorkerOptions
from .registries import ThreadRegistries
from .resilience import broker_watch, dependency_errors, unavailable
from .run import RetrainRunner
from .schedules import ScheduleBook, make_trigger
from .status import StatusBoard, format_status, status_path

# re-exported: ``from driftline.retrain.worker import ...`` keeps working
__all__ = ["WorkerConfigError", "OffsetTracker", "Ticket", "Coordinator", "ScheduleBook", "StatusBoard",
           "Worker", "WorkerOptions", "status_path", "format_status", "make_trigger", "RetrainRunner"]

logger = logging.getLogger("driftline.retrain.worker")
COMPONENT = "worker"


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
        self.registries = ThreadRegistries(self._open_registry)
        self._producer = None  # dead letters (driftline.registry.publish.RecoveringProducer)
        self._outcomes = None  # failed / re-published outcome events (driftline.registry.publish.EventPublisher)
        self.watch: BrokerWatch | None = None
        self._said: dict[str, float] = {}  # throttled log lines: key -> last time
        self._consumer = None
        self._events_consumer = None
        self._refresh_needed = True
        self._changed_policies: set[str] = set()  # models whose policy_changed event awaits a refresh
        self._last_refresh = 0.0
        self._last_lag = 0.0
        self.status: StatusBoard | None = None
        self.coordinator: Coordinator | None = None
        self.runner: RetrainRunner | None = None
        self.schedules: ScheduleBook | None = None
        self.store = self.store_writer = None

    # -- registry per thread (SQLite connections are not shared between threads) ---------
    def _open_registry(self):
        from driftline.registry import open_registry

        return open_registry(self.settings, publish=True, publish_timeout_s=self.options.publish_timeout_s)

    def registry(self):
        """This thread's registry."""
        return self.registries.get()

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
        self.runner = RetrainRunner(self.settings, self.options.retry, registries=self.registries,
                                    window_reader=self._window_reader, outcomes=self._outcomes, status=self.status,
                                    tracker=self.tracker, resubmit=self.submit, stop_event=self.stop_event,
                                    postpone_s=self.options.retry_max_backoff_s)
        self.coordinator = Coordinator(self.runner.run, self._debounce_for, self.options.concurrency)
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
            except (*dependency_errors(), ValueError) as error:  # a start-up error; some are retried first
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
        needed = [self.topics.retrain_requests, self.topics.labeled, self.topics.model_events,
                  self.topics.dead_letter]
        try:
            require_topics(self.settings, needed)
        except DriftlineError as error:  # missing topics, or no broker to ask
            raise WorkerConfigError(str(error)) from None

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
        return follow_topics(self.settings, [self.topics.model_events], "driftline-worker-events",
                             from_end=True, required=False)

    # -- requests ------------------------------------------------------------------------
    def submit(self, ticket: Ticket) -> None:
        assert self.coordinator is not None
        self.coordinator.submit(ticket)

    def _debounce_for(self, model: str) -> float:
        try:
            return self.registry().get_policy(model).retrain.debounce_s
        except (*dependency_errors(), ValueError):  # no debounce: unknown model, bad policy, registry away
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

    # -- loop ----------------------------------------------------------------------------
    def _commit(self) -> None:
        positions = self.tracker.committable()
        if not positions or self._consumer is None:
            return
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata

        # (dead letters and outcome events were acknowledged before their tickets were done)
        try:
            self._consumer.commit({tp: OffsetAndMetadata(pos, "", -1) for tp, pos in positions.items()},
                                  timeout_ms=10_000)
            self.tracker.mark_committed(positions)
            log_event(logger, "offsets_committed", logging.DEBUG,
                      positions={tp.partition: pos for tp, pos in positions.items()})
        except (KafkaError, RuntimeError) as error:
            # rebalance in progress, broker away: retried next loop (kafka-python raises
            # RuntimeError for a blocking commit from its IO thread: the rebalance listener)
            broker_down = self.watch is not None and self.watch.down  # the watch says so, once
            if not broker_down and self._say("commit_failed", self.options.broker_log_interval_s):
                log_event(logger, "commit_failed", logging.WARNING, error=f"{type(error).__name__}: {error}")

    def _poll_model_events(self) -> None:
        from kafka.errors import KafkaError

        try:
            batch = self._events_consumer.poll(timeout_ms=0)
        except KafkaError as error:  # pragma: no cover - the broker away: polled again next loop
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
        except dependency_errors() as error:
            down = unavailable(error, self.settings)
            if down is not None:
                self.registries.drop()
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
        from kafka.errors import KafkaError

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
        except KafkaError:  # lag is best-effort
            pass

    def serve(self) -> int:
        """Consume until :attr:`stop_event` is set; then shut down cleanly."""
        try:
            while not self.stop_event.is_set():
                try:
                    self._turn()
                except Exception:  # the daemon's error policy: log, pause, keep serving
                    # (the requests of the turn stay uncommitted: they come back after a restart)
                    logger.exception("loop_error")
                    self.stop_event.wait(1.0)
        finally:
            self.shutdown()
        return 0

    def _turn(self) -> None:
        """One turn of the loop: requests, commits, model events, policies, lag."""
        batch = self._consumer.poll(timeout_ms=300)
        for messages in batch.values():
            for message in messages:
                self._handle(message)
        self._commit()
        self._poll_model_events()
        if self._refresh_needed or time.monotonic() - self._last_refresh > self.options.policy_refresh_s:
            self._refresh()
        if time.monotonic() - self._last_lag > 5:
            self._update_lag()
            self._last_lag = time.monotonic()

    def shutdown(self) -> None:
        from kafka.errors import KafkaError

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
        self._commit()  # logs what it cannot commit; the requests come back after a restart
        if self.store_writer is not None:
            self.store_writer.stop()
        for client in (self._consumer, self._events_consumer):
            if client is not None:
                try:
                    client.close(autocommit=False) if client is self._consumer else client.close()
                except (KafkaError, OSError):  # a broker that is away: nothing left to say to it
                    pass
        for producer in (self._producer, self._outcomes):
            if producer is not None:
                try:
                    producer.close()
                except (KafkaError, OSError):  # a broker that is away: nothing left to deliver anyway
                    pass
        if self.status:
            self.status.set_state("stopped", stopped_at=events.now())
        self.registries.close_all()
        log_event(logger, "worker_stopped")
        self._consumer = self._events_consumer = self._producer = self._outcomes = None
