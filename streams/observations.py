"""What stage 1 sends stage 2: one model's events of one read, column by column.

Stage 1 (:mod:`driftline.streams.stage1`) joins events one at a time, but
stage 2 (:mod:`driftline.streams.stage2`) computes on arrays. An observation
message therefore carries a model's predictions, joined pairs and expiries
of one source partition as **columns** (MessagePack, through msgspec
Structs): each feature one column (a float64 array when every value is a
float, else the values), latencies and timestamps as float64 arrays, the
coordinates stage 2's replay guards need as int64 arrays. Stage 2 decodes a
message in one call and hands the columns to the analytics without building
an object per event.

:class:`PredictionColumns` and :class:`JoinedColumns` are those columns in
memory, the unit :class:`driftline.streams.model_monitor.VersionMonitor`
buffers and processes; ``from_events``/``to_events`` convert from and to
records (the API for callers with records, and the monitor state's format).

Examples
--------
>>> from driftline.events import Prediction
>>> preds = [Prediction(f"e{i}", "m", 1, 0.0, {"x": i + 0.5, "c": "a"}, i % 2) for i in range(3)]
>>> raw = encode_message("m", "p", 0, [0, 0], [["p", i, 0, p.to_dict()] for i, p in enumerate(preds)])
>>> message = decode_message(raw)
>>> columns = message.predictions.columns()
>>> columns.features["x"], columns.features["c"], columns.predictions
(array([0.5, 1.5, 2.5]), ['a', 'a', 'a'], [0, 1, 0])
>>> columns.to_events("m") == preds
True
"""

from __future__ import annotations

import operator
from typing import Any, Sequence

import msgspec
import numpy as np
import orjson

from driftline.events import LabeledRecord, Prediction

__all__ = ["PredictionColumns", "JoinedColumns", "ObservationMessage", "encode_message", "decode_message",
           "feature_columns"]

#: A feature's values: float64 (NaN: missing) when every present value was a float, else the values (None: missing).
Column = "np.ndarray | list"


_FLOAT = {float}


# -- in memory ------------------------------------------------------------------------
def feature_columns(rows: Sequence[dict]) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """``rows`` of features as columns, and per feature the positions where
    its key was absent (only features with some).

    >>> feature_columns([{"x": 1.0, "y": "a"}, {"x": 2.0}])
    ({'x': array([1., 2.]), 'y': ['a', None]}, {'y': [1]})
    """
    if not rows:
        return {}, {}
    names = list(rows[0])
    absent: dict[str, list[int]] = {}
    columns: dict[str, Any] | None = None
    if len(names) > 1 and set(map(len, rows)) == {len(names)}:
        # the usual case, one schema (the same size, every name in each):
        # transposed at C speed rather than a comprehension per feature
        try:
            columns = dict(zip(names, zip(*map(operator.itemgetter(*names), rows))))
        except KeyError:
            columns = None
    if columns is None:
        names = list(dict.fromkeys(k for r in rows for k in r))
        columns = {name: [r.get(name) for r in rows] for name in names}
        for name in names:
            gone = [i for i, r in enumerate(rows) if name not in r]
            if gone:
                absent[name] = gone
    for name, values in columns.items():
        if name not in absent and set(map(type, values)) == _FLOAT:
            columns[name] = np.array(values, dtype=np.float64)
        elif type(values) is not list:
            columns[name] = list(values)
    return columns, absent


def _take_features(features: dict[str, Any], absent: dict[str, list[int]], positions: np.ndarray,
                   ) -> tuple[dict[str, Any], dict[str, list[int]]]:
    where = {p: i for i, p in enumerate(positions.tolist())} if absent else {}
    out, out_absent = {}, {}
    for name, column in features.items():
        gone = [where[p] for p in absent.get(name, ()) if p in where]
        if len(gone) == len(positions):
            continue  # absent from every event kept: as if never seen
        out[name] = column[positions] if isinstance(column, np.ndarray) else [column[p] for p in positions]
        if gone:
            out_absent[name] = gone
    return out, out_absent


