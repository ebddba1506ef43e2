"""The worker's side of its status file: :class:`StatusBoard` keeps the runs
in progress and the last runs in it, :func:`format_status` prints it for
``driftline worker --status``.

Where the file lives and what it holds (its readers, such as ``driftline
status``, do not import the worker) is :mod:`driftline.worker_status`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

from driftline import events
from driftline.logs import log_event
from driftline.worker_status import read_status, status_path, write_status

__all__ = ["status_path", "read_status", "StatusBoard", "format_status"]

# every part of the daemon logs under the worker's name (operators filter on it)
logger = logging.getLogger("driftline.retrain.worker")


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
        old = read_status(self.path)  # keep history across restarts
        runs = old.get("runs") if old else None
        if isinstance(runs, list):
            self._runs.extend(runs[-keep:])

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
        data = self.snapshot()
        with self._lock:
            try:
                write_status(self.path, data)
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

