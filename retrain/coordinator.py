"""Debouncing and one run per model, on the worker's run threads.

Requests for a model inside its policy's ``debounce_s`` (counted from the
first one) coalesce into one run; requests arriving while a run is busy wait
for the next run. Runs execute on daemon threads (``concurrency`` at once).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Ticket", "Coordinator"]

# every part of the daemon logs under the worker's name (operators filter on it)
logger = logging.getLogger("driftline.retrain.worker")


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
            except Exception:  # pragma: no cover - the run threads' error policy: log, keep the thread
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