def _concat_features(parts: Sequence[Any]) -> tuple[dict[str, Any], dict[str, list[int]]]:
    names = list(dict.fromkeys(name for part in parts for name in part.features))
    features, absent = {}, {}
    for name in names:
        pieces, gone, start = [], [], 0
        for part in parts:
            column = part.features.get(name)
            if column is None:
                pieces.append(None)
                gone.extend(range(start, start + len(part)))
            else:
                pieces.append(column)
                gone.extend(start + p for p in part.absent.get(name, ()))
            start += len(part)
        if not gone and all(isinstance(c, np.ndarray) for c in pieces):
            features[name] = np.concatenate(pieces)
        else:
            values: list = []
            for part, column in zip(parts, pieces):
                values.extend([None] * len(part) if column is None else
                              (column.tolist() if isinstance(column, np.ndarray) else column))
            features[name] = values
            if gone:
                absent[name] = gone
    return features, absent


def _rows(features: dict[str, Any], absent: dict[str, list[int]], n: int) -> list[dict]:
    """Per event its features dict again (absent keys left out)."""
    rows: list[dict] = [{} for _ in range(n)]
    for name, column in features.items():
        values = column.tolist() if isinstance(column, np.ndarray) else column
        gone = set(absent.get(name, ()))
        for i, (row, value) in enumerate(zip(rows, values)):
            if i not in gone:
                row[name] = value
    return rows


def _floats_or_none(values: Sequence[float | None]) -> np.ndarray:
    return np.array(values, dtype=np.float64)  # None becomes NaN


def _none_for_nan(values: np.ndarray) -> list[float | None]:
    return [None if v != v else v for v in values.tolist()]


class PredictionColumns:
    """One model's predictions (any versions), column by column.

    Parameters
    ----------
    event_ids, versions, predictions, probabilities
        Per event (lists).
    timestamps, latency_ms
        Per event (float64; ``latency_ms`` NaN where the event has none).
    features
        Feature name -> :data:`Column`, in first-seen order.
    absent
        Feature name -> positions where the event lacked that key.
    events
        The records these columns were made from, if any (kept so that
        :meth:`to_events` gives them back unchanged).
    """

    __slots__ = ("event_ids", "versions", "timestamps", "features", "absent", "predictions", "probabilities",
                 "latency_ms", "_events")

    def __init__(self, event_ids: list[str], versions: list[int], timestamps: np.ndarray, features: dict[str, Any],
                 absent: dict[str, list[int]], predictions: list, probabilities: list, latency_ms: np.ndarray,
                 events: list[Prediction] | None = None):
        self.event_ids, self.versions, self.timestamps = event_ids, versions, timestamps
        self.features, self.absent = features, absent
        self.predictions, self.probabilities, self.latency_ms = predictions, probabilities, latency_ms
        self._events = events

    def __len__(self) -> int:
        return len(self.event_ids)

    @classmethod
    def from_events(cls, preds: Sequence[Prediction]) -> "PredictionColumns":
        """Columns of ``preds``."""
        features, absent = feature_columns([p.features for p in preds])
        return cls([p.event_id for p in preds], [p.model_version for p in preds],
                   np.array([p.timestamp for p in preds], dtype=np.float64), features, absent,
                   [p.prediction for p in preds], [p.probabilities for p in preds],
                   _floats_or_none([p.latency_ms for p in preds]), list(preds))

    def to_events(self, model: str) -> list[Prediction]:
        """The predictions as records."""
        if self._events is not None:
            return self._events
        return [Prediction(*row) for row in zip(
            self.event_ids, [model] * len(self), self.versions, self.timestamps.tolist(),
            _rows(self.features, self.absent, len(self)), self.predictions, self.probabilities,
            _none_for_nan(self.latency_ms))]

    def feature_rows(self) -> list[dict]:
        """Per event its features dict."""
        if self._events is not None:
            return [p.features for p in self._events]
        return _rows(self.features, self.absent, len(self))

    def take(self, positions: np.ndarray) -> "PredictionColumns":
        """The events at ``positions`` (int array, in order)."""
        features, absent = _take_features(self.features, self.absent, positions)
        pick = positions.tolist()
        return PredictionColumns([self.event_ids[i] for i in pick], [self.versions[i] for i in pick],
                                 self.timestamps[positions], features, absent, [self.predictions[i] for i in pick],
                                 [self.probabilities[i] for i in pick], self.latency_ms[positions],
                                 None if self._events is None else [self._events[i] for i in pick])

    @staticmethod
    def concat(parts: Sequence["PredictionColumns"]) -> "PredictionColumns":
        """``parts`` one after the other."""
        if len(parts) == 1:
            return parts[0]
        features, absent = _concat_features(parts)
        events = None if any(p._events is None for p in parts) else [e for p in parts for e in p._events]
        return PredictionColumns(
            [e for p in parts for e in p.event_ids], [v for p in parts for v in p.versions],
            np.concatenate([p.timestamps for p in parts]), features, absent,
            [v for p in parts for v in p.predictions], [v for p in parts for v in p.probabilities],
            np.concatenate([p.latency_ms for p in parts]), events)

    def by_version(self) -> dict[int, "PredictionColumns"]:
        """The columns split by model version (one version: these columns)."""
        return _by_version(self)


