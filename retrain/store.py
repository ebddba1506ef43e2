"""The training-data store: per-model, time-ordered Parquet segments.

Why: reading the whole ``labeled`` topic for every run costs what the topic
costs, not what the window costs. Instead a background :class:`StoreWriter`
(one consumer group, ``<worker group>-store``) reads ``labeled``
continuously and appends, per model, immutable Parquet segments under the
store directory (by default ``<registry dir>/training-data``). A run reads
only the newest segments of its model that cover the window
(:meth:`TrainingStore.read_window`), so its cost is proportional to the
window (plus at most the segments that straddle its oldest edge).

Layout: ``<root>/<model>/<max_ts_ms>-<min_ts_ms>-<rows>-<id>.parquet``. The
name carries the time span, so choosing segments needs a directory listing
and no file opens. Each segment's Parquet footer records (key
``driftline``) the topic, the per-partition first/last offsets, the rows,
the writer and, for a merged segment, the segments it replaces.

Durability, in this order:

1. write ``.tmp-<host>-<pid>-<id>``, fsync it, rename to the segment name,
   fsync the directory (a kill -9 leaves a temporary file, never a torn
   segment; readers ignore temporary files, the next start removes those
   of dead writers);
2. only when every buffered row is in a durable segment, commit the
   consumer offsets past the flushed messages;
3. after a (re)assignment, the first message of a partition tells where
   the writer resumed; every row the segments already hold from there on
   (written, then killed before the commit) is skipped by its
   (partition, offset, index), so nothing is stored twice and a flush cut
   short between two models' segments loses nothing. Readers deduplicate
   by the same identity too.

Maintenance, every ``retention_interval_s``: :meth:`TrainingStore.enforce_retention`
deletes a model's segments whose newest row is older than the policy's
``retrain.store_retention_s``; :meth:`TrainingStore.compact` merges runs of
small segments (a model with a trickle of traffic gets one small segment
per flush). A merged segment keeps each row's original segment, so lineage
naming a replaced segment still resolves to exactly its rows.

Examples
--------
>>> import tempfile
>>> from driftline.events import LabeledRecord
>>> store = TrainingStore(tempfile.mkdtemp())
>>> rows = [StoredRow(0, i, 0, LabeledRecord(event_id=f"e{i}", model="m", model_version=1,
...         features={"x": float(i)}, prediction=0, label=i % 2, prediction_timestamp=100.0 + i,
...         label_timestamp=100.0 + i)) for i in range(5)]
>>> info = store.write_flush("labeled", {"m": rows})[0]
>>> info.rows, [s.rows for s in store.segments("m")]
(5, [5])
>>> window = store.read_window("m", window_rows=3)
>>> [r.record.event_id for r in window.rows], window.rows_read
(['e2', 'e3', 'e4'], 5)
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import orjson

from driftline import events
from driftline.config import Settings
from driftline.errors import DriftlineError
from driftline.events import LabeledRecord
from driftline.observability import count_dead_letters

from .data import Window, WindowRow
from .log import log_event
from .resilience import dependency_errors

__all__ = ["StoredRow", "SegmentInfo", "StoreWindow", "TrainingStore", "StoreWriter", "StoreWindowReader",
           "store_root", "start_store", "StoreError", "PAUSE_ENV"]

logger = logging.getLogger("driftline.retrain.store")

SUFFIX = ".parquet"
TMP_PREFIX = ".tmp-"
META_KEY = b"driftline"
#: Test hook: ``<phase>:<seconds>`` pauses the writer at ``before_rename``
#: (temporary file written) or ``before_commit`` (segments renamed, offsets
#: not committed yet), so a test can kill it there.
PAUSE_ENV = "DRIFTLINE_STORE_PAUSE"
_HOST = socket.gethostname().replace("-", "_")[:64] or "host"


def store_root(settings: Settings, override: str | None = None) -> Path:
    """Where the store lives: ``override``, else ``<registry dir>/training-data``,
    else (database registry) ``<registry artifacts dir>-training-data``
    (never inside the artifacts directory: the registry's gc owns that)."""
    if override:
        return Path(override)
    if settings.registry_is_database:
        artifacts = Path(settings.registry_artifacts or ".driftline/artifacts")
        return artifacts.with_name(artifacts.name + "-training-data")
    return Path(settings.registry) / "training-data"


class StoredRow(NamedTuple):
    """One joined record and where it came from (``index``: its position in
    a bulk message, so (partition, offset, index) identifies it)."""

    partition: int
    offset: int
    index: int
    record: LabeledRecord


@dataclass(frozen=True)
class SegmentInfo:
    """A segment as its file name describes it."""

    model: str
    name: str
    path: Path
    max_ts: float
    min_ts: float
    rows: int

    @classmethod
    def parse(cls, model: str, path: Path) -> "SegmentInfo | None":
        parts = path.name[: -len(SUFFIX)].split("-")
        if not path.name.endswith(SUFFIX) or len(parts) != 4 or path.name.startswith("."):
            return None
        try:
            return cls(model, path.name, path, int(parts[0]) / 1000.0, int(parts[1]) / 1000.0, int(parts[2]))
        except ValueError:
            return None


@dataclass
class StoreWindow(Window):
    """A window read from the store, with what it cost and its exact origin."""

    segments: list[dict[str, Any]] = field(default_factory=list)
    rows_read: int = 0
    segments_listed: int = 0
    min_key: list | None = None  # [timestamp, partition, offset, index] of the oldest row kept
    duplicates: int = 0

    def lineage(self) -> dict[str, Any]:
        data = super().lineage()
        data.update(source="store", segments=self.segments, rows_read=self.rows_read,
                    segments_read=len(self.segments), segments_listed=self.segments_listed,
                    min_key=self.min_key, duplicates_skipped=self.duplicates)
        return data


class StoreError(DriftlineError):
    """The store cannot be used (for example its directory is not writable)."""


def _pause(phase: str) -> None:
    spec = os.environ.get(PAUSE_ENV, "")
    if spec.partition(":")[0] == phase:
        log_event(logger, "store_pause", phase=phase, seconds=float(spec.partition(":")[2] or 0))
        time.sleep(float(spec.partition(":")[2] or 0))


def _alive(host: str, pid: int) -> bool:
    """Whether the writer that left a file may still be running (a pid on
    another host cannot be checked: assume alive)."""
    if host != _HOST:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TrainingStore:
    """Per-model Parquet segments under ``root`` (see the module docstring).

    Parameters
    ----------
    root
        The store directory (created when needed).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._meta_cache: dict[Path, dict] = {}
        self._lock = threading.Lock()

    # -- listing ---------------------------------------------------------------------
    def models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def segments(self, model: str) -> list[SegmentInfo]:
        """The model's segments, oldest newest-row first."""
        directory = self.root / model
        if not directory.is_dir():
            return []
        found = [SegmentInfo.parse(model, p) for p in directory.iterdir()]
        return sorted((s for s in found if s is not None), key=lambda s: (s.max_ts, s.name))

    def meta(self, path: Path) -> dict:
        """A segment's footer metadata (cached: segments never change)."""
        cached = self._meta_cache.get(path)
        if cached is None:
            import pyarrow.parquet as pq

            raw = pq.read_metadata(path).metadata or {}
            cached = json.loads(raw.get(META_KEY, b"{}"))
            with self._lock:
                self._meta_cache[path] = cached
        return cached

    # -- writing ---------------------------------------------------------------------
    def write_flush(self, topic: str, by_model: dict[str, Sequence[StoredRow]], *,
                    segment_rows: int = 20_000) -> list[SegmentInfo]:
        """Write buffered rows: per model, segments of at most
        ``segment_rows`` rows sorted by time."""
        written = []
        for model, rows in sorted(by_model.items()):
            events.validate_name(model)  # a directory name: never a path
            ordered = sorted(rows, key=lambda r: (r.record.label_timestamp, r.partition, r.offset, r.index))
            for start in range(0, len(ordered), segment_rows):
                written.extend(self._write(topic, model, ordered[start:start + segment_rows]))
        return written

    def _write(self, topic: str, model: str, rows: Sequence[StoredRow], *, sources: Sequence[str] | None = None,
               replaces: Sequence[str] = ()) -> list[SegmentInfo]:
        """One segment, durably: temporary file, fsync, rename, fsync the directory."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not rows:
            return []
        order = sorted(range(len(rows)), key=lambda i: (rows[i].record.label_timestamp, rows[i].partition,
                                                        rows[i].offset, rows[i].index))
        chunk = [rows[i] for i in order]
        max_ms = int(math.ceil(chunk[-1].record.label_timestamp * 1000))
        min_ms = int(math.floor(chunk[0].record.label_timestamp * 1000))
        name = f"{max_ms:016d}-{min_ms:016d}-{len(chunk):08d}-{uuid.uuid4().hex[:12]}{SUFFIX}"
        offsets: dict[str, list[int]] = {}
        for row in chunk:
            span = offsets.setdefault(str(row.partition), [row.offset, row.offset])
            span[0], span[1] = min(span[0], row.offset), max(span[1], row.offset)
        meta = {"topic": topic, "model": model, "rows": len(chunk), "offsets": offsets,
                "min_ts": chunk[0].record.label_timestamp, "max_ts": chunk[-1].record.label_timestamp,
                "created_at": events.now(), "writer": f"{_HOST}-{os.getpid()}", "replaces": list(replaces)}
        columns = {
            "partition": pa.array([r.partition for r in chunk], pa.int32()),
            "offset": pa.array([r.offset for r in chunk], pa.int64()),
            "index": pa.array([r.index for r in chunk], pa.int32()),
            "event_id": pa.array([r.record.event_id for r in chunk], pa.string()),
            "timestamp": pa.array([r.record.label_timestamp for r in chunk], pa.float64()),
            "record": pa.array([events.encode(r.record, validate=False) for r in chunk], pa.binary()),
        }
        if sources is not None:
            columns["source"] = pa.array([sources[i] for i in order], pa.string())
        table = pa.table(columns).replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
        directory = self.root / model
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f"{TMP_PREFIX}{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        pq.write_table(table, tmp, compression="zstd")
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _pause("before_rename")
        final = directory / name
        os.replace(tmp, final)
        _fsync_dir(directory)
        info = SegmentInfo.parse(model, final)
        assert info is not None
        return [info]

    # -- recovery and deduplication ------------------------------------------------------
    def recover(self) -> int:
        """Remove temporary files of dead writers and segments that a
        finished compaction replaced (killed before it deleted them);
        returns how many files were removed."""
        removed = 0
        for model in self.models():
            directory = self.root / model
            for path in directory.iterdir():
                if not path.name.startswith(TMP_PREFIX):
                    continue
                parts = path.name[len(TMP_PREFIX):].split("-")
                try:
                    dead = len(parts) >= 2 and not _alive(parts[0], int(parts[1]))
                except ValueError:
                    dead = False
                if dead or time.time() - path.stat().st_mtime > 3600:
                    path.unlink(missing_ok=True)
                    removed += 1
                    log_event(logger, "store_temp_removed", path=str(path))
            removed += self._drop_replaced(model)
        return removed

    def _drop_replaced(self, model: str) -> int:
        segments = self.segments(model)
        replaced = {name for info in segments for name in self.meta(info.path).get("replaces", [])}
        gone = [info for info in segments if info.name in replaced]
        for info in gone:
            info.path.unlink(missing_ok=True)
            self._meta_cache.pop(info.path, None)
        if gone:
            log_event(logger, "store_replaced_removed", model=model, segments=len(gone))
        return len(gone)

    def stored_ids(self, topic: str, partition: int, from_offset: int) -> set[tuple[int, int]]:
        """``(offset, index)`` of every stored row of ``topic``/``partition``
        at or after ``from_offset``: what a restarted writer must not store
        again (rows written after the last commit). Row by row, so a flush
        cut short between two models' segments loses nothing."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        found: set[tuple[int, int]] = set()
        for model in self.models():
            for info in self.segments(model):
                meta = self.meta(info.path)
                span = meta.get("offsets", {}).get(str(partition))
                if meta.get("topic") != topic or span is None or span[1] < from_offset:
                    continue
                try:
                    table = pq.read_table(info.path, columns=["partition", "offset", "index"])
                except FileNotFoundError:
                    continue
                mask = pc.and_(pc.equal(table["partition"], partition), pc.greater_equal(table["offset"], from_offset))
                tail = table.filter(mask)
                found.update(zip(tail["offset"].to_pylist(), tail["index"].to_pylist()))
        return found

    # -- compaction ----------------------------------------------------------------------
    def compact(self, model: str, target_rows: int = 20_000) -> list[SegmentInfo]:
        """Merge runs of small neighbouring segments (fewer than half of
        ``target_rows`` rows) into segments of at most ``target_rows``, so a
        model with a trickle of traffic does not end up with thousands of
        files. The merged segment names what it replaces and keeps each
        row's original segment (column ``source``), so lineage that names a
        replaced segment still finds exactly its rows."""
        runs: list[list[SegmentInfo]] = []
        current: list[SegmentInfo] = []
        for info in self.segments(model):
            if info.rows < target_rows // 2 and sum(s.rows for s in current) + info.rows <= target_rows:
                current.append(info)
                continue
            if len(current) > 1:
                runs.append(current)
            current = [info] if info.rows < target_rows // 2 else []
        if len(current) > 1:
            runs.append(current)
        merged = []
        for run in runs:
            rows: list[StoredRow] = []
            sources: list[str] = []
            replaces: list[str] = []
            for info in run:
                part, part_sources = self._read_with_sources(info)
                rows.extend(part)
                sources.extend(part_sources)
                replaces.extend(self.meta(info.path).get("replaces", []))
                replaces.append(info.name)
            topic = self.meta(run[0].path).get("topic", "labeled")
            merged.extend(self._write(topic, model, rows, sources=sources, replaces=replaces))
            self._drop_replaced(model)
            log_event(logger, "store_compacted", model=model, segments=len(run), rows=len(rows))
        return merged

    def _read_with_sources(self, info: SegmentInfo) -> tuple[list[StoredRow], list[str]]:
        import pyarrow.parquet as pq

        rows = self.read_segment(info)
        schema = pq.read_schema(info.path)
        if "source" in schema.names:
            return rows, pq.read_table(info.path, columns=["source"]).column("source").to_pylist()
        return rows, [info.name] * len(rows)

    # -- retention -----------------------------------------------------------------------
    def enforce_retention(self, model: str, retention_s: float | None, now: float | None = None) -> list[str]:
        """Delete the model's segments whose newest row is older than
        ``retention_s`` (``None``: keep everything); returns their names."""
        if retention_s is None:
            return []
        cutoff = (events.now() if now is None else now) - retention_s
        removed = []
        for info in self.segments(model):
            if info.max_ts < cutoff:
                info.path.unlink(missing_ok=True)
                self._meta_cache.pop(info.path, None)
                removed.append(info.name)
        if removed:
            _fsync_dir(self.root / model)
            log_event(logger, "store_retention", model=model, removed=len(removed), retention_s=retention_s)
        return removed

    # -- reading -------------------------------------------------------------------------
    def read_segment(self, info: SegmentInfo) -> list[StoredRow]:
        import pyarrow.parquet as pq

        table = pq.read_table(info.path, columns=["partition", "offset", "index", "record"])
        parts, offsets, indexes, blobs = (table.column(c).to_pylist() for c in
                                          ("partition", "offset", "index", "record"))
        # validated when ingested, written by us: build the records without checking every field again
        # (a changed segment is caught by the data hash in the lineage)
        objects = orjson.loads(b"[" + b",".join(blobs) + b"]")  # one parse for the segment
        return [StoredRow(p, o, i, LabeledRecord(**obj)) for p, o, i, obj in zip(parts, offsets, indexes, objects)]

    def read_window(self, model: str, *, window_rows: int, window_s: float | None = None,
                    now: float | None = None, topic: str = "labeled") -> StoreWindow:
        """The newest ``window_rows`` rows of ``model`` (younger than
        ``window_s`` when given), oldest first, reading segments newest
        first and stopping as soon as no older segment can hold a row of
        the window."""
        for attempt in range(3):
            try:
                with _gc_paused():
                    return self._read_window(model, window_rows, window_s, now, topic)
            except FileNotFoundError:  # compaction or retention removed a segment meanwhile: list again
                log_event(logger, "store_read_retried", model=model, attempt=attempt + 1)
        with _gc_paused():
            return self._read_window(model, window_rows, window_s, now, topic)

    def _read_window(self, model: str, window_rows: int, window_s: float | None, now: float | None,
                     topic: str) -> StoreWindow:
        started = time.monotonic()
        now = events.now() if now is None else now
        oldest = None if window_s is None else now - window_s
        listed = self.segments(model)
        kept: dict[tuple, tuple[tuple, StoredRow]] = {}
        used: list[dict[str, Any]] = []
        rows_read = duplicates = 0
        for info in reversed(listed):
            if oldest is not None and info.max_ts < oldest:
                break
            if len(kept) >= window_rows:
                # the window's oldest key so far: a segment whose newest row is older cannot matter
                boundary = sorted(k for k, _ in kept.values())[-window_rows][0]
                if info.max_ts < boundary:
                    break
            rows = self.read_segment(info)  # FileNotFoundError: read_window lists again
            rows_read += len(rows)
            used.append({"id": f"{model}/{info.name}", "rows": len(rows)})
            for row in rows:
                ident = (row.partition, row.offset, row.index)
                if ident in kept:
                    duplicates += 1
                    continue
                if oldest is not None and row.record.label_timestamp < oldest:
                    continue
                kept[ident] = ((row.record.label_timestamp, row.partition, row.offset, row.index), row)
        chosen = sorted(kept.values(), key=lambda kv: kv[0])[-window_rows:] if kept else []
        window = StoreWindow(topic, [WindowRow(r.partition, r.offset, r.record) for _, r in chosen],
                             messages=rows_read, read_s=time.monotonic() - started)
        window.segments = used
        window.rows_read = rows_read
        window.segments_listed = len(listed)
        window.duplicates = duplicates
        window.min_key = list(chosen[0][0]) if chosen else None
        log_event(logger, "window_read", model=model, source="store", rows=len(window.rows), rows_read=rows_read,
                  segments_read=len(used), segments_listed=len(listed), duplicates=duplicates,
                  read_s=round(window.read_s, 3))
        return window

    def rows_from_lineage(self, window_lineage: dict[str, Any]) -> list[WindowRow]:
        """The exact rows a store window held: the listed segments' rows
        from ``min_key`` on. Raises FileNotFoundError naming a missing segment."""
        with _gc_paused():
            return self._rows_from_lineage(window_lineage)

    def _rows_from_lineage(self, window_lineage: dict[str, Any]) -> list[WindowRow]:
        kept: dict[tuple, tuple[tuple, StoredRow]] = {}
        for entry in window_lineage.get("segments", []):
            model, _, name = entry["id"].partition("/")
            path = self.root / model / name
            info = SegmentInfo.parse(model, path)
            if info is not None and path.exists():
                rows = self.read_segment(info)
            else:  # compacted since: the merged segment keeps each row's original segment
                rows = self._rows_of_replaced(model, name)
                if rows is None:
                    raise FileNotFoundError(f"segment {entry['id']} is no longer in the store {self.root} "
                                            "(removed by retention?)")
            for row in rows:
                key = (row.record.label_timestamp, row.partition, row.offset, row.index)
                kept.setdefault((row.partition, row.offset, row.index), (key, row))
        min_key = tuple(window_lineage.get("min_key") or ())
        chosen = sorted((kv for kv in kept.values() if not min_key or kv[0] >= min_key), key=lambda kv: kv[0])
        return [WindowRow(r.partition, r.offset, r.record) for _, r in chosen]

    def _rows_of_replaced(self, model: str, name: str) -> list[StoredRow] | None:
        for info in self.segments(model):
            if name in self.meta(info.path).get("replaces", []):
                rows, sources = self._read_with_sources(info)
                return [row for row, source in zip(rows, sources) if source == name]
        return None


@contextlib.contextmanager
def _gc_paused():
    """Building tens of thousands of small objects makes the cyclic garbage
    collector scan the whole heap again and again (it was half of a window
    read); none of them form cycles, so it simply runs later."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the writer --------------------------------------------------------------------------


class StoreWriter:
    """Consume ``labeled`` and append per-model segments (see module docstring).

    Parameters
    ----------
    settings
        Broker and topic settings.
    store
        The store to write.
    group_id
        Consumer group (the worker uses ``<its group>-store``).
    flush_interval_s
        Write buffered rows at least this often.
    segment_rows
        Largest segment (rows); a full buffer is written at once.
    quiet_ms
        :meth:`sync` counts the writer caught up after this long without news
        (or once every partition delivered a message written after the sync).
    retention_for
        Model -> retention seconds (``None``: keep); from the model's policy.
    retention_interval_s
        How often retention runs.
    dead_letter
        ``dead_letter(message, error)`` for records that do not decode;
        default: a producer of the writer's own to the dead-letter topic.
    """

    def __init__(self, settings: Settings, store: TrainingStore, group_id: str, *,
                 flush_interval_s: float = 2.0, segment_rows: int = 20_000, quiet_ms: int = 1000,
                 retention_for: Callable[[str], float | None] | None = None, retention_interval_s: float = 60.0,
                 session_timeout_ms: int = 10_000, heartbeat_interval_ms: int = 3_000):
        if segment_rows < 1:
            raise ValueError(f"segment_rows must be at least 1 (got {segment_rows})")
        self.settings = settings
        self.store = store
        self.topic = settings.topics.labeled
        self.group_id = group_id
        self.flush_interval_s = flush_interval_s
        self.segment_rows = segment_rows
        self.quiet_ms = quiet_ms
        self.retention_for = retention_for
        self.retention_interval_s = retention_interval_s
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.stop_event = threading.Event()
        self.rows_written = 0
        self.segments_written = 0
        self.dead_letters = 0
        self._buffer: dict[str, list[StoredRow]] = {}
        self._buffered = 0
        self._first_buffered: float | None = None
        self._consumed: dict[Any, int] = {}  # tp -> next offset, not yet committed
        self._fresh: set[int] = set()  # partitions (re)assigned: their stored tail is not known yet
        self._tail: dict[int, set[tuple[int, int]]] = {}  # partition -> stored (offset, index) past the commit
        self._tail_max: dict[int, int] = {}
        self.duplicates_skipped = 0
        self._last_news: dict[int, float] = {}  # partition -> when its last messages were processed
        self._late: dict[int, float] = {}  # partition -> newest message timestamp (s) seen
        self._cond = threading.Condition()
        self._sync_requests: list[float] = []  # wall-clock times of open sync requests
        self._synced_at = 0.0
        self._consumer = None
        self._producer = None
        self._thread: threading.Thread | None = None
        self._last_retention = 0.0
        self.error: str | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> "StoreWriter":
        self.store.recover()
        self._consumer = self._make_consumer()
        self._thread = threading.Thread(target=self._serve, name="retrain-store", daemon=True)
        self._thread.start()
        log_event(logger, "store_started", root=str(self.store.root), group_id=self.group_id)
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def sync(self, timeout_s: float = 60.0) -> bool:
        """Wait until everything published before this call is in the store
        (every partition delivered a newer message, or none delivered
        anything for ``quiet_ms``), flushed; False after ``timeout_s`` (the
        run then reads what is stored, and says so in the log)."""
        if self._thread is None or not self._thread.is_alive():
            return False
        asked = time.time()
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._sync_requests.append(asked)
            self._cond.notify_all()
            while self._synced_at < asked:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    log_event(logger, "store_sync_timeout", logging.WARNING, timeout_s=timeout_s)
                    return False
                self._cond.wait(min(left, 0.2))
        return True

    def _make_consumer(self):
        from kafka import KafkaConsumer
        from kafka.consumer.subscription_state import ConsumerRebalanceListener

        writer = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                writer._flush()  # what we hold of them is durable and committed before they move

            def on_partitions_assigned(self, assigned):
                # Rows the segments already hold (written after the last commit) are
                # skipped row by row in _add, so a crash before the commit stores nothing twice.
                writer.store.recover()
                for tp in assigned:
                    writer._fresh.add(tp.partition)
                    writer._tail.pop(tp.partition, None)
                    writer._last_news[tp.partition] = time.monotonic()
                log_event(logger, "store_partitions_assigned", partitions=sorted(tp.partition for tp in assigned))

        consumer = KafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_list, group_id=self.group_id,
            client_id="driftline-worker-store", enable_auto_commit=False, auto_offset_reset="earliest",
            session_timeout_ms=self.session_timeout_ms, heartbeat_interval_ms=self.heartbeat_interval_ms,
            max_poll_records=5000, fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=16 * 1024 * 1024,
            **self.settings.kafka_security(),
        )
        consumer.subscribe([self.topic], listener=Listener())
        return consumer

    # -- the loop ------------------------------------------------------------------------
    def _serve(self) -> None:
        from kafka.errors import KafkaError

        backoff = 1.0
        try:
            while not self.stop_event.is_set():
                try:
                    while not self.stop_event.is_set():
                        self.step()
                        backoff = 1.0
                    self._flush()
                except Exception as error:  # the writer's single error policy: log, start over, keep serving
                    if isinstance(error, KafkaError):  # the broker went away: expected, one line, no traceback
                        log_event(logger, "store_writer_broker_error", logging.WARNING,
                                  error=f"{type(error).__name__}: {error}",
                                  action="restarting from the committed offsets")
                    else:
                        logger.exception("store writer failed; restarting from the committed offsets")
                    self.error = f"{type(error).__name__}: {error}"
                    self._restart()
                    self.stop_event.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
        finally:
            self._close()
            with self._cond:
                self._cond.notify_all()

    def _restart(self) -> None:
        """Drop what is not durable and consume again from the committed
        offsets (rows the segments already hold are skipped row by row)."""
        from kafka.errors import KafkaError

        self._buffer, self._buffered, self._first_buffered = {}, 0, None
        self._consumed.clear()
        self._close()
        try:
            self._consumer = self._make_consumer()
        except (KafkaError, OSError) as error:  # broker away: the next attempt retries
            log_event(logger, "store_consumer_failed", logging.WARNING, error=f"{type(error).__name__}: {error}")
            self._consumer = None

    def _close(self) -> None:
        from kafka.errors import KafkaError

        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except (KafkaError, OSError):  # closing a broken connection
                pass
            self._consumer = None
        if self._producer is not None:
            try:
                self._producer.close(10)
            except (KafkaError, OSError):  # closing a broken connection
                pass
            self._producer = None

    def step(self, poll_ms: int = 200) -> int:
        """One poll: buffer, flush when due, answer sync requests; returns
        the messages consumed."""
        if self._consumer is None:
            self._consumer = self._make_consumer()
        with self._cond:
            pending = list(self._sync_requests)
        batch = self._consumer.poll(timeout_ms=poll_ms)
        count = 0
        for tp, messages in batch.items():
            for message in messages:
                self._add(message)
                count += 1
            if messages:
                stamp = messages[-1].timestamp
                if stamp is not None:
                    self._late[tp.partition] = max(self._late.get(tp.partition, 0.0), stamp / 1000.0)
        now = time.monotonic()
        for tp, messages in batch.items():  # after decoding: time spent on a big batch is not silence
            if messages:
                self._last_news[tp.partition] = now
        due = self._first_buffered is not None and now - self._first_buffered >= self.flush_interval_s
        if self._buffered >= self.segment_rows or due:
            self._flush()
        if pending and self._caught_up(min(pending)):
            self._flush()
            with self._cond:
                self._synced_at = max(self._synced_at, max(pending))
                self._sync_requests = [t for t in self._sync_requests if t > self._synced_at]
                self._cond.notify_all()
        if self.retention_for is not None and now - self._last_retention >= self.retention_interval_s:
            self._last_retention = now
            self.apply_retention()
        return count

    def _caught_up(self, asked: float) -> bool:
        """Every assigned partition delivered a message written after
        ``asked`` (live traffic), or delivered nothing for ``quiet_ms`` since
        then and is not behind its end offset (tansu's end offsets can be too
        low, never too high: they only keep a slow fetch from passing for
        silence)."""
        from kafka.errors import KafkaError

        assigned = self._consumer.assignment()
        if not assigned:
            return False
        now = time.monotonic()
        asked_mono = now - (time.time() - asked)
        idle = []
        for tp in assigned:
            if self._late.get(tp.partition, 0.0) > asked:
                continue
            if max(self._last_news.get(tp.partition, 0.0), asked_mono) > now - self.quiet_ms / 1000.0:
                return False
            idle.append(tp)
        if not idle:
            return True
        try:
            ends = self._consumer.end_offsets(idle)
        except KafkaError as error:  # the end offsets are a hint: silence alone decides then
            log_event(logger, "store_end_offsets_failed", logging.DEBUG, error=f"{type(error).__name__}: {error}")
            return True
        return all((self._consumer.position(tp) or 0) >= (ends.get(tp) or 0) for tp in idle)

    def _add(self, message) -> None:
        from kafka import TopicPartition

        tp = TopicPartition(message.topic, message.partition)
        self._consumed[tp] = message.offset + 1
        partition = message.partition
        if partition in self._fresh:  # first message since (re)assignment: where we resumed
            self._fresh.discard(partition)
            tail = self.store.stored_ids(self.topic, partition, message.offset)
            if tail:
                self._tail[partition], self._tail_max[partition] = tail, max(o for o, _ in tail)
                log_event(logger, "store_tail_found", partition=partition, from_offset=message.offset,
                          rows=len(tail))
        tail = self._tail.get(partition)
        if tail is not None and message.offset > self._tail_max[partition]:
            del self._tail[partition]  # past everything stored before: no duplicate possible any more
            tail = None
        decoded = events.decode_batch(LabeledRecord, message.value if message.value is not None else b"")
        for error in decoded.errors:
            self._dead_letter(message, error)
        index_of = {}
        if len(decoded.records) > 1 or decoded.errors:
            # positions in a bulk message: records keep their array index (errors carry theirs)
            bad = {e.index for e in decoded.errors}
            positions = (i for i in range(len(decoded.records) + len(bad)) if i not in bad)
            index_of = {id(r): i for r, i in zip(decoded.records, positions)}
        for record in decoded.records:
            index = index_of.get(id(record), 0)
            if tail is not None and (message.offset, index) in tail:
                self.duplicates_skipped += 1  # already in a segment: written, then killed before the commit
                continue
            self._buffer.setdefault(record.model, []).append(StoredRow(partition, message.offset, index, record))
            self._buffered += 1
        if self._first_buffered is None:
            self._first_buffered = time.monotonic()

    def _dead_letter(self, message, error: Exception) -> None:
        from driftline.events import DeadLetter

        if self._producer is None:
            from kafka import KafkaProducer

            self._producer = KafkaProducer(bootstrap_servers=self.settings.bootstrap_list, acks="all",
                                           client_id="driftline-worker-store", **self.settings.kafka_security())
        letter = DeadLetter.for_payload(message.value or b"", error, source_topic=message.topic,
                                        component="worker-store", partition=message.partition, offset=message.offset)
        log_event(logger, "dead_letter", logging.WARNING, partition=message.partition, offset=message.offset,
                  reason=letter.reason)
        self._producer.send(self.settings.topics.dead_letter, events.encode(letter))
        self.dead_letters += 1
        count_dead_letters("worker-store", [letter])

    def _flush(self) -> None:
        """Make the buffer durable, then commit past it."""
        if self._buffer:
            written = self.store.write_flush(self.topic, self._buffer, segment_rows=self.segment_rows)
            self.rows_written += self._buffered
            self.segments_written += len(written)
            log_event(logger, "store_flushed", rows=self._buffered, segments=len(written),
                      models=sorted(self._buffer))
        self._buffer, self._buffered, self._first_buffered = {}, 0, None
        if not self._consumed:
            return
        if self._producer is not None:
            self._producer.flush(30)  # dead letters are out before their offsets are committed
        _pause("before_commit")
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata

        positions = dict(self._consumed)
        try:
            self._consumer.commit({tp: OffsetAndMetadata(pos, "", -1) for tp, pos in positions.items()})
            for tp, pos in positions.items():
                if self._consumed.get(tp) == pos:
                    del self._consumed[tp]
        except (KafkaError, RuntimeError) as error:
            # e.g. a rebalance: the segments hold the rows, the next commit covers them (kafka-python
            # raises RuntimeError for a blocking commit from its IO thread: the rebalance listener)
            log_event(logger, "store_commit_failed", logging.WARNING, error=f"{type(error).__name__}: {error}")

    def apply_retention(self) -> None:
        """Retention from each model's policy, then compaction of small segments."""
        for model in self.store.models():
            try:
                retention = self.retention_for(model) if self.retention_for else None
            except dependency_errors() as error:  # a policy that cannot be read: keep the data
                log_event(logger, "store_retention_skipped", logging.WARNING, model=model,
                          error=f"{type(error).__name__}: {error}")
                continue
            self.store.enforce_retention(model, retention)
            self.store.compact(model, self.segment_rows)


class StoreWindowReader:
    """The trainer's reader backed by the store: :meth:`read` syncs the
    writer (when there is one) and reads the newest segments.

    Parameters
    ----------
    store
        The training-data store.
    writer
        The running writer to sync with before reading (``None``: read what
        is stored).
    topic
        The ``labeled`` topic's name (for lineage).
    sync_timeout_s
        How long a read waits for the writer to catch up.
    """

    def __init__(self, store: TrainingStore, writer: StoreWriter | None = None, *, topic: str = "labeled",
                 sync_timeout_s: float = 60.0):
        self.store = store
        self.writer = writer
        self.topic = topic
        self.sync_timeout_s = sync_timeout_s

    def read(self, model: str, *, window_rows: int, window_s: float | None = None,
             now: float | None = None) -> StoreWindow:
        if self.writer is not None and not self.writer.sync(self.sync_timeout_s):
            log_event(logger, "store_not_synced", logging.WARNING, model=model,
                      note="reading what the store holds; the newest records may be missing")
        return self.store.read_window(model, window_rows=window_rows, window_s=window_s, now=now, topic=self.topic)


def start_store(settings: Settings, options: Any,
                retention_for: Callable[[str], float | None]) -> tuple[TrainingStore | None, StoreWriter | None]:
    """The worker's store and running writer (group ``<group>-store``), or
    ``(None, None)`` with ``options.store`` off (runs then scan the topic)."""
    if not options.store:
        log_event(logger, "store_off", logging.WARNING, note="every run scans the whole labeled topic")
        return None, None
    root = store_root(settings, options.store_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f"{TMP_PREFIX}{_HOST}-{os.getpid()}-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise StoreError(f"the training-data store {str(root)!r} is not writable: {error.strerror or error} "
                         "(--store-dir)") from None
    store = TrainingStore(root)
    writer = StoreWriter(settings, store, f"{options.group_id}-store", quiet_ms=options.quiet_ms,
                         retention_for=retention_for, session_timeout_ms=options.session_timeout_ms,
                         heartbeat_interval_ms=options.heartbeat_interval_ms)
    return store, writer.start()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m driftline.retrain.store``: run only the store writer (operations,
    and tests that kill it)."""
    import argparse
    import signal

    from driftline.config import load_settings

    parser = argparse.ArgumentParser(prog="python -m driftline.retrain.store", description=main.__doc__)
    parser.add_argument("--group-id", default="driftline-worker-store")
    parser.add_argument("--store-dir", default=None)
    parser.add_argument("--flush-interval-s", type=float, default=2.0)
    parser.add_argument("--segment-rows", type=int, default=20_000)
    parser.add_argument("--session-timeout-ms", type=int, default=10_000)
    parser.add_argument("--heartbeat-interval-ms", type=int, default=3_000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = load_settings()
    writer = StoreWriter(settings, TrainingStore(store_root(settings, args.store_dir)), args.group_id,
                         flush_interval_s=args.flush_interval_s, segment_rows=args.segment_rows,
                         session_timeout_ms=args.session_timeout_ms,
                         heartbeat_interval_ms=args.heartbeat_interval_ms)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: writer.stop_event.set())
    writer.start()
    while writer._thread is not None and writer._thread.is_alive():
        writer._thread.join(0.5)
    log_event(logger, "store_stopped", rows=writer.rows_written, segments=writer.segments_written)
    return 1 if writer.error else 0


if __name__ == "__main__":
    raise SystemExit(main())
