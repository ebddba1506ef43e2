"""Stage 1 -> stage 2 observation columns: exact round trips, replay admission, bad messages."""

from __future__ import annotations

import msgspec
import numpy as np
import orjson
import pytest

from driftline.events import LabeledRecord, Prediction
from driftline.streams.checkpoint import Watermarks
from driftline.streams.observations import (
    JoinedColumns, PredictionColumns, decode_message, encode_message, feature_columns,
)


def _predictions() -> list[Prediction]:
    # mixed schemas: ints, floats, strings, bools, None, an absent key
    return [
        Prediction("e0", "m", 1, 10.0, {"x": 0.5, "n": 3, "c": "a"}, 1, {"0": 0.2, "1": 0.8}, 4.0),
        Prediction("e1", "m", 2, 11.0, {"x": 1.5, "n": None, "b": True}, "yes", None, None),
        Prediction("e2", "m", 1, 12.0, {"n": 2**40, "c": "b"}, 2.5, None, 0.0),
    ]


def _items(preds):
    return [["p", 7 + i, 0, p.to_dict()] for i, p in enumerate(preds)]


def test_predictions_survive_the_wire_exactly():
    preds = _predictions()
    message = decode_message(encode_message("m", "p", 3, [1, 2], _items(preds)))
    assert (message.model, message.topic, message.part, message.low) == ("m", "p", 3, [1, 2])
    columns = message.predictions.columns()
    assert columns.to_events("m") == preds  # ints stay ints, absent stays absent, None stays None
    assert [type(v) for v in columns.features["n"]] == [int, type(None), int]
    offsets, indexes = message.coordinates(message.predictions)
    assert offsets.tolist() == [7, 8, 9] and indexes.tolist() == [0, 0, 0]


def test_all_float_features_travel_as_arrays():
    preds = [Prediction(f"e{i}", "m", 1, 0.0, {"x": i + 0.25}, 0) for i in range(4)]
    columns = decode_message(encode_message("m", "p", 0, [0, 0], _items(preds))).predictions.columns()
    assert isinstance(columns.features["x"], np.ndarray)
    assert columns.features["x"].tolist() == [0.25, 1.25, 2.25, 3.25]


def test_joined_pairs_and_expiries_survive_the_wire():
    pairs = [LabeledRecord("e0", "m", 1, {"x": 1.0}, 1, 0, 5.0, 7.5, {"0": 0.4, "1": 0.6}, 3.0),
             LabeledRecord("e1", "m", 1, {"x": 2.0, "y": "k"}, "a", "b", 6.0, 6.5, None, None)]
    items = [["j", 20 + i, 0, r.to_dict(), [11 + i, 0], [20 + i, 0]] for i, r in enumerate(pairs)]
    items.append(["x", 30, 2, 1])
    message = decode_message(encode_message("m", "l", 1, [0, 0], items))
    assert message.joined.columns().to_events("m") == pairs
    assert [g.tolist() for g in message.rejoin_guards()] == [[11, 12], [20, 21]]
    assert message.expired.versions == [1]
    assert [c.tolist() for c in message.coordinates(message.expired)] == [[30], [2]]


def test_take_and_concat_keep_values_and_absent_keys():
    preds = _predictions()
    columns = PredictionColumns.from_events(preds)
    columns._events = None  # as stage 2 has them: no records behind the columns
    assert columns.take(np.array([0, 2])).to_events("m") == [preds[0], preds[2]]
    # "b" is absent from both kept events: as if never seen
    assert "b" not in columns.take(np.array([0, 2])).features
    whole = PredictionColumns.concat([columns.take(np.array([0])), columns.take(np.array([1, 2]))])
    assert whole.to_events("m") == preds
    assert set(whole.by_version()) == {1, 2}
    assert whole.by_version()[2].to_events("m") == [preds[1]]
    joined = JoinedColumns.from_events([LabeledRecord("e", "m", 1, {"x": 1.0}, 1, 1, 0.0, 1.0)])
    assert len(JoinedColumns.concat([joined, joined])) == 2


def test_feature_columns_of_one_schema_and_of_several():
    same, absent = feature_columns([{"a": 1.0, "b": 1}, {"a": 2.0, "b": 2}])
    assert isinstance(same["a"], np.ndarray) and same["b"] == [1, 2] and absent == {}
    mixed, absent = feature_columns([{"a": 1.0}, {"b": "x"}])
    assert mixed == {"a": [1.0, None], "b": [None, "x"]} and absent == {"a": [1], "b": [0]}
    # as many features in each, but not the same ones
    swapped, absent = feature_columns([{"a": 1.0, "b": 2.0}, {"a": 3.0, "c": 4.0}])
    assert swapped == {"a": swapped["a"], "b": [2.0, None], "c": [None, 4.0]}
    assert swapped["a"].tolist() == [1.0, 3.0] and absent == {"b": [1], "c": [0]}


def test_a_block_is_admitted_above_its_watermark_in_order_or_not():
    marks = Watermarks({"pp0": [5, 1]})
    assert marks.admit_block("p", "p", 0, np.array([4, 5, 5, 6]), np.array([9, 1, 2, 0])).tolist() == [2, 3]
    assert marks.to_dict() == {"pp0": [6, 0]}
    assert marks.admit_block("p", "p", 0, np.array([6, 7]), np.array([0, 0])).tolist() == [1]
    # out of order (never sent by stage 1): each coordinate judged as admit() would
    slow = Watermarks()
    assert slow.admit_block("p", "p", 1, np.array([3, 2, 4]), np.array([0, 0, 0])).tolist() == [0, 2]
    assert slow.to_dict() == {"pp1": [4, 0]}
    assert Watermarks().admit_block("x", "p", 0, np.array([], dtype=np.int64),
                                    np.array([], dtype=np.int64)).size == 0


@pytest.mark.parametrize("damage", ["not msgpack", "columns of unequal lengths"])
def test_a_damaged_message_is_refused_with_a_reason(damage):
    raw = encode_message("m", "p", 0, [0, 0], _items(_predictions()))
    if damage == "not msgpack":
        with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
            decode_message(b"\xc1" + raw)
        return
    message = decode_message(raw)
    message.predictions.versions.pop()
    with pytest.raises(ValueError, match="unequal lengths"):
        message.predictions.columns()


def test_a_json_message_of_the_earlier_format_is_still_read():
    preds = _predictions()
    pair = LabeledRecord("e9", "m", 1, {"x": 1.0}, 1, 0, 5.0, 7.5)
    legacy = orjson.dumps({"model": "m", "t": "p", "part": 2, "low": [3, 4],
                           "items": [["p", 7, 0, preds[0].to_dict()], ["j", 8, 0, pair.to_dict(), [8, 0], [2, 0]],
                                     ["p", 9, 1, preds[1].to_dict()]]})
    message = decode_message(legacy)
    assert (message.model, message.part, message.low) == ("m", 2, [3, 4])
    assert message.predictions.columns().to_events("m") == preds[:2]
    assert message.joined.columns().to_events("m") == [pair]
    with pytest.raises(msgspec.DecodeError, match="JSON format: KeyError"):
        decode_message(b'{"model": "m"}')
