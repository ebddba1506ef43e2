"""The retraining worker's status file: where it is and what it holds.

The worker (``driftline worker``) writes it; ``driftline worker status``,
``driftline status`` and operators read it. It lives here, in the core, so
its readers need not import the worker.

Where: ``--status-file`` if given, else ``<registry dir>/worker-status.json``,
else (a database registry) ``./.driftline/worker-status.json``.

What: one JSON object (indented, sorted keys), replaced atomically (a
temporary file beside it, then a rename), so a reader never sees half of
it. Every key is optional for a reader::

    {
      "pid": 4242,                      # the worker process
      "group_id": "driftline-worker",
      "state": "starting" | "running" | "stopped",
      "started_at": 1700000000.0,       # epoch seconds, like every *_at
      "stopped_at": 1700000100.0,       # once stopped
      "updated_at": 1700000050.0,
      "active": [{"model": "churn", "request_ids": ["r1"], "started_at": ..., "phase": "training"}],
      "counts": {"promoted": 3, "failed": 1},   # outcomes since this worker started
      "runs": [ ... ]                   # the last runs, oldest first, kept across restarts
    }

Each entry of ``runs`` is a finished run: ``model``, ``request_ids``,
``trigger``, ``outcome`` (promoted | rejected | registered | failed |
duplicate), ``started_at``, ``ended_at``, ``duration_s``, ``version``,
``parent_version``, ``reason``, ``metrics``, ``rows``, ``cleaning``,
``timings``, ``decision``.

Examples
--------
>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "worker-status.json"
>>> write_status(path, {"state": "running", "runs": [{"model": "churn", "outcome": "promoted", "version": 2}]})
>>> last_runs(read_status(path))["churn"]["version"]
2
>>> read_status(path.with_name("missing.json")) is None
True
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .config import Settings

__all__ = ["FILE_NAME", "status_path", "read_status", "write_status", "last_runs"]

FILE_NAME = "worker-status.json"

#: The fields of a finished run that summaries show.
RUN_FIELDS = ("outcome", "version", "trigger", "started_at", "ended_at", "duration_s", "reason", "rows")


def status_path(settings: "Settings", override: str | None = None) -> Path:
    """Where the status file lives: ``override``, else
    ``<registry dir>/worker-status.json``, else (database registry)
    ``./.driftline/worker-status.json``."""
    if override:
        return Path(override)
    if settings.registry_is_database:
        return Path(".driftline") / FILE_NAME
    return Path(settings.registry) / FILE_NAME


def write_status(path: Path, data: dict[str, Any]) -> None:
    """Replace the file at ``path`` with ``data`` atomically (raises
    :class:`OSError` when it cannot be written)."""
    text = json.dumps(data, indent=2, sort_keys=True, default=str)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_status(path: Path) -> dict[str, Any] | None:
    """The status file's object, or ``None`` when there is none (no file, not
    readable, not JSON, not an object)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def last_runs(data: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The last finished run per model (:data:`RUN_FIELDS` of it)."""
    last: dict[str, dict[str, Any]] = {}
    runs = (data or {}).get("runs")
    for run in runs if isinstance(runs, list) else []:
        if isinstance(run, dict) and isinstance(run.get("model"), str):
            last[run["model"]] = {k: run.get(k) for k in RUN_FIELDS}  # runs are oldest first
    return last
