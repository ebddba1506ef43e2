"""Child processes in tests: stop one as a supervisor would."""

from __future__ import annotations

import signal
import subprocess


def stop(proc: subprocess.Popen, timeout_s: float = 60.0) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout_s``; the exit code (negative: the signal)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode
