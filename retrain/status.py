"""The worker's status file: the runs in progress and the last runs.

The file is one JSON object, written atomically (temporary file + rename)
by :class:`StatusBoard` and read by :func:`read_status`
(``driftline worker --status`` prints it with :func:`format_status`;
``driftline status`` shows each model's last run). Its place is
:func:`status_path`: by default ``<registry dir>/worker-status.json``.

Format (every key optional for a reader)::

    {
      "pid": 4242,                      # the worker process
      "group_id": "driftline-worker",
      "state": "starting" | "running" | "stopped",
      "started_at": 1700000000.0,       # epoch seconds, like every *_at
      "stopped_at": 1700000100.0,       # once stopped
      "updated_at": 1700000050.0,
      "active": [{"model": "churn", "request_ids": ["r1"], "started_at": ..., "phase": "training"}],
      "counts": {"promoted": 3, "failed": 1},   # outcomes since this worker started
      "runs": [ ... ]                   # the last runs, oldest first
    }

Each entry of ``runs`` is a :meth:`driftline.retrain.trainer.RunResult.to_dict`:
``model``, ``request_ids``, ``trigger``, ``outcome`` (promoted | rejected |
registered | failed | duplicate), ``started_at``, ``ended_at``,
``duration_s``, ``version``, ``parent_version``, ``reason``, ``metrics``,
``rows``, ``cleaning``, ``timings``, ``decision``.

This module needs only the standard library and the core :mod:`driftline`
package (no pandas, scikit-learn or kafka), so it can move into the core as is.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

from driftline import events
from driftline.config import Settings
from driftline.logs import log_event

__all__ = ["STATUS_FILE_NAME", "status_path", "read_status", "StatusBoard", "format_status"]

# every part of the daemon logs under the worker's name (operators filter on it)
logger = logging.getLogger("driftline.retrain.worker")

#: The status file's name in the registry directory.
STATUS_FILE_NAME = "worker-status.json"


def status_path(settings: Settings, override: str | None = None) -> Path:
    """Where the status view lives: ``override``, else
    ``<registry dir>/worker-status.json``, else (database registry)
    ``./.driftline/worker-status.json``."""
    if override:
        return Path(override)
    if settings.registry_is_database:
        return Path(".driftline") / STATUS_FILE_NAME
    return Path(settings.registry) / STATUS_FILE_NAME


def read_status(path: Path) -> dict[str, Any]:
    """The status file's object; raises OSError (no file) or ValueError (not JSON)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


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
                old = read_status(self.path)
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

