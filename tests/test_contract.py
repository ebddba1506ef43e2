"""The event contract: round trips, and a corpus of malformed records that
must each give the specific ValidationError (never another exception)."""

from __future__ import annotations

import json
import math

import pytest

from driftline import events
from driftline.events import (
    Alert,
    DeadLetter,
    Label,
    LabeledRecord,
    MetricsSnapshot,
    ModelEvent,
    Prediction,
    RetrainRequest,
    ValidationError,
    decode,
    decode_batch,
    encode,
    encode_many,
)

GOOD = {
    "event_id": "e-1",
    "model": "churn",
    "model_version": 3,
    "timestamp": 1_700_000_000.5,
    "features": {"age": 42, "income": 1234.5, "plan": "pro", "active": True, "missing": None},
    "prediction": "yes",
    "probabilities": {"yes": 0.7, "no": 0.3},
    "latency_ms": 4.2,
}


def good(**changes):
    record = {**GOOD, **changes}
    return {k: v for k, v in record.items() if v is not _DROP}


_DROP = object()


def test_prediction_round_trip():
    [record] = decode(Prediction, json.dumps(GOOD))
    assert record.to_dict() == GOOD
    assert decode(Prediction, encode(record)) == [record]


def test_every_record_type_round_trips():
    samples = [
        Label(event_id="e-1", model="churn", label=1, timestamp=10.0),
        LabeledRecord(event_id="e-1", model="churn", model_version=1, features={"x": 1.0}, prediction=0,
                      label=1, prediction_timestamp=1.0, label_timestamp=2.0, probabilities={"1": 0.4, "0": 0.6}),
        Alert(alert_id="a", model="churn", model_version=2, kind="data_drift", subject="age", detector="ks",
              value=0.31, threshold=0.2, timestamp=5.0, message="age drifted"),
        RetrainRequest(request_id="r", model="churn", reason="drift", timestamp=6.0, alert_ids=["a"]),
        ModelEvent(event="promoted", model="churn", timestamp=7.0, version=4, alias="champion",
                   metrics={"candidate_accuracy": 0.9, "champion_accuracy": 0.8}, request_id="r"),
        MetricsSnapshot(model="churn", model_version=4, timestamp=8.0, cumulative={"accuracy": 0.9, "roc_auc": None}),
        DeadLetter.for_payload(b"\xff\x00", ValueError("boom"), source_topic="x.predictions", component="test"),
    ]
    for record in samples:
        assert decode(type(record), encode(record)) == [record], type(record).__name__


def test_iso_timestamps_become_epoch_seconds():
    [a] = decode(Prediction, json.dumps(good(timestamp="2024-01-02T03:04:05Z")))
    [b] = decode(Prediction, json.dumps(good(timestamp="2024-01-02T03:04:05")))  # naive means UTC
    [c] = decode(Prediction, json.dumps(good(timestamp="2024-01-02T04:04:05+01:00")))
    assert a.timestamp == b.timestamp == c.timestamp == 1704164645.0


def test_bulk_message_keeps_good_events_and_reports_bad_ones_by_index():
    payload = json.dumps([good(event_id="a"), good(model_version="x"), good(event_id="c")])
    batch = decode_batch(Prediction, payload)
    assert [r.event_id for r in batch.records] == ["a", "c"]
    [error] = batch.errors
    assert (error.index, error.field) == (1, "model_version")
    assert str(error).startswith("[1].model_version: must be an integer")


def test_encode_many_is_a_bulk_message():
    records = [Prediction.from_dict(good(event_id=str(i))) for i in range(3)]
    assert decode(Prediction, encode_many(records)) == records