class JoinedColumns:
    """One model's joined pairs (any versions), column by column.

    Parameters
    ----------
    event_ids, versions, predictions, labels, probabilities
        Per pair (lists).
    prediction_timestamps, label_timestamps, latency_ms
        Per pair (float64; ``latency_ms`` NaN where the pair has none).
    features, absent
        As for :class:`PredictionColumns`.
    events
        The records these columns were made from, if any.
    """

    __slots__ = ("event_ids", "versions", "features", "absent", "predictions", "labels", "probabilities",
                 "prediction_timestamps", "label_timestamps", "latency_ms", "_events")

    def __init__(self, event_ids: list[str], versions: list[int], features: dict[str, Any],
                 absent: dict[str, list[int]], predictions: list, labels: list, probabilities: list,
                 prediction_timestamps: np.ndarray, label_timestamps: np.ndarray, latency_ms: np.ndarray,
                 events: list[LabeledRecord] | None = None):
        self.event_ids, self.versions, self.features, self.absent = event_ids, versions, features, absent
        self.predictions, self.labels, self.probabilities = predictions, labels, probabilities
        self.prediction_timestamps, self.label_timestamps = prediction_timestamps, label_timestamps
        self.latency_ms = latency_ms
        self._events = events

    def __len__(self) -> int:
        return len(self.event_ids)

    @classmethod
    def from_events(cls, records: Sequence[LabeledRecord]) -> "JoinedColumns":
        """Columns of ``records``."""
        features, absent = feature_columns([r.features for r in records])
        return cls([r.event_id for r in records], [r.model_version for r in records], features, absent,
                   [r.prediction for r in records], [r.label for r in records],
                   [r.probabilities for r in records],
                   np.array([r.prediction_timestamp for r in records], dtype=np.float64),
                   np.array([r.label_timestamp for r in records], dtype=np.float64),
                   _floats_or_none([r.latency_ms for r in records]), list(records))

    def to_events(self, model: str) -> list[LabeledRecord]:
        """The pairs as records."""
        if self._events is not None:
            return self._events
        return [LabeledRecord(*row) for row in zip(
            self.event_ids, [model] * len(self), self.versions, _rows(self.features, self.absent, len(self)),
            self.predictions, self.labels, self.prediction_timestamps.tolist(), self.label_timestamps.tolist(),
            self.probabilities, _none_for_nan(self.latency_ms))]

    def feature_rows(self) -> list[dict]:
        """Per pair its features dict."""
        if self._events is not None:
            return [r.features for r in self._events]
        return _rows(self.features, self.absent, len(self))

    def take(self, positions: np.ndarray) -> "JoinedColumns":
        """The pairs at ``positions`` (int array, in order)."""
        features, absent = _take_features(self.features, self.absent, positions)
        pick = positions.tolist()
        return JoinedColumns([self.event_ids[i] for i in pick], [self.versions[i] for i in pick], features, absent,
                             [self.predictions[i] for i in pick], [self.labels[i] for i in pick],
                             [self.probabilities[i] for i in pick], self.prediction_timestamps[positions],
                             self.label_timestamps[positions], self.latency_ms[positions],
                             None if self._events is None else [self._events[i] for i in pick])

    @staticmethod
    def concat(parts: Sequence["JoinedColumns"]) -> "JoinedColumns":
        """``parts`` one after the other."""
        if len(parts) == 1:
            return parts[0]
        features, absent = _concat_features(parts)
        events = None if any(p._events is None for p in parts) else [e for p in parts for e in p._events]
        return JoinedColumns(
            [e for p in parts for e in p.event_ids], [v for p in parts for v in p.versions], features, absent,
            [v for p in parts for v in p.predictions], [v for p in parts for v in p.labels],
            [v for p in parts for v in p.probabilities],
            np.concatenate([p.prediction_timestamps for p in parts]),
            np.concatenate([p.label_timestamps for p in parts]), np.concatenate([p.latency_ms for p in parts]),
            events)

    def by_version(self) -> dict[int, "JoinedColumns"]:
        """The pairs split by model version (one version: these columns)."""
        return _by_version(self)


