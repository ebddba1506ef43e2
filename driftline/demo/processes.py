"""The demo's child processes: ``driftline`` daemons in their own process
groups, their ``/metrics`` endpoints, and cleanup steps that must not stop
the other cleanup steps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .errors import DemoError

__all__ = ["Daemon", "scrape_metrics", "wait_for_port", "quietly"]


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


def wait_for_port(port: int, daemon: Daemon, timeout: float) -> None:
    """Wait until ``daemon`` serves ``/metrics`` on ``port``; :class:`DemoError`
    when it exits first or does not within ``timeout`` seconds."""
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


def quietly(what: str, step) -> None:
    """Run one clean-up ``step``; a failure is printed, not raised, so the
    steps after it still run."""
    try:
        step()
    except Exception as error:  # the clean-up's one error policy: report and go on, the other steps still run
        print(f"driftline demo: {what} failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