# (payload, field named in the error, words in the reason)
MALFORMED = [
    ("not json", b"{nope", "<payload>", "not valid JSON"),
    ("not utf-8", b"\xff\xfe{}", "<payload>", "not UTF-8"),
    ("empty payload", b"", "<payload>", "not valid JSON"),
    ("json scalar", b"42", "<event>", "must be a JSON object"),
    ("json string", b'"hello"', "<event>", "must be a JSON object"),
    ("empty array", b"[]", "<payload>", "empty array"),
    ("NaN literal", b'{"event_id": NaN}', "<payload>", "NaN and Infinity"),
    ("Infinity literal", json.dumps(good()).replace("4.2", "Infinity").encode(), "<payload>", "NaN and Infinity"),
    ("missing event_id", json.dumps(good(event_id=_DROP)), "event_id", "missing required field"),
    ("missing features", json.dumps(good(features=_DROP)), "features", "missing required field"),
    ("missing prediction", json.dumps(good(prediction=_DROP)), "prediction", "missing required field"),
    ("event_id not a string", json.dumps(good(event_id=17)), "event_id", "must be a string"),
    ("event_id empty", json.dumps(good(event_id="")), "event_id", "1-256 characters"),
    ("model with slash", json.dumps(good(model="../etc/passwd")), "model", "letters, digits"),
    ("model with space", json.dumps(good(model="my model")), "model", "letters, digits"),
    ("model with dots", json.dumps(good(model="a..b")), "model", "no '..'"),
    ("model too long", json.dumps(good(model="m" * 129)), "model", "1-128"),
    ("model not a string", json.dumps(good(model=["churn"])), "model", "must be a string"),
    ("version a string", json.dumps(good(model_version="3")), "model_version", "must be an integer"),
    ("version negative", json.dumps(good(model_version=-1)), "model_version", "between 0"),
    ("version a bool", json.dumps(good(model_version=True)), "model_version", "must be an integer"),
    ("timestamp garbage", json.dumps(good(timestamp="yesterday")), "timestamp", "not an ISO-8601"),
    ("timestamp object", json.dumps(good(timestamp={"t": 1})), "timestamp", "ISO-8601 text or epoch"),
    ("timestamp negative", json.dumps(good(timestamp=-5)), "timestamp", "between 0 and 1e11"),
    ("features a list", json.dumps(good(features=[1, 2])), "features", "must be an object"),
    ("features empty", json.dumps(good(features={})), "features", "must not be empty"),
    ("feature nested object", json.dumps(good(features={"a": {"b": 1}})), "features.a", "number, string, bool or null"),
    ("feature nested list", json.dumps(good(features={"a": [1, [2]]})), "features.a", "number, string, bool or null"),
    ("feature huge string", json.dumps(good(features={"a": "x" * 2000})), "features.a", "longer than"),
    ("too many features", json.dumps(good(features={f"f{i}": i for i in range(1001)})), "features", "more than 1000"),
    ("prediction null", json.dumps(good(prediction=None)), "prediction", "class label"),
    ("prediction object", json.dumps(good(prediction={"a": 1})), "prediction", "class label"),
    ("probabilities out of range", json.dumps(good(probabilities={"yes": 1.5})), "probabilities.yes", "between 0 and 1"),
    ("probabilities a list", json.dumps(good(probabilities=[0.5, 0.5])), "probabilities", "non-empty object"),
    ("probability a string", json.dumps(good(probabilities={"yes": "0.5"})), "probabilities.yes", "between 0 and 1"),
    ("latency negative", json.dumps(good(latency_ms=-1)), "latency_ms", "must not be negative"),
    ("latency a string", json.dumps(good(latency_ms="fast")), "latency_ms", "finite number"),
    ("oversize payload", b'{"event_id": "' + b"x" * events.MAX_MESSAGE_BYTES + b'"}', "<payload>", "larger than"),
    ("deeply nested garbage", b"[" * 100_000 + b"]" * 100_000, "<payload>", "not valid JSON"),
    ("bulk of garbage", b"[1, 2]", "<event>", "must be a JSON object"),
]


