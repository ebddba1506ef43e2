"""Training data: the newest joined records of one model, as pandas.

The worker reads its windows from the training-data store
(:mod:`driftline.retrain.store`: per-model Parquet segments, cost proportional to the
window). :class:`LabeledReader` is the fallback (``driftline worker
--no-store``) and the reference the store is checked against: it reads the
``labeled`` topic (joined prediction + label records written by the
monitor) from the beginning of every partition, so its cost grows with the
topic, and keeps the newest ``window_rows`` records of one model (and, with
``window_s``, only the young ones).

When does reading stop? Not at the high watermark: on the embedded tansu
broker end offsets can be far too low (DESIGN.md), so "reached the end
offset" proves nothing. A partition is finished when it delivers a record
written after the read started (live traffic keeps flowing while we read;
that record belongs to the next run), and the whole read is finished when no
partition has delivered anything for ``quiet_ms``. End offsets are only
logged, as a hint.

:func:`build_frame` turns records into a feature frame (one column per
feature name), a target and a meta frame (event id, partition, offset,
timestamp) and cleans them explicitly, counting every dropped row in a
:class:`CleaningReport`. :func:`data_hash` is a sha256 over a canonical
serialisation of the rows used, so a run can be reproduced and checked.

Examples
--------
>>> from driftline.events import LabeledRecord
>>> recs = [LabeledRecord(event_id=f"e{i}", model="m", model_version=1,
...                       features={"x": float(i), "c": "ab"[i % 2]}, prediction=0,
...                       label=i % 2, prediction_timestamp=float(i), label_timestamp=float(i))
...         for i in range(4)]
>>> data = build_frame([WindowRow(0, i, r) for i, r in enumerate(recs)])
>>> list(data.X.columns), data.y.tolist(), data.report.rows_used
(['c', 'x'], [0, 1, 0, 1], 4)
>>> len(data_hash(data))
64
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from driftline import events
from driftline.config import Settings
from driftline.events import LabeledRecord

from .log import log_event

__all__ = [
    "WindowRow",
    "Window",
    "LabeledReader",
    "CleaningReport",
    "TrainingData",
    "build_frame",
    "clean_frame",
    "data_hash",
    "split_holdout",
]

logger = logging.getLogger("driftline.retrain.data")


@dataclass(frozen=True)
class WindowRow:
    """One record of the window and where it came from."""

    partition: int
    offset: int
    record: LabeledRecord


@dataclass
class Window:
    """What a read returned: the model's newest rows, oldest first."""

    topic: str
    rows: list[WindowRow]
    unparseable: int = 0
    messages: int = 0
    read_s: float = 0.0

    def lineage(self) -> dict[str, Any]:
        """Topic, per-partition first/last offset and the time span."""
        partitions: dict[str, list[int]] = {}
        for row in self.rows:
            span = partitions.setdefault(str(row.partition), [row.offset, row.offset])
            span[0] = min(span[0], row.offset)
            span[1] = max(span[1], row.offset)
        stamps = [row.record.label_timestamp for row in self.rows]
        return {
            "topic": self.topic,
            "offsets": partitions,
            "first_timestamp": min(stamps) if stamps else None,
            "last_timestamp": max(stamps) if stamps else None,
        }


