"""Run the monitor with a sampler thread that writes where its memory goes (bench only).

Run: ``python bench/memtrace.py OUT.jsonl [driftline monitor arguments]``
(``bench/monitor.py --memtrace DIR`` starts its monitors this way).

Every ``MEMTRACE_INTERVAL`` seconds (default 5) one JSON line is appended to
``OUT.jsonl``: RSS (anonymous and file-backed), glibc's malloc totals
(``mallinfo2``: in use, free in the arenas, mmapped), RocksDB's memory per
partition database (memtables, block cache, table readers), stage 1's
pending store changes, stage 2's re-join guards and waiting
acknowledgements per model, the producer's queued batches and, with
``MEMTRACE_TRACEMALLOC=N`` (N frames; slows the monitor down), the Python
allocation sites holding the most memory. Nothing of this is in the product.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import threading
import time
import tracemalloc

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

_monitors: list = []


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _malloc() -> dict:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return {}
    info = libc.mallinfo2()
    mb = 1024 * 1024
    return {"arena_mb": info.arena / mb, "mmap_mb": info.hblkhd / mb, "in_use_mb": info.uordblks / mb,
            "free_mb": info.fordblks / mb}


def _status() -> dict:
    out = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
                parts = value.split()
                out[key] = int(parts[0]) / 1024 if key != "Threads" else int(parts[0])
    return out


def _rocks(store) -> dict:
    names = ("rocksdb.cur-size-all-mem-tables", "rocksdb.block-cache-usage", "rocksdb.block-cache-pinned-usage",
             "rocksdb.estimate-table-readers-mem")
    totals = dict.fromkeys(names, 0)
    for db in list(getattr(store, "_dbs", {}).values()):
        for name in names:
            try:
                totals[name] += db.property_int_value(name) or 0
            except Exception:  # a database closed meanwhile
                pass
    # the block cache is shared: each database reports the same usage
    if getattr(store, "_dbs", None):
        for name in names[1:3]:
            totals[name] //= len(store._dbs)
    return {name.split(".", 1)[1]: value / (1024 * 1024) for name, value in totals.items()}


def _sample(top: int) -> dict:
    row = {"t": time.time(), **_status(), "malloc": _malloc()}
    for monitor in _monitors:
        store = monitor.join_store
        row["join_pending"] = len(getattr(store, "_pending", ()))
        row["join_batches"] = len(getattr(store, "_batches", ()))
        if hasattr(store, "_dbs"):
            row["rocksdb_mb"] = _rocks(store)
        row["recent"] = {m: len(e.recent) for m, e in list(monitor.stage2.models.items())}
        row["pending_acks"] = len(monitor.stage2.checkpoints._pending_acks)
        producer = getattr(monitor.app.producer, "_producer", None)
        accumulator = getattr(producer, "_message_accumulator", None)
        if accumulator is not None:
            row["producer_batches"] = sum(len(q) for q in accumulator._batches.values())
        row["counts"] = dict(monitor.counts)
    if tracemalloc.is_tracing():
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        row["traced_mb"] = tracemalloc.get_traced_memory()[0] / 1e6
        row["top"] = [[str(stat.traceback.format()[-1]).strip() if len(stat.traceback) == 1 else
                       " <- ".join(str(f) for f in stat.traceback), round(stat.size / 1e6, 2), stat.count]
                      for stat in snapshot.statistics("traceback")[:top]]
    return row


def _sampler(path: str, interval: float, top: int) -> None:
    while True:
        time.sleep(interval)
        try:
            row = _sample(top)
        except (RuntimeError, AttributeError) as error:  # a dict changed size mid-read: next time
            row = {"t": time.time(), "error": repr(error)}
        with open(path, "a") as handle:
            handle.write(json.dumps(row) + "\n")


def main() -> int:
    path, args = sys.argv[1], sys.argv[2:]
    frames = int(os.environ.get("MEMTRACE_TRACEMALLOC", "0"))
    if frames:
        tracemalloc.start(frames)
    from driftline.streams import app as monitor_app

    original = monitor_app.MonitorApp.__init__

    def capture(self, *a, **k):
        original(self, *a, **k)
        _monitors.append(self)

    monitor_app.MonitorApp.__init__ = capture
    with open(path, "a") as handle:
        handle.write(json.dumps({"t": time.time(), "phase": "imported", **_status(), "malloc": _malloc(),
                                 "modules": sorted({m.split(".")[0] for m in sys.modules})}) + "\n")
    threading.Thread(target=_sampler, args=(path, float(os.environ.get("MEMTRACE_INTERVAL", "5")),
                                            int(os.environ.get("MEMTRACE_TOP", "25"))), daemon=True).start()
    from driftline.cli import main as cli_main

    return cli_main(["monitor", *args])


if __name__ == "__main__":
    sys.exit(main())
