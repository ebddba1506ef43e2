"""The monitor's one error policy, and the liveness of its agents and timers.

Every agent, timer and task of :class:`driftline.streams.app.MonitorApp` runs under a
:class:`Supervisor`:

* an exception while handling **one message** (or one element of a bulk
  message) is the caller's to catch: it dead-letters that message with the
  exception as the reason and goes on (see :meth:`driftline.streams.stage1.JoinStage.join_batch` and
  :meth:`driftline.streams.stage2.ModelStage.observe`);
* an exception that escapes an agent, a timer or a task is **not about one
  message**: :meth:`Supervisor.fail` logs one line naming the part and the
  error and ends the process at once with :data:`EXIT_FATAL`, so that a
  supervisor (systemd, compose, Kubernetes) restarts it. It ends the process
  without faust's orderly stop on purpose: an orderly stop acknowledges and
  commits the batch in hand, and the batch in hand is exactly what was not
  processed. Ending at once is a ``kill -9``, which the monitor's design makes
  safe (nothing is committed before its outputs and state are on the broker);
* a broker that lost its data (see :mod:`driftline.streams.reset`) restarts the process
  in place (:meth:`Supervisor.restart`: same PID, fresh state).

Liveness: each part reports when it started and when it last made progress;
:meth:`Supervisor.health` says whether every part is running and no timer
is overdue, for ``/health`` and the ``driftline_agent_up`` gauge.

Examples
--------
>>> supervisor = Supervisor("monitor", fail_exit=lambda code: None)
>>> supervisor.expect("expiry", every_s=1.0)
>>> supervisor.started("expiry"); supervisor.beat("expiry")
>>> supervisor.health(now=supervisor.parts["expiry"].last_beat + 0.5)["ok"]
True
>>> supervisor.health(now=supervisor.parts["expiry"].last_beat + 60)["parts"]["expiry"]["state"]
'overdue'
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from dataclasses import dataclass
from functools import wraps
from typing import Any, Awaitable, Callable

from driftline import observability

__all__ = ["Supervisor", "EXIT_FATAL", "describe_error"]

log = logging.getLogger("driftline.monitor")

#: Exit code after an error that is not about one message (EX_SOFTWARE).
EXIT_FATAL = 70
#: A timer is overdue after this many intervals without running.
_OVERDUE_INTERVALS = 10
_OVERDUE_MIN_S = 30.0


def describe_error(error: BaseException, limit: int = 300) -> str:
    """``Type: message``, bounded, for logs and dead letters."""
    try:
        text = str(error)
    except Exception:  # a broken __str__ must not hide the error itself
        text = "<unprintable>"
    if len(text) > limit:
        text = text[:limit] + "…"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@dataclass
class _Part:
    name: str
    every_s: float | None = None  # timers: their interval
    state: str = "starting"  # starting | scheduled (a timer before its first run) | running | failed
    started_at: float | None = None
    last_beat: float | None = None


class Supervisor:
    """Runs the parts of one daemon under one error policy.

    Parameters
    ----------
    component
        Label of the ``driftline_agent_up`` gauge (``monitor``).
    fail_exit
        Ends the process after a fatal error (default :func:`os._exit`);
        tests pass a recorder.
    """

    def __init__(self, component: str, fail_exit: Callable[[int], Any] | None = None):
        self.component = component
        self.parts: dict[str, _Part] = {}
        self._fail_exit = fail_exit or _exit_now
        self.failure: str | None = None
        #: ``async (part, error) -> handled``: a last look before :meth:`fail`
        #: (the monitor checks for a broker that lost its data there).
        self.before_fail: Callable[[str, BaseException], Awaitable[bool]] | None = None

    # -- liveness ---------------------------------------------------------------------
    def expect(self, name: str, every_s: float | None = None) -> None:
        """Declare a part (a timer with its interval, or an agent/task).
        A timer counts as up from here: its first run comes one interval on."""
        part = self.parts[name] = _Part(name, every_s)
        if every_s is not None:
            part.state, part.last_beat = "scheduled", time.monotonic()
        observability.AGENT_UP.labels(self.component, name).set(int(every_s is not None))

    def started(self, name: str) -> None:
        part = self.parts.setdefault(name, _Part(name))
        part.state = "running"
        part.started_at = part.last_beat = time.monotonic()
        observability.AGENT_UP.labels(self.component, name).set(1)

    def beat(self, name: str) -> None:
        """``name`` made progress (a timer ran, an agent handled a batch)."""
        self.parts[name].last_beat = time.monotonic()

    def health(self, now: float | None = None) -> dict[str, Any]:
        """``{"ok": bool, "parts": {name: {"state", "idle_s"}}}``: ok when every
        part runs and no timer missed :data:`_OVERDUE_INTERVALS` runs."""
        now = time.monotonic() if now is None else now
        parts = {}
        ok = self.failure is None
        for name, part in self.parts.items():
            state = part.state
            idle = None if part.last_beat is None else round(now - part.last_beat, 3)
            if (state in ("running", "scheduled") and part.every_s is not None and idle is not None
                    and idle > max(_OVERDUE_MIN_S, _OVERDUE_INTERVALS * part.every_s)):
                state = "overdue"
            ok = ok and state in ("running", "scheduled")
            parts[name] = {"state": state, "idle_s": idle}
        return {"ok": ok, "component": self.component, "failure": self.failure, "parts": parts}

    # -- the error policy ---------------------------------------------------------------
    def guard(self, name: str, every_s: float | None = None) -> Callable:
        """Decorator for an agent, timer or task coroutine function: marks it
        running, and turns any exception out of it into :meth:`fail`."""
        self.expect(name, every_s)

        def wrap(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            @wraps(fn)
            async def run(*args: Any, **kwargs: Any) -> Any:
                if self.parts[name].state != "running":
                    self.started(name)
                try:
                    result = await fn(*args, **kwargs)
                except asyncio.CancelledError:  # stopping: not a failure
                    raise
                except Exception as error:  # the daemon's error policy: the one place every unexpected error ends up
                    if self.before_fail is not None and await self.before_fail(name, error):
                        return None  # handled (a restart is under way)
                    self.fail(name, error)
                    raise
                if every_s is not None:
                    self.beat(name)
                return result

            return run

        return wrap

    def fail(self, name: str, error: BaseException) -> None:
        """An error that is not about one message: one line, then exit."""
        self.failure = f"{name}: {describe_error(error)}"
        if name in self.parts:
            self.parts[name].state = "failed"
            observability.AGENT_UP.labels(self.component, name).set(0)
        log.critical("%s stopping: %s failed (%s); exiting with code %d so that a supervisor restarts it",
                     self.component, name, describe_error(error), EXIT_FATAL)
        log.debug("%s failure traceback", name, exc_info=error)
        _flush_logs()
        self._fail_exit(EXIT_FATAL)

    def restart(self, reason: str) -> None:
        """Replace this process by a fresh run of the same command (same PID):
        the faust app, its consumer positions and its in-memory state start
        anew, as after a restart by a supervisor, but without one."""
        log.warning("%s restarting in place: %s", self.component, reason)
        _flush_logs()
        argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
        os.execv(sys.executable, [sys.executable, *argv[1:]])


def _flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()


def _exit_now(code: int) -> None:  # pragma: no cover - ends the process
    os._exit(code)