class LabeledReader:
    """Read one model's newest joined records from the ``labeled`` topic.

    Parameters
    ----------
    settings
        Broker and topic settings.
    quiet_ms
        Stop after this long without a new message on any partition.
    timeout_s
        Hard limit for one read.
    """

    def __init__(self, settings: Settings, *, quiet_ms: int = 1000, timeout_s: float = 300.0):
        if quiet_ms < 50:
            raise ValueError(f"quiet_ms must be at least 50 (got {quiet_ms})")
        self.settings = settings
        self.topic = settings.topics.labeled
        self.quiet_ms = quiet_ms
        self.timeout_s = timeout_s

    def read(self, model: str, *, window_rows: int, window_s: float | None = None,
             now: float | None = None) -> Window:
        """The newest ``window_rows`` records of ``model`` (younger than
        ``window_s`` seconds when given), sorted oldest first."""
        from kafka import KafkaConsumer, TopicPartition
        from kafka.errors import KafkaError

        started = time.monotonic()
        now = events.now() if now is None else now
        start_ms = int(now * 1000)
        consumer = KafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_list,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="driftline-worker-reader",
            max_poll_records=5000,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=16 * 1024 * 1024,
            **self.settings.kafka_security(),
        )
        try:
            partitions = consumer.partitions_for_topic(self.topic)
            if not partitions:
                # checked at the worker's start-up: gone now means a broker that lost
                # its topics (restarted empty), which a retry may outlast
                from .resilience import Unavailable

                raise Unavailable("broker", self.settings.bootstrap_servers, f"topic {self.topic} does not exist")
            assigned = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(assigned)
            consumer.seek_to_beginning()
            try:  # a hint for the log only (tansu's can be wrong)
                hint = {tp.partition: off for tp, off in consumer.end_offsets(assigned).items()}
            except KafkaError:  # pragma: no cover - hint only
                hint = {}
            kept: dict[int, deque] = {tp.partition: deque(maxlen=window_rows) for tp in assigned}
            finished: set[int] = set()
            unparseable = messages = 0
            last_news = time.monotonic()
            deadline = started + self.timeout_s
            model_marker = model.encode("utf-8")
            while len(finished) < len(assigned):
                batch = consumer.poll(timeout_ms=100)
                got = False
                for tp, messages_ in batch.items():
                    if tp.partition in finished:
                        continue
                    keep = kept[tp.partition]
                    for message in messages_:
                        if message.timestamp is not None and message.timestamp > start_ms:
                            # written after this read started: the next run's data
                            finished.add(tp.partition)
                            consumer.pause(tp)
                            break
                        got = True
                        messages += 1
                        value = message.value
                        if value is None:
                            unparseable += 1
                            continue
                        if model_marker not in value:
                            # cheap pre-filter: the model's name is not even in the bytes,
                            # so this is another model's message (its problems are not ours)
                            continue
                        decoded = events.decode_batch(LabeledRecord, value)
                        unparseable += len(decoded.errors)
                        for record in decoded.records:
                            if record.model == model:
                                keep.append(WindowRow(tp.partition, message.offset, record))
                if got:
                    last_news = time.monotonic()
                elif (time.monotonic() - last_news) * 1000 >= self.quiet_ms:
                    break
                if time.monotonic() > deadline:
                    log_event(logger, "read_timeout", logging.WARNING, model=model, topic=self.topic,
                              timeout_s=self.timeout_s)
                    break
            positions = {tp.partition: consumer.position(tp) for tp in assigned}
        finally:
            consumer.close()
        rows = [row for rows_ in kept.values() for row in rows_]
        if window_s is not None:
            oldest = now - window_s
            rows = [row for row in rows if row.record.label_timestamp >= oldest]
        rows.sort(key=lambda r: (r.record.label_timestamp, r.partition, r.offset))
        rows = rows[-window_rows:]
        elapsed = time.monotonic() - started
        log_event(logger, "window_read", model=model, topic=self.topic, rows=len(rows), messages=messages,
                  unparseable=unparseable, positions=positions, end_offset_hint=hint, read_s=round(elapsed, 3))
        return Window(self.topic, rows, unparseable=unparseable, messages=messages, read_s=elapsed)


@dataclass
class CleaningReport:
    """Rows read, dropped (by reason) and used; JSON-safe."""

    rows_read: int = 0
    unparseable: int = 0
    missing_label: int = 0
    non_finite: int = 0
    missing_values: int = 0  # cells imputed by the pipeline, rows kept
    rows_used: int = 0
    dropped_columns: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainingData:
    """Cleaned features ``X``, target ``y`` and ``meta`` (event_id,
    partition, offset, timestamp), row-aligned and oldest first."""

    X: pd.DataFrame
    y: pd.Series
    meta: pd.DataFrame
    report: CleaningReport

    def __len__(self) -> int:
        return len(self.y)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, str)


