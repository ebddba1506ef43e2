"""The training-data store: real broker, real Parquet files, real processes.

- a run reads rows in proportion to its window, not to the topic;
- segments survive restarts; a writer killed with SIGKILL before the rename
  leaves no torn segment, one killed between rename and commit stores no
  row twice (exact counts after restart);
- retention deletes old segments; a flush cut short by a crash loses no
  row; compaction merges small segments and lineage still resolves.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from driftline import events
from driftline.registry import open_registry
from driftline.retrain.data import LabeledReader
from driftline.retrain import store as store_module
from driftline.retrain.store import StoredRow, StoreWindowReader, StoreWriter, TrainingStore, store_root
from driftline.retrain.trainer import Trainer, train_frame

from .worker_helpers import ROOT, WorkerProcess, make_records, publish_records, publish_requests, request, wait_until

FAST = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


def _stored_rows(store: TrainingStore, model: str) -> list[StoredRow]:
    return [row for info in store.segments(model) for row in store.read_segment(info)]


def test_a_run_reads_what_the_window_needs_not_the_topic(settings):
    window = 300
    reg = open_registry(settings, publish=True)
    store = TrainingStore(store_root(settings))
    writer = StoreWriter(settings, store, "gate-store", quiet_ms=400, flush_interval_s=0.5, **FAST).start()
    try:
        reg.set_policy("churn", {"retrain": {"estimator": "logistic_regression", "window_rows": window,
                                             "min_rows": 100, "cv_folds": 3}})
        seed = make_records("churn", 300, seed=1, flip=True)
        train_frame(reg, "churn", pd.DataFrame([{**r.features, "label": r.label} for r in seed]), "label")
        # history: 10x the window of other models' rows and 5x of this model's old rows
        old = make_records("churn", 5 * window, seed=2, start_ts=events.now() - 100_000)
        others = [r for m in range(5) for r in make_records(f"other{m}", 2 * window, seed=10 + m)]
        publish_records(settings, old + others, chunk=100)
        assert writer.sync(60)
        new = make_records("churn", window, seed=3)
        publish_records(settings, new, chunk=100)
        assert writer.sync(60)
        assert writer.rows_written == len(old) + len(others) + len(new)

        result = Trainer(settings, reg, StoreWindowReader(store, writer, topic=settings.topics.labeled)).run(
            "churn", ["w-1"], "manual")
        assert result.outcome == "promoted", result.reason
        lineage = reg.get_version("churn", 2).lineage
        read = lineage["window"]
        assert read["source"] == "store" and lineage["rows"] == window
        # only the newest segments: exactly the window's rows, none of the 3,000 others or 1,500 old ones
        assert read["rows_read"] == window, read
        assert read["segments_listed"] > read["segments_read"]
        # and the same rows a full scan of the topic finds
        scan = LabeledReader(settings, quiet_ms=500).read("churn", window_rows=window)
        assert scan.messages == (len(old) + len(others) + len(new)) // 100
        assert [r.record.event_id for r in scan.rows] == [r.event_id for r in new]
        assert lineage["split"]["train"]["first_event_id"] == new[0].event_id
    finally:
        writer.stop()
        reg.close()


def _store_process(env: dict, log: Path, pause: str | None = None) -> WorkerProcessLike:
    env = dict(env)
    env.pop("DRIFTLINE_STORE_PAUSE", None)
    if pause:
        env["DRIFTLINE_STORE_PAUSE"] = pause
    return WorkerProcessLike(env, log)


class WorkerProcessLike(WorkerProcess):
    """``python -m driftline.retrain.store`` (the writer alone) as a child process."""

    def __init__(self, env: dict, log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "driftline.retrain.store", "--group-id", "kill-store", "--flush-interval-s", "0.5",
             "--session-timeout-ms", "6000", "--heartbeat-interval-ms", "1000"],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def test_kill_9_leaves_no_torn_segment_and_no_duplicate_after_restart(settings, test_env, tmp_path):
    store = TrainingStore(store_root(settings))
    first = make_records("m", 1000, seed=1)
    publish_records(settings, first, chunk=100)

    # 1. killed after writing the temporary file, before the rename: nothing becomes a segment
    with _store_process(test_env, tmp_path / "a.log", "before_rename:300") as a:
        a.wait_for_log("event=store_pause phase=before_rename", timeout=90)
        a.kill9()
    temps = [p for p in (store.root / "m").iterdir() if p.name.startswith(".tmp-")]
    assert temps and store.segments("m") == []

    # 2. killed after the rename, before the offsets are committed: the segments hold every row
    with _store_process(test_env, tmp_path / "b.log", "before_commit:300") as b:
        b.wait_for_log("event=store_pause phase=before_commit", timeout=90)
        b.kill9()
    assert "event=store_temp_removed" in (tmp_path / "b.log").read_text()
    stored = [r.record.event_id for r in _stored_rows(store, "m")]
    assert stored and len(stored) == len(set(stored)) and set(stored) <= {r.event_id for r in first}

    # 3. a normal restart: it consumes the uncommitted messages again, stores none of them twice
    with _store_process(test_env, tmp_path / "c.log") as c:
        c.wait_for_log("event=store_partitions_assigned", timeout=90)
        more = make_records("m", 200, seed=2)
        publish_records(settings, more, chunk=100)
        wait_until(lambda: len(_stored_rows(store, "m")) >= 1200, timeout=60, what="1200 rows stored")
        time.sleep(1.5)  # a duplicate would be written within a flush interval or two
        assert c.terminate() == 0
    rows = _stored_rows(store, "m")
    assert len(rows) == 1200
    assert len({(r.partition, r.offset, r.index) for r in rows}) == 1200
    assert sorted(r.record.event_id for r in rows) == sorted(r.event_id for r in first + more)
    for info in store.segments("m"):  # every segment is a whole Parquet file
        assert pq.read_table(info.path).num_rows == info.rows
    assert not [p for p in (store.root / "m").iterdir() if p.name.startswith(".tmp-")]
    window = store.read_window("m", window_rows=5000)
    assert len(window.rows) == 1200 and window.duplicates == 0


def test_worker_segments_survive_a_restart(settings, test_env, tmp_path):
    reg = open_registry(settings, publish=True)
    try:
        reg.set_policy("churn", {"retrain": {"estimator": "logistic_regression", "debounce_s": 0.0,
                                             "min_rows": 100, "cv_folds": 3}})
        bad = make_records("churn", 300, seed=11, flip=True)
        train_frame(reg, "churn", pd.DataFrame([{**r.features, "label": r.label} for r in bad]), "label")
    finally:
        reg.close()
    first = make_records("churn", 400, seed=12)
    publish_records(settings, first)
    store = TrainingStore(store_root(settings))

    def version_for(request_id):
        with open_registry(settings) as r:
            return r.find_version_by_request("churn", request_id)

    publish_requests(settings, [request("churn", "s-1")])
    with WorkerProcess(test_env, tmp_path / "one.log") as one:
        v2 = wait_until(lambda: version_for("s-1"), timeout=120, what="version for s-1")
        assert one.terminate() == 0
    assert v2.lineage["window"]["source"] == "store" and v2.lineage["rows"] == 400
    segments_before = {s.name for s in store.segments("churn")}
    assert segments_before and sum(s.rows for s in store.segments("churn")) == 400

    second = make_records("churn", 100, seed=13)
    publish_records(settings, second)
    publish_requests(settings, [request("churn", "s-2")])
    with WorkerProcess(test_env, tmp_path / "two.log") as two:
        v3 = wait_until(lambda: version_for("s-2"), timeout=120, what="version for s-2")
        assert two.terminate() == 0
    used = {entry["id"].split("/", 1)[1] for entry in v3.lineage["window"]["segments"]}
    assert segments_before <= {s.name for s in store.segments("churn")}  # still there
    assert used & segments_before  # the second worker read what the first one stored
    assert v3.lineage["rows"] == 500 and sum(s.rows for s in store.segments("churn")) == 500


def _row(model, i, ts):
    from driftline.events import LabeledRecord

    return StoredRow(0, i, 0, LabeledRecord(event_id=f"{model}-{i}", model=model, model_version=1,
                                            features={"x": float(i)}, prediction=0, label=i % 2,
                                            prediction_timestamp=ts, label_timestamp=ts))


def test_retention_from_the_policy_deletes_old_segments(settings):
    store = TrainingStore(store_root(settings))
    now = events.now()
    old = store.write_flush("labeled", {"m": [_row("m", i, now - 7200 + i) for i in range(10)]})
    young = store.write_flush("labeled", {"m": [_row("m", 10 + i, now - 60 + i) for i in range(10)]})
    keep = store.write_flush("labeled", {"k": [_row("k", i, now - 7200 + i) for i in range(10)]})
    with open_registry(settings) as reg:
        reg.set_policy("m", {"retrain": {"store_retention_s": 3600}})
        reg.set_policy("k", {"retrain": {"store_retention_s": None}})
        writer = StoreWriter(settings, store, "unused",
                             retention_for=lambda model: reg.get_policy(model).retrain.store_retention_s)
        writer.apply_retention()
    assert [s.name for s in store.segments("m")] == [s.name for s in young]
    assert [s.name for s in store.segments("k")] == [s.name for s in keep]
    assert not old[0].path.exists()
    assert [r.record.event_id for r in store.read_window("m", window_rows=100).rows] == [f"m-{i}" for i in range(10, 20)]


def test_a_flush_cut_short_loses_nothing_and_stale_temporary_files_go(tmp_path):
    store = TrainingStore(tmp_path / "store")
    # one flush for two models, killed between the two renames: only a's segment exists
    store.write_flush("labeled", {"a": [_row("a", i, 1000.0 + i) for i in range(5)]})
    other = store.write_flush("other-topic", {"a": [_row("a", 3, 1000.0)]})
    # what a restarted writer skips is exactly what is stored, row by row: b's rows come again
    assert store.stored_ids("labeled", 0, 0) == {(i, 0) for i in range(5)}
    assert store.stored_ids("labeled", 0, 3) == {(3, 0), (4, 0)}
    assert store.stored_ids("labeled", 1, 0) == set()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    stale = store.root / "a" / f".tmp-{store_module._HOST}-{dead}-deadbeef"
    live = store.root / "a" / f".tmp-{store_module._HOST}-{os.getpid()}-cafecafe"
    stale.write_bytes(b"PAR1 torn")
    live.write_bytes(b"PAR1 being written")
    assert store.recover() == 1
    assert not stale.exists() and live.exists()  # a live writer's file is left alone
    assert len(store.segments("a")) == 2 and other[0].path.exists()


def test_compaction_merges_small_segments_and_lineage_still_resolves(tmp_path):
    store = TrainingStore(tmp_path / "store")
    for k in range(6):
        store.write_flush("labeled", {"m": [_row("m", 10 * k + i, 1000.0 + 10 * k + i) for i in range(10)]})
    window = store.read_window("m", window_rows=25)
    assert window.rows_read == 30 and [r.offset for r in window.rows] == list(range(35, 60))
    before = [r.offset for r in store.rows_from_lineage(window.lineage())]
    merged = store.compact("m", target_rows=100)
    assert len(merged) == 1 and [s.rows for s in store.segments("m")] == [60]
    # the lineage names segments that no longer exist: the merged one resolves them, row for row
    assert [r.offset for r in store.rows_from_lineage(window.lineage())] == before == list(range(35, 60))
    assert [r.offset for r in store.read_window("m", window_rows=100).rows] == list(range(60))
    # killed after writing a merged segment, before deleting what it replaces: the restart finishes it
    a = store.write_flush("labeled", {"n": [_row("n", i, 5000.0 + i) for i in range(3)]})
    b = store.write_flush("labeled", {"n": [_row("n", 3 + i, 5003.0 + i) for i in range(3)]})
    rows = store.read_segment(a[0]) + store.read_segment(b[0])
    store._write("labeled", "n", rows, sources=[a[0].name] * 3 + [b[0].name] * 3,
                 replaces=[a[0].name, b[0].name])
    assert store.read_window("n", window_rows=100).duplicates == 6  # readers never count a row twice
    assert len(store.read_window("n", window_rows=100).rows) == 6
    assert store.recover() == 2 and [s.rows for s in store.segments("n")] == [6]
