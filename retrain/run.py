"""The run of one retrain, as the worker does it: train, validate, register
and promote (:class:`driftline.retrain.trainer.Trainer`), retried while the
registry database or the broker is unreachable, then the outcome event.

Nothing is lost: a request's offset is committed only after its outcome
model event (``promoted``, ``rejected`` or ``failed``) was acknowledged by
the broker. A run whose registry database or broker cannot be reached is
retried (:class:`driftline.retrain.resilience.RetryPolicy`); when the retries
run out on the registry it ends ``failed`` with a readable reason. When they
run out on the broker, or the outcome cannot be delivered, the offset stays
open: the run is tried again later, and after a restart. A request seen
again whose version already exists (a redelivery) gets its stored outcome
again (``details.republished``): at least once, never none.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from driftline import events
from driftline.config import Settings
from driftline.events import ModelEvent
from driftline.observability import RETRAIN_RUNS

from .coordinator import Ticket
from .log import log_event
from .offsets import OffsetTracker
from .registries import ThreadRegistries
from .resilience import RetryPolicy, dependency_errors, unavailable
from .status import StatusBoard

__all__ = ["RetrainRunner"]

# every part of the daemon logs under the worker's name (operators filter on it)
logger = logging.getLogger("driftline.retrain.worker")


class RetrainRunner:
    """Runs retrains for the worker's coordinator (``runner.run`` is its
    ``run`` callback, called on a run thread).

    Parameters
    ----------
    settings
        The worker's settings.
    retry
        How a run (and the delivery of its outcome) is retried.
    registries
        The registry of each run thread.
    window_reader
        A new training-data reader per try.
    outcomes
        Publishes the outcome events the worker sends itself
        (:class:`driftline.registry.publish.EventPublisher`).
    status
        The status file.
    tracker
        Where a ticket's offset is marked done once its outcome is out.
    resubmit
        Puts a ticket back into the coordinator (a postponed run).
    stop_event
        Set when the worker stops: retries end, the requests come back after
        a restart.
    postpone_s
        How long a run whose outcome did not get out waits before it is
        tried again.
    """

    def __init__(self, settings: Settings, retry: RetryPolicy, *, registries: ThreadRegistries,
                 window_reader: Callable[[], Any], outcomes: Any, status: StatusBoard, tracker: OffsetTracker,
                 resubmit: Callable[[Ticket], None], stop_event: threading.Event, postpone_s: float):
        self.settings = settings
        self.retry = retry
        self.registries = registries
        self.window_reader = window_reader
        self.outcomes = outcomes
        self.status = status
        self.tracker = tracker
        self.resubmit = resubmit
        self.stop_event = stop_event
        self.postpone_s = postpone_s

    def run(self, model: str, tickets: list[Ticket]) -> None:
        """One run for ``tickets``; retried while the registry or the broker
        is unreachable. The tickets are done (their offsets committable) only
        once the outcome event is on the broker."""
        from .trainer import RunResult, Trainer

        request_ids = list(dict.fromkeys(t.request_id for t in tickets))
        trigger = tickets[0].trigger
        if len(request_ids) > 1:
            log_event(logger, "requests_coalesced", model=model, request_ids=request_ids)
        policy = self.retry
        began, started_at = time.monotonic(), events.now()
        result: RunResult | None = None
        failures = 0
        in_doubt = False  # a broker failure after the registry may have saved the outcome
        while result is None:
            try:
                trainer = Trainer(self.settings, self.registries.get(), self.window_reader(),
                                  publish_failures=False, retry_unavailable=True)
                result = trainer.run(model, request_ids, trigger,
                                     on_phase=lambda phase: self.status.phase(model, request_ids, phase))
            except dependency_errors() as error:  # opening the registry, or Unavailable from the run
                down = unavailable(error, self.settings)
                if down is None:  # not a reachability problem (e.g. a bad registry): fail the run, keep serving
                    logger.exception("run could not start")
                    result = RunResult(model=model, request_ids=request_ids, trigger=trigger, outcome="failed",
                                       started_at=started_at, reason=f"worker error: {type(error).__name__}: {error}")
                    break
                failures += 1
                in_doubt = in_doubt or down.what == "broker"
                self.registries.drop()
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
        from .trainer import event_metrics, failed_event

        if result.outcome == "failed":
            return failed_event(result)
        if result.outcome != "duplicate" or result.version is None:
            return None
        if not in_doubt and all(ticket.token is None for ticket in tickets):
            return None  # e.g. two workers firing the same schedule tick
        kind = "rejected" if result.decision == "reject" else "promoted"
        return ModelEvent(event=kind, model=result.model, timestamp=events.now(), version=result.version,
                          alias="champion" if kind == "promoted" else None,
                          metrics=event_metrics(result.metrics), request_id=result.request_ids[0],
                          reason=result.reason, details={"republished": True, "request_ids": result.request_ids,
                                                         "trigger": result.trigger})

    def _deliver(self, event: ModelEvent) -> bool:
        """Publish ``event`` with the retry policy; whether it was acknowledged."""
        from driftline.registry.errors import PublishError

        policy = self.retry
        for attempt in range(1, policy.attempts + 1):
            try:
                self.outcomes.publish(event)
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
        delay = self.postpone_s
        log_event(logger, "run_postponed", logging.WARNING, model=model, request_ids=request_ids, error=why,
                  retry_in_s=delay, note="outcome not on the broker: offset left uncommitted")

        def again() -> None:
            if not self.stop_event.is_set():
                for ticket in tickets:
                    self.resubmit(ticket)

        timer = threading.Timer(delay, again)
        timer.daemon = True
        timer.start()
