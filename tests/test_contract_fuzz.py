"""Property-based test of the event contract (hypothesis).

For any message (JSON-ish structures with deep nesting, lone surrogates,
huge integers, out-of-range numbers, odd timestamps, duplicate keys, and
random bytes), for every record type:

* ``decode_batch`` never raises; every error is a ``ValidationError`` whose
  message and dead letter can be encoded;
* ``decode`` raises ``ValidationError`` exactly when ``decode_batch`` reports
  an error, and otherwise returns the same records;
* every accepted record round-trips: ``decode(encode(r)) == [r]``, and the
  records together through ``encode_many``.

Bounded in time: a fixed number of examples per test, no example database.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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

RECORD_TYPES = [Prediction, Label, LabeledRecord, Alert, RetrainRequest, ModelEvent, MetricsSnapshot, DeadLetter]

FUZZ = settings(
    max_examples=250,
    deadline=None,  # a 1,024-deep message takes a few ms; the total is what is bounded
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- building messages ------------------------------------------------------------
# Messages are written by a small serialiser of our own, so that they can hold
# what json.dumps cannot: nesting deeper than Python's stack, duplicate keys.


@dataclasses.dataclass(frozen=True)
class Deep:
    """``depth`` nested arrays (or objects) around ``leaf``."""

    depth: int
    leaf: object
    objects: bool = False


@dataclasses.dataclass(frozen=True)
class Pairs:
    """An object written with its pairs as given (keys may repeat)."""

    pairs: tuple


def to_json(value) -> str:
    if isinstance(value, Deep):
        inner = to_json(value.leaf)
        if value.objects:
            return '{"d":' * value.depth + inner + "}" * value.depth
        return "[" * value.depth + inner + "]" * value.depth
    if isinstance(value, Pairs):
        return "{" + ",".join(f"{to_json(k)}:{to_json(v)}" for k, v in value.pairs) + "}"
    if isinstance(value, dict):
        return "{" + ",".join(f"{to_json(k)}:{to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**4000:
        return str(value)[:4290]  # json.dumps refuses ints past 4,300 digits
    # NaN and Infinity come out as literals, as a careless producer sends them.
    return json.dumps(value, allow_nan=True, ensure_ascii=False)


surrogates = st.integers(0xD800, 0xDFFF).map(chr)
texts = st.one_of(
    st.text(max_size=12),
    st.lists(st.one_of(st.characters(), surrogates), max_size=6).map("".join),
    st.sampled_from(["", "\ud800", "a\udfffb", "\x00", "é", "m" * 300, "x" * 1100]),
)
huge_ints = st.sampled_from([2**53 + 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**30, 10**400, -(10**400)])
numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    huge_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, 5e-324, -0.0, 1e11, 99999999999.9]),
)
iso_times = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)).map(
        lambda d: d.isoformat()
    ),
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-23, minutes=-59)),
                                   timezone(timedelta(hours=14))]),
    ).map(lambda d: d.isoformat()),
    st.sampled_from(["9999-12-31T23:59:59", "0001-01-01", "1970-01-01T00:00:00Z", "1969-12-31T23:59:59",
                     "5138-11-16T09:46:40", "2024-02-30", "2024-01-01T25:00", "", "T", "2024-01-01\n"]),
)


def mostly(good, odd, odds: int = 4):
    """``good`` about ``odds`` times out of ``odds + 1``, else ``odd``."""
    # A window in the middle: hypothesis favours small and boundary integers.
    width = 100 // (odds + 1)
    return st.integers(0, 99).flatmap(lambda k: odd if 40 <= k < 40 + width else good)


timestamps = mostly(st.one_of(st.floats(0, 1e11, exclude_max=True), st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(5000, 1, 1)).map(lambda d: d.isoformat())),
    st.one_of(iso_times, numbers))
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
junk = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(texts, children, max_size=4),
        st.lists(st.tuples(texts, children), max_size=4).map(lambda p: Pairs(tuple(p))),
    ),
    max_leaves=12,
)
deep = st.builds(Deep, st.sampled_from([2, 31, 32, 33, 100, 253, 254, 255, 999, 1000, 1022, 1023, 1024, 1025,
                                         1100]), scalars, st.booleans())
anything = st.one_of(junk, deep)

names = mostly(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,12}", fullmatch=True), texts)
ids = mostly(st.text(min_size=1, max_size=12), texts)
small_ints = st.one_of(st.integers(0, 2**53), st.integers(0, 100).map(float))
finite = st.floats(allow_nan=False, allow_infinity=False)
feature_maps = mostly(st.dictionaries(st.text(min_size=1, max_size=8), st.one_of(st.none(), st.booleans(), finite,
                                    st.integers(-(2**63), 2**64 - 1), st.text(max_size=8)), min_size=1, max_size=5),
                     st.dictionaries(texts, scalars, min_size=1, max_size=5))
number_maps = st.dictionaries(texts, st.one_of(st.none(), finite, st.integers(-(2**63), 2**64 - 1)), max_size=4)

# Plausible values per field name, so that many events are accepted and the
# round trip is exercised; each field is also sometimes junk or missing.
PLAUSIBLE = {
    "model": names,
    "alias": names,
    "model_version": small_ints,
    "version": small_ints,
    "partition": small_ints,
    "offset": small_ints,
    "index": small_ints,
    "original_size": small_ints,
    "timestamp": timestamps,
    "prediction_timestamp": timestamps,
    "label_timestamp": timestamps,
    "features": feature_maps,
    "prediction": mostly(st.one_of(st.booleans(), finite, st.text(min_size=1, max_size=8)), scalars),
    "label": mostly(st.one_of(st.booleans(), st.integers(-5, 5), st.text(min_size=1, max_size=8)), scalars),
    "probabilities": mostly(st.dictionaries(st.text(min_size=1, max_size=4), st.floats(0, 1), min_size=1, max_size=3),
                            st.dictionaries(texts, numbers, max_size=3)),
    "latency_ms": finite,
    "value": finite,
    "threshold": finite,
    "kind": st.sampled_from(["data_drift", "metric", "Data Drift"]),
    "reason": st.one_of(st.sampled_from(events.RETRAIN_REASONS), ids),
    "event": mostly(st.sampled_from(events.MODEL_EVENTS), texts),
    "metrics": number_maps,
    "cumulative": number_maps,
    "rolling": number_maps,
    "details": st.dictionaries(texts, anything, max_size=4),
    "stats": st.dictionaries(texts, anything, max_size=4),
    "alert_ids": st.lists(ids, max_size=3),
    "original": mostly(st.binary(max_size=20).map(lambda b: base64.b64encode(b).decode()), texts),
    "field": st.one_of(st.none(), ids),
}

_MISSING = object()


def event_for(record_type):
    fields = [f.name for f in dataclasses.fields(record_type)]
    return st.fixed_dictionaries(
        {name: mostly(PLAUSIBLE.get(name, ids), st.one_of(anything, st.just(_MISSING)), 9) for name in fields}
    ).map(lambda event: {k: v for k, v in event.items() if v is not _MISSING})


def message_for(record_type):
    event = event_for(record_type)
    structured = st.one_of(
        event,
        st.lists(st.one_of(event, event, anything), min_size=0, max_size=4),
        anything,
    ).map(to_json)
    as_bytes = structured.map(lambda text: text.encode("utf-8", "surrogatepass"))
    return st.one_of(structured, as_bytes, st.binary(max_size=64))


# -- the property -----------------------------------------------------------------


def check_contract(record_type, payload) -> None:
    batch = decode_batch(record_type, payload)  # never raises
    for error in batch.errors:
        assert type(error) is ValidationError
        message = str(error)
        assert len(message) < 2_000, message[:200]
        message.encode("utf-8")  # a dead letter can carry it
        raw = payload if isinstance(payload, bytes) else payload.encode("utf-8", "surrogatepass")
        letter = DeadLetter.for_payload(raw, error, source_topic="t", component="fuzz")
        assert decode(DeadLetter, encode(letter)) == [letter]
    for record in batch.records:
        assert type(record) is record_type
        assert decode(record_type, encode(record)) == [record]
    if batch.records:
        assert decode(record_type, encode_many(batch.records)) == batch.records
    try:
        strict = decode(record_type, payload)
    except ValidationError as error:
        assert batch.errors and str(error) == str(batch.errors[0])
    else:
        assert not batch.errors and strict == batch.records


def _fuzz(record_type):
    @FUZZ
    @given(payload=message_for(record_type))
    def test(payload):
        check_contract(record_type, payload)

    test.__name__ = f"test_contract_holds_for_any_{record_type.__name__}_message"
    return test


test_prediction = _fuzz(Prediction)
test_label = _fuzz(Label)
test_labeled_record = _fuzz(LabeledRecord)
test_alert = _fuzz(Alert)
test_retrain_request = _fuzz(RetrainRequest)
test_model_event = _fuzz(ModelEvent)
test_metrics_snapshot = _fuzz(MetricsSnapshot)
test_dead_letter = _fuzz(DeadLetter)


def test_the_generators_reach_both_outcomes():
    # The property is only worth something if accepted records are common
    # enough to exercise the round trip: check that on a fixed sample.
    accepted = refused = 0

    @settings(max_examples=200, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(payload=message_for(Prediction))
    def count(payload):
        nonlocal accepted, refused
        batch = decode_batch(Prediction, payload)
        accepted += len(batch.records)
        refused += len(batch.errors)

    count()
    assert accepted >= 10 and refused >= 10, (accepted, refused)
