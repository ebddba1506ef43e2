"""Retrain schedules: APScheduler (3.x ``BackgroundScheduler``) jobs, one per
model with ``retrain.schedule`` (``interval_s`` or ``cron``), re-synced when
a ``policy_changed``/``registered`` model event arrives and every
``policy_refresh_s``."""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable

from .coordinator import Ticket
from .log import log_event

__all__ = ["make_trigger", "ScheduleBook"]

# every part of the daemon logs under the worker's name (operators filter on it)
logger = logging.getLogger("driftline.retrain.worker")


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
        from apscheduler.schedulers import SchedulerNotRunningError

        try:
            self._scheduler.shutdown(wait=False)
        except SchedulerNotRunningError:  # stopping before start() ran
            pass