@pytest.mark.parametrize("payload, field, reason", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_prediction_gives_specific_validation_error(payload, field, reason):
    with pytest.raises(ValidationError) as caught:
        decode(Prediction, payload)
    assert type(caught.value) is ValidationError
    assert caught.value.field == field
    assert reason in str(caught.value)


def test_nan_in_python_values_is_refused_too():
    with pytest.raises(ValidationError, match=r"features.x: must be finite"):
        Prediction.from_dict(good(features={"x": math.nan}))
    with pytest.raises(ValidationError, match=r"latency_ms: must be a finite number"):
        Prediction.from_dict(good(latency_ms=math.inf))


def test_too_many_events_in_one_bulk_message():
    payload = json.dumps([{}] * (events.MAX_BATCH_EVENTS + 1))  # small enough to pass the size check
    with pytest.raises(ValidationError, match="more than 10000 events"):
        decode(Prediction, payload)


@pytest.mark.parametrize(
    "record_type, payload, field",
    [
        (Label, {"event_id": "e", "model": "m", "timestamp": 1}, "label"),
        (Label, {"event_id": "e", "model": "m", "label": [1], "timestamp": 1}, "label"),
        (Alert, {"alert_id": "a", "model": "m", "model_version": 1, "kind": "Data Drift", "subject": "x",
                 "detector": "ks", "value": 1, "timestamp": 1, "message": "m"}, "kind"),
        (RetrainRequest, {"request_id": "r", "model": "m", "reason": "boredom", "timestamp": 1}, "reason"),
        (RetrainRequest, {"request_id": "r", "model": "m", "reason": "drift", "timestamp": 1, "alert_ids": [1]},
         "alert_ids[0]"),
        (ModelEvent, {"event": "exploded", "model": "m", "timestamp": 1}, "event"),
        (ModelEvent, {"event": "promoted", "model": "m", "timestamp": 1, "metrics": {"acc": "high"}}, "metrics.acc"),
        (MetricsSnapshot, {"model": "m", "model_version": 1, "timestamp": 1, "cumulative": {"accuracy": True}},
         "cumulative.accuracy"),
    ],
)
def test_other_records_name_the_bad_field(record_type, payload, field):
    with pytest.raises(ValidationError) as caught:
        decode(record_type, json.dumps(payload))
    assert caught.value.field == field


def test_validate_name():
    assert events.validate_name("churn-v2.prod_1") == "churn-v2.prod_1"
    for bad in ["", "/abs", "a/b", "a\\b", "..", ".hidden", "a b", "x" * 129, "é"]:
        with pytest.raises(ValidationError):
            events.validate_name(bad)


def test_encode_refuses_invalid_records_naming_the_field():
    record = Prediction.from_dict(good())
    record.latency_ms = math.nan
    with pytest.raises(ValidationError, match=r"^latency_ms: must be a finite number"):
        encode(record)
    alert = Alert(alert_id="a", model="m/../x", model_version=1, kind="metric", subject="accuracy",
                  detector="threshold", value=0.5, threshold=0.8, timestamp=1.0, message="low")
    with pytest.raises(ValidationError, match=r"^model: "):
        encode(alert)
    with pytest.raises(ValidationError, match=r"^\[1\]\.features\.x: must be finite"):
        encode_many([Prediction.from_dict(good()), _with_nan_feature()])


def _with_nan_feature() -> Prediction:
    record = Prediction.from_dict(good(features={"x": 1.0}))
    record.features["x"] = math.nan
    return record


def test_numpy_numbers_in_free_form_objects_encode_as_plain_numbers():
    import numpy as np

    snapshot = MetricsSnapshot(model="m", model_version=1, timestamp=1.0, cumulative={"accuracy": np.float64(0.5)},
                               stats={"joined": np.int64(7)})
    assert json.loads(encode(snapshot)) == {"model": "m", "model_version": 1, "timestamp": 1.0,
                                            "cumulative": {"accuracy": 0.5}, "rolling": {}, "stats": {"joined": 7}}


def test_dead_letter_keeps_original_bytes_and_reason():
    payload = b'{"event_id": 1}'
    error = decode_batch(Prediction, payload).errors[0]
    letter = DeadLetter.for_payload(payload, error, source_topic="p", component="monitor", partition=2, offset=9)
    assert letter.original_bytes() == payload
    assert letter.field == "event_id" and "must be a string" in letter.reason
    assert (letter.partition, letter.offset) == (2, 9)


def test_dead_letters_of_empty_and_oversize_messages_fit_in_a_message():
    empty = DeadLetter.for_payload(b"", decode_batch(Prediction, b"").errors[0], source_topic="p", component="c")
    assert decode(DeadLetter, encode(empty)) == [empty] and empty.original_size == 0
    huge_payload = b"[" + b" " * (2 * events.MAX_MESSAGE_BYTES) + b"]"
    error = decode_batch(Prediction, huge_payload).errors[0]
    huge = DeadLetter.for_payload(huge_payload, error, source_topic="p", component="c")
    assert huge.original_size == len(huge_payload)
    assert huge.original_bytes() == huge_payload[: events.MAX_DEAD_LETTER_BYTES]
    assert len(encode(huge)) < events.MAX_MESSAGE_BYTES


# -- what orjson cannot hold, and bounded error messages ------------------------------


def _nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


def test_deeply_nested_value_in_a_field_gives_a_short_validation_error():
    # 1,000 levels: orjson reads it; the message must not repr it recursively.
    payload = '{"event_id": %s, "model": "m", "label": 1, "timestamp": 1}' % _nested(1000)
    with pytest.raises(ValidationError) as caught:
        decode(Label, payload)
    assert type(caught.value) is ValidationError
    assert str(caught.value) == "event_id: must be a string (got [[[[...]]]])"


@pytest.mark.parametrize(
    "feature, field, reason",
    [
        ('"\\ud800"', "features.x", "lone surrogate"),  # the escape, as JSON text
        ('"a\\udfffb"', "features.x", "lone surrogate"),
        ("1" + "0" * 400, "features.x", "integer beyond 64 bits"),
        ("1e400", "features.x", "beyond the float range"),
        ("-1e400", "features.x", "beyond the float range"),
    ],
)
def test_what_orjson_refuses_is_refused_naming_the_field(feature, field, reason):
    payload = json.dumps(good(features={"x": 0})).replace('{"x": 0}', '{"x": %s}' % feature)
    with pytest.raises(ValidationError) as caught:
        decode(Prediction, payload)
    assert type(caught.value) is ValidationError
    assert caught.value.field == field and reason in caught.value.reason
    str(caught.value).encode("utf-8")  # the message itself is encodable


def test_lone_surrogate_in_text_payload_and_in_a_key_is_refused():
    text = json.dumps(good(event_id="\ud800"), ensure_ascii=False)  # a str holding the surrogate itself
    with pytest.raises(ValidationError, match=r"^event_id: contains a lone surrogate .*\(got '\\ud800'\)$"):
        decode(Prediction, text)
    with pytest.raises(ValidationError, match=r"^features: has a key with a lone surrogate"):
        decode(Prediction, json.dumps(good(features={"\udc00": 1})))


def test_a_bulk_message_refuses_only_the_event_orjson_cannot_read():
    payload = json.dumps([good(event_id="a"), good(event_id="\ud800"), good(event_id="c")])
    batch = decode_batch(Prediction, payload)
    assert [r.event_id for r in batch.records] == ["a", "c"]
    [error] = batch.errors
    assert (error.index, error.field) == (1, "event_id")
    assert str(error).startswith("[1].event_id: contains a lone surrogate")


def test_integers_beyond_64_bits_in_python_built_records_are_refused():
    with pytest.raises(ValidationError, match=r"^features.x: must be an integer within 64 bits \(got 18446744073709551616\)"):
        Prediction.from_dict(good(features={"x": 2**64}))
    assert Prediction.from_dict(good(features={"x": 2**64 - 1})).features == {"x": 2**64 - 1}
    with pytest.raises(ValidationError, match=r"^prediction: must be an integer within 64 bits"):
        Prediction.from_dict(good(prediction=-(2**63) - 1))
    with pytest.raises(ValidationError, match=r"^latency_ms: must be a finite number"):
        Prediction.from_dict(good(latency_ms=10**400))  # float() of it would overflow


@pytest.mark.parametrize("depth, accepted", [(1024, True), (1025, False)])
def test_nesting_limit_of_a_message(depth, accepted):
    batch = decode_batch(Prediction, _nested(depth - 1, "{}"))  # the object is level `depth`
    if accepted:  # read, then refused as a shape error
        assert str(batch.errors[0]).startswith("[0].<event>: must be a JSON object")
    else:
        [error] = batch.errors
        assert error.field == "<payload>" and "depth limit exceeded" in error.reason


def test_free_form_objects_nest_at_most_max_object_depth_levels():
    def details(depth):
        value = 1
        for _ in range(depth):
            value = {"a": value}
        return value

    ok = {"event": "failed", "model": "m", "timestamp": 1, "details": details(events.MAX_OBJECT_DEPTH)}
    [record] = decode(ModelEvent, json.dumps(ok))
    assert decode(ModelEvent, encode(record)) == [record]
    with pytest.raises(ValidationError, match=r"^details(\.a){32}: is nested more than 32 levels deep"):
        decode(ModelEvent, json.dumps({**ok, "details": details(events.MAX_OBJECT_DEPTH + 1)}))
    # 300 levels would be read by orjson but could not be written (254 at most).
    with pytest.raises(ValidationError, match=r"nested more than 32 levels"):
        decode(MetricsSnapshot, json.dumps({"model": "m", "model_version": 1, "timestamp": 1})[:-1]
               + ', "stats": ' + '{"a":' * 300 + "1" + "}" * 300 + "}")


def test_free_form_objects_from_python_must_be_json():
    import numpy as np

    with pytest.raises(ValidationError, match=r"^details.when: is a set, which JSON cannot hold"):
        encode(ModelEvent(event="failed", model="m", timestamp=1.0, details={"when": {1, 2}}))
    with pytest.raises(ValidationError, match=r"^stats.a: is a ndarray, which JSON cannot hold"):
        encode(MetricsSnapshot(model="m", model_version=1, timestamp=1.0, stats={"a": np.array([1, 2])}))
    with pytest.raises(ValidationError, match=r"^stats: has a key that is not a string \(got 3\)"):
        encode(MetricsSnapshot(model="m", model_version=1, timestamp=1.0, stats={3: 1}))
    with pytest.raises(ValidationError, match=r"^features: feature names must be"):
        encode(Prediction(**{**good(), "features": {3: 1}}))


@pytest.mark.parametrize("stamp", ["9999-12-31T23:59:59", "0001-01-01", "1969-12-31T23:59:59",
                                   "5138-11-16T09:46:40", "1970-01-01T00:00:00+00:01"])
def test_iso_timestamps_get_the_numeric_range_check(stamp):
    with pytest.raises(ValidationError, match=r"^timestamp: must be a time between 1970-01-01 and 5138-11-16"):
        decode(Prediction, json.dumps(good(timestamp=stamp)))


def test_iso_timestamps_at_the_edges_of_the_range_round_trip():
    for stamp, seconds in [("1970-01-01T00:00:00", 0.0), ("5138-11-16T09:46:39", 1e11 - 1)]:
        [record] = decode(Prediction, json.dumps(good(timestamp=stamp)))
        assert record.timestamp == seconds
        assert decode(Prediction, encode(record)) == [record]


def test_duplicate_keys_keep_the_last_value():
    # Documented behaviour (README, "The event contract"): the last one wins.
    payload = json.dumps(good()).replace('"event_id": "e-1"', '"event_id": "first", "event_id": "last"')
    [record] = decode(Prediction, payload)
    assert record.event_id == "last"


def test_error_messages_are_bounded_and_show_numpy_values_by_value():
    import numpy as np

    with pytest.raises(ValidationError) as caught:
        Prediction.from_dict(good(event_id="x" * 100_000))
    assert len(str(caught.value)) < 200 and "xxx...xxx" in str(caught.value)
    with pytest.raises(ValidationError) as caught:
        Prediction.from_dict(good(features={"x": np.float64("nan")}))
    assert str(caught.value) == "features.x: must be a number, string, bool or null (got nan)"
    with pytest.raises(ValidationError) as caught:
        Prediction.from_dict(good(latency_ms=10**5000))
    assert str(caught.value) == "latency_ms: must be a finite number (got <integer of 16610 bits>)"

    class Hostile:
        def __repr__(self):
            raise RuntimeError("no")

    with pytest.raises(ValidationError, match=r"^prediction: must be a class label .*\(got <Hostile instance"):
        Prediction.from_dict(good(prediction=Hostile()))


def test_names_with_a_trailing_newline_are_refused():
    with pytest.raises(ValidationError, match="^model: must be 1-128"):
        decode(Prediction, json.dumps(good(model="churn\n")))


def test_dead_letter_original_must_be_base64():
    letter = DeadLetter.for_payload(b"x", ValueError("boom"), source_topic="p", component="c").to_dict()
    with pytest.raises(ValidationError, match=r"^original: is not valid base64"):
        decode(DeadLetter, json.dumps({**letter, "original": "not base64!"}))


def test_dead_letter_of_an_error_with_surrogates_can_be_encoded():
    letter = DeadLetter.for_payload(b"x", ValueError("bad \ud800 text"), source_topic="p", component="c")
    assert decode(DeadLetter, encode(letter)) == [letter]
    assert "bad \\ud800 text" in letter.reason


def test_an_integer_of_2_64_in_a_message_is_read_as_a_float_or_refused():
    # orjson (3.13 here) reads integers beyond 64 bits as floats; an orjson that
    # refuses them gets the fallback's reason. Either way nothing unencodable
    # is accepted.
    payload = json.dumps(good(features={"x": 2**64}))
    batch = decode_batch(Prediction, payload)
    if batch.records:
        [record] = batch.records
        assert record.features == {"x": float(2**64)} and type(record.features["x"]) is float
        assert decode(Prediction, encode(record)) == [record]
    else:
        [error] = batch.errors
        assert (error.field, error.reason) == ("features.x", "is an integer beyond 64 bits")


def test_the_written_out_to_dicts_name_every_field_in_order():
    # Prediction and Label write their to_dict out (the monitor's hot path): a
    # field added to the class and not there must fail here.
    from dataclasses import fields

    from driftline.records import Label, Prediction, _Record

    for record in (Prediction("e", "m", 1, 2.0, {"x": 1.0}, 1, {"0": 0.4, "1": 0.6}, 3.0),
                   Label("e", "m", "yes", 2.0)):
        assert record.to_dict() == _Record.to_dict(record)
        assert list(record.to_dict()) == [f.name for f in fields(record)]