def _by_version(columns):
    versions = columns.versions
    first = versions[0] if versions else 0
    if all(v == first for v in versions):
        return {first: columns} if versions else {}
    order: dict[int, list[int]] = {}
    for i, v in enumerate(versions):
        order.setdefault(v, []).append(i)
    return {v: columns.take(np.array(positions, dtype=np.intp)) for v, positions in order.items()}


# -- on the wire ----------------------------------------------------------------------
class WireFeature(msgspec.Struct, array_like=True):
    """One feature column: ``floats`` (float64 bytes) or ``values``; ``absent`` positions."""

    name: str
    floats: bytes | None = None
    values: list[Any] | None = None
    absent: list[int] = msgspec.field(default_factory=list)


def _wire_features(rows: Sequence[dict]) -> list[WireFeature]:
    columns, absent = feature_columns(rows)
    return [WireFeature(name, column.tobytes(), None, absent.get(name, [])) if isinstance(column, np.ndarray)
            else WireFeature(name, None, column, absent.get(name, [])) for name, column in columns.items()]


def _columns_of(wire: list[WireFeature], n: int) -> tuple[dict[str, Any], dict[str, list[int]]]:
    features, absent = {}, {}
    for column in wire:
        if column.floats is not None:
            values = np.frombuffer(column.floats, dtype=np.float64)
        else:
            values = column.values
        if values is None or len(values) != n:
            raise ValueError(f"feature column {column.name!r} holds {0 if values is None else len(values)} "
                             f"values for {n} events")
        features[column.name] = values
        if column.absent:
            absent[column.name] = column.absent
    return features, absent


def _ints(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype=np.int64)


def _floats(raw: bytes, n: int, what: str) -> np.ndarray:
    values = np.frombuffer(raw, dtype=np.float64)
    if values.size != n:
        raise ValueError(f"{what}: {values.size} values for {n} events")
    return values


class WirePredictions(msgspec.Struct, array_like=True):
    """Predictions of one source partition, in offset order."""

    offsets: bytes  # int64: source offset of each prediction
    indexes: bytes  # int64: its position in a bulk message
    event_ids: list[str]
    versions: list[int]
    timestamps: bytes
    predictions: list[Any]
    probabilities: list[dict[str, float] | None]
    latency_ms: bytes
    features: list[WireFeature]

    def columns(self) -> PredictionColumns:
        n = len(self.event_ids)
        if not (len(self.versions) == len(self.predictions) == len(self.probabilities) == n):
            raise ValueError(f"prediction columns of unequal lengths for {n} events")
        features, absent = _columns_of(self.features, n)
        return PredictionColumns(self.event_ids, self.versions, _floats(self.timestamps, n, "timestamps"), features,
                                 absent, self.predictions, self.probabilities,
                                 _floats(self.latency_ms, n, "latency_ms"))


class WireJoined(msgspec.Struct, array_like=True):
    """Pairs joined by records of one source partition."""

    event_ids: list[str]
    prediction_offsets: bytes  # int64: both sides' source offsets (stage 2's re-join guard)
    label_offsets: bytes
    versions: list[int]
    predictions: list[Any]
    labels: list[Any]
    probabilities: list[dict[str, float] | None]
    prediction_timestamps: bytes
    label_timestamps: bytes
    latency_ms: bytes
    features: list[WireFeature]

    def columns(self) -> JoinedColumns:
        n = len(self.event_ids)
        if not (len(self.versions) == len(self.predictions) == len(self.labels) == len(self.probabilities) == n):
            raise ValueError(f"joined columns of unequal lengths for {n} pairs")
        features, absent = _columns_of(self.features, n)
        return JoinedColumns(self.event_ids, self.versions, features, absent, self.predictions, self.labels,
                             self.probabilities, _floats(self.prediction_timestamps, n, "prediction_timestamps"),
                             _floats(self.label_timestamps, n, "label_timestamps"),
                             _floats(self.latency_ms, n, "latency_ms"))


class WireExpired(msgspec.Struct, array_like=True):
    """Predictions of one source partition that expired without a label, in offset order."""

    offsets: bytes
    indexes: bytes
    versions: list[int]


