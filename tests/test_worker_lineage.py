"""``driftline retrain MODEL --from-lineage VERSION``: rebuild the window from
the store, refit with the recorded recipe and seeds, compare the scores.
Real registry (events on the real broker), real scikit-learn, the CLI as a
real process."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from driftline import events
from driftline.events import LabeledRecord
from driftline.registry import open_registry
from driftline.retrain.lineage import reproduce
from driftline.retrain.store import StoredRow, StoreWindowReader, TrainingStore, store_root
from driftline.retrain.trainer import Trainer, train_frame

from .worker_helpers import ROOT, make_records


def _cli(env, *args):
    return subprocess.run([sys.executable, "-m", "driftline", "retrain", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)


def test_from_lineage_reproduces_scores_exactly_and_reports_changed_data(settings, test_env):
    store = TrainingStore(store_root(settings))
    with open_registry(settings, publish=True) as reg:
        reg.set_policy("lin", {"retrain": {"estimator": "random_forest", "min_rows": 100, "cv_folds": 3,
                                           "search": {"param_grid": {"model__max_depth": [2, 6]}, "cv": 3}}})
        seed = make_records("lin", 200, seed=1, flip=True)
        train_frame(reg, "lin", pd.DataFrame([{**r.features, "label": r.label} for r in seed]), "label")
        records = make_records("lin", 400, seed=2)
        # two flushes (two segments) plus another model's rows, as the writer would leave them
        store.write_flush(settings.topics.labeled, {"lin": [StoredRow(0, i, 0, r) for i, r in enumerate(records[:250])],
                                                    "noise": [StoredRow(1, i, 0, r) for i, r in
                                                              enumerate(make_records("noise", 50, seed=3))]})
        store.write_flush(settings.topics.labeled, {"lin": [StoredRow(0, 250 + i, 0, r)
                                                            for i, r in enumerate(records[250:])]})
        result = Trainer(settings, reg, StoreWindowReader(store, topic=settings.topics.labeled)).run(
            "lin", ["l-1"], "manual")
        assert result.version == 2, result.reason
        v2 = reg.get_version("lin", 2)
        assert v2.lineage["recipe"] == "clone:lin/1" and v2.lineage["seeds"] == {"model__random_state": 0}
        assert v2.lineage["window"]["segments_read"] == 2
        rep = reproduce(settings, reg, "lin", 2)
    assert rep.reproduced and rep.data_matches and rep.rows == 400
    compared = {name: (a, b) for name, a, b, _ in rep.scores}
    assert {"candidate_accuracy", "champion_accuracy", "train_accuracy", "cv_accuracy_mean",
            "cv_accuracy_std"} <= set(compared)
    assert all(a == b for a, b in compared.values())  # bit for bit

    shown = _cli(test_env, "lin", "--from-lineage", "2")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "lin/2: rebuilt 400 rows from the store; data matches" in shown.stdout
    assert "reproduced: every score matches" in shown.stdout and "DIFF" not in shown.stdout
    as_json = json.loads(_cli(test_env, "lin", "--from-lineage", "2", "--json").stdout)
    assert as_json["reproduced"] and all(s["match"] for s in as_json["scores"])
    show = subprocess.run([sys.executable, "-m", "driftline", "registry", "show", "lin/2"], cwd=ROOT, env=test_env,
                          capture_output=True, text=True, timeout=60)
    metrics_line = next(line for line in show.stdout.splitlines() if line.startswith("metrics: "))
    assert json.loads(metrics_line[len("metrics: "):]) == v2.metrics  # every gate score, as recorded

    # the data changed under the version: 60 labels of the newest segment are flipped
    newest = store.segments("lin")[-1]
    table = pq.read_table(newest.path)
    blobs = table.column("record").to_pylist()
    for i in range(60):
        record = LabeledRecord.from_dict(json.loads(blobs[i]))
        record.label = 1 - record.label
        blobs[i] = events.encode(record)
    changed = table.set_column(table.schema.get_field_index("record"), "record", pa.array(blobs, pa.binary()))
    pq.write_table(changed.replace_schema_metadata(table.schema.metadata), newest.path)
    shown = _cli(test_env, "lin", "--from-lineage", "2")
    assert shown.returncode == 1
    assert "data CHANGED" in shown.stdout and "NOT reproduced: data changed" in shown.stdout
    assert "DIFF" in shown.stdout and "scores differ" in shown.stdout

    # a segment gone (retention): said so, no traceback
    newest.path.unlink()
    gone = _cli(test_env, "lin", "--from-lineage", "2")
    assert gone.returncode == 1 and f"segment lin/{newest.name} is no longer in the store" in gone.stderr
    # a version trained from a CSV has no window to rebuild
    csv = _cli(test_env, "lin", "--from-lineage", "1")
    assert csv.returncode == 1 and "was not trained from the training-data store (source: csv)" in csv.stderr