def _column_kinds(X: pd.DataFrame) -> pd.DataFrame:
    """Numeric columns as float (bool -> 0/1), everything else as text."""
    out = {}
    for name in X.columns:
        column = X[name]
        if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
            out[name] = column.astype(float)
            continue
        present = column[column.notna()]
        if len(present) and all(_is_number(v) for v in present):
            out[name] = pd.to_numeric(column.map(lambda v: None if v is None else float(v)), errors="coerce")
        else:
            out[name] = column.map(lambda v: v if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
            out[name] = out[name].astype(object)
    return pd.DataFrame(out, index=X.index)


def _target(values: Sequence[Any]) -> pd.Series:
    """Labels as one type: numbers stay numbers, mixed types become text."""
    kinds = {type(v) for v in values if v is not None}
    if kinds and kinds <= {int, float, bool, np.int64, np.float64, np.bool_}:
        if kinds <= {bool, np.bool_}:
            return pd.Series(values, dtype=object).map(lambda v: None if v is None else bool(v))
        return pd.Series(values, dtype=object).map(lambda v: None if v is None else v)
    return pd.Series([None if v is None else str(v) for v in values], dtype=object)


def clean_frame(X: pd.DataFrame, y: pd.Series, meta: pd.DataFrame | None = None,
                report: CleaningReport | None = None) -> TrainingData:
    """Drop rows without a label or with a non-finite number, count them,
    and type the columns. Missing feature values are kept (the pipeline
    imputes them) and counted as ``missing_values``."""
    report = report or CleaningReport()
    report.rows_read += len(y)
    X = X.reset_index(drop=True)
    y = pd.Series(y).reset_index(drop=True)
    meta = (meta if meta is not None else pd.DataFrame(index=range(len(y)))).reset_index(drop=True)
    empty = [name for name in X.columns if X[name].isna().all()]
    if empty:  # nothing to learn from, and imputers refuse all-missing columns
        X = X.drop(columns=empty)
        report.dropped_columns.extend(str(c) for c in empty)
    X = _column_kinds(X)
    # explicit bool dtypes: on an empty window pandas gives object arrays, and
    # ``bool &= object`` is a casting error instead of "too few rows"
    missing_label = (y.isna().to_numpy(dtype=bool)
                     | y.map(lambda v: isinstance(v, float) and not math.isfinite(v)).to_numpy(dtype=bool))
    numeric = X.select_dtypes(include="number")
    non_finite = (np.isinf(numeric.to_numpy(dtype=float)).any(axis=1) if len(numeric.columns)
                  else np.zeros(len(y), bool))
    non_finite &= ~missing_label
    report.missing_label += int(missing_label.sum())
    report.non_finite += int(non_finite.sum())
    keep = ~(missing_label | non_finite)
    X, y, meta = X[keep].reset_index(drop=True), y[keep].reset_index(drop=True), meta[keep].reset_index(drop=True)
    report.missing_values += int(X.isna().to_numpy().sum())
    report.rows_used = len(y)
    y = _target(y.tolist())
    return TrainingData(X, y, meta, report)


def build_frame(rows: Sequence[WindowRow], unparseable: int = 0) -> TrainingData:
    """Window rows -> cleaned :class:`TrainingData` (feature names as columns,
    sorted for a stable column order)."""
    X = pd.DataFrame([row.record.features for row in rows])
    X = X.reindex(columns=sorted(X.columns))
    y = pd.Series([row.record.label for row in rows], dtype=object)
    meta = pd.DataFrame({
        "event_id": [row.record.event_id for row in rows],
        "partition": [row.partition for row in rows],
        "offset": [row.offset for row in rows],
        "timestamp": [row.record.label_timestamp for row in rows],
    })
    return clean_frame(X, y, meta, CleaningReport(unparseable=unparseable))


def _canonical(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def data_hash(data: TrainingData) -> str:
    """sha256 of the rows used, in a canonical serialisation: first the
    JSON list of column names, then one compact JSON line per row,
    ``[event_id (or row number), [feature values in column order], label]``
    (missing values as ``null``), lines joined by ``\\n``."""
    digest = hashlib.sha256()
    columns = [str(c) for c in data.X.columns]
    digest.update(json.dumps(columns, separators=(",", ":")).encode("utf-8") + b"\n")
    encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_canonical).encode
    ids = data.meta["event_id"].tolist() if "event_id" in data.meta else list(range(len(data.y)))
    X = data.X.astype(object).where(data.X.notna(), None)
    labels = [_canonical(v) for v in data.y.tolist()]
    # numpy scalars go through ``default``; NaN was replaced by None above
    lines = [encode([event_id, list(values), label])
             for event_id, values, label in zip(ids, X.itertuples(index=False, name=None), labels)]
    digest.update("\n".join(lines).encode("utf-8"))
    return digest.hexdigest()


def split_holdout(data: TrainingData, fraction: float) -> tuple[TrainingData, TrainingData]:
    """The oldest ``1 - fraction`` for training, the newest ``fraction``
    (at least one row) as the holdout."""
    n = len(data)
    n_hold = max(1, int(math.ceil(n * fraction)))
    cut = n - n_hold

    def part(sl: slice) -> TrainingData:
        return TrainingData(data.X.iloc[sl].reset_index(drop=True), data.y.iloc[sl].reset_index(drop=True),
                            data.meta.iloc[sl].reset_index(drop=True), data.report)

    return part(slice(0, cut)), part(slice(cut, n))