class ObservationMessage(msgspec.Struct):
    """One observation message (key: the model).

    ``topic`` is the source topic's kind (``p`` predictions, ``l`` labels),
    ``part`` its partition and ``low`` stage 1's lowest replayable
    (prediction, label) offsets there: stage 2 forgets re-join guards below them.
    """

    model: str
    topic: str
    part: int
    low: list[int]
    predictions: WirePredictions | None = None
    joined: WireJoined | None = None
    expired: WireExpired | None = None

    def coordinates(self, wire: WirePredictions | WireExpired) -> tuple[np.ndarray, np.ndarray]:
        """``(offsets, indexes)`` of a prediction or expiry block."""
        offsets, indexes = _ints(wire.offsets), _ints(wire.indexes)
        if not offsets.size == indexes.size == len(wire.versions):
            raise ValueError(f"{offsets.size} offsets and {indexes.size} indexes for {len(wire.versions)} events")
        return offsets, indexes

    def rejoin_guards(self) -> tuple[np.ndarray, np.ndarray]:
        """``(prediction offsets, label offsets)`` of the joined pairs."""
        wire = self.joined
        pcs, lcs = _ints(wire.prediction_offsets), _ints(wire.label_offsets)
        if not pcs.size == lcs.size == len(wire.event_ids):
            raise ValueError(f"re-join guards for {pcs.size}/{lcs.size} of {len(wire.event_ids)} pairs")
        return pcs, lcs


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ObservationMessage)


_PREDICTION_FIELDS = operator.itemgetter("event_id", "model_version", "timestamp", "prediction", "probabilities",
                                         "latency_ms", "features")
_JOINED_FIELDS = operator.itemgetter("event_id", "model_version", "prediction", "label", "probabilities",
                                     "prediction_timestamp", "label_timestamp", "latency_ms", "features")


def _int_bytes(values: Sequence[int]) -> bytes:
    return np.array(values, dtype=np.int64).tobytes()


def _float_bytes(values: Sequence[float | None]) -> bytes:
    return _floats_or_none(values).tobytes()


def encode_message(model: str, topic: str, partition: int, low: list[int], items: Sequence[list]) -> bytes:
    """One observation message from the join's items (:class:`driftline.streams.join.JoinOutput`
    ``observations``): ``["p", offset, index, prediction dict]``, ``["j", offset, index,
    labeled dict, prediction coordinates, label coordinates]``, ``["x", offset, index, version]``."""
    p = [item for item in items if item[0] == "p"]
    j = [item for item in items if item[0] == "j"]
    x = [item for item in items if item[0] == "x"]
    message = ObservationMessage(model, topic, partition, low)
    if p:
        offsets, indexes, data = zip(*[item[1:4] for item in p])
        event_ids, versions, timestamps, predictions, probabilities, latencies, features = (
            list(column) for column in zip(*map(_PREDICTION_FIELDS, data)))
        message.predictions = WirePredictions(
            _int_bytes(offsets), _int_bytes(indexes), event_ids, versions, _float_bytes(timestamps), predictions,
            probabilities, _float_bytes(latencies), _wire_features(features))
    if j:
        data = [item[3] for item in j]
        event_ids, versions, predictions, labels, probabilities, predicted_at, labelled_at, latencies, features = (
            list(column) for column in zip(*map(_JOINED_FIELDS, data)))
        message.joined = WireJoined(
            event_ids, _int_bytes([item[4][0] for item in j]), _int_bytes([item[5][0] for item in j]), versions,
            predictions, labels, probabilities, _float_bytes(predicted_at), _float_bytes(labelled_at),
            _float_bytes(latencies), _wire_features(features))
    if x:
        message.expired = WireExpired(_int_bytes([item[1] for item in x]), _int_bytes([item[2] for item in x]),
                                      [item[3] for item in x])
    return _encoder.encode(message)


def decode_message(raw: bytes) -> ObservationMessage:
    """Decode an observation message; raises ``msgspec.ValidationError``/``DecodeError``.

    The JSON messages of earlier versions (``{"model", "t", "part", "low",
    "items"}``), still in the topic after an upgrade, are read too."""
    if raw[:1] == b"{":  # never the start of a MessagePack map
        try:
            legacy = orjson.loads(raw)
            raw = encode_message(legacy["model"], legacy["t"], int(legacy["part"]), list(legacy.get("low") or (0, 0)),
                                 legacy["items"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as error:
            raise msgspec.DecodeError(f"observation message of the JSON format: {type(error).__name__}: {error}"
                                      ) from None
    return _decoder.decode(raw)
