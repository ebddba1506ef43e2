"""The contract's fast path (msgspec, driftline/eventschema.py) and its JSON Schema.

* The fast path decides only what the contract's validator would decide the
  same way: on generated messages, whatever it accepts the validator accepts,
  with byte-for-byte the same records; everything else it leaves to the
  validator (None).
* It is really taken for ordinary messages, single and bulk.
* ``driftline schema`` prints the committed schema file, and that schema
  (checked with the ``jsonschema`` package) accepts good events and refuses bad ones.
"""

from __future__ import annotations

import json
import os
from unittest import mock

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings

from driftline import events
from driftline.cli import main, schema_text
from driftline.events import Label, LabeledRecord, Prediction, decode_batch, encode_many
from tests.test_contract_fuzz import message_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA_FILE = os.path.join(ROOT, "schema", "driftline-events.schema.json")

GOOD_PREDICTION = {"event_id": "e-1", "model": "churn", "model_version": 3, "timestamp": 1_700_000_000.5,
                   "features": {"age": 42, "income": 1234.5, "plan": "pro", "active": True, "missing": None},
                   "prediction": "yes", "probabilities": {"yes": 0.7, "no": 0.3}, "latency_ms": 4.2}
GOOD_LABEL = {"event_id": "e-1", "model": "churn", "label": "yes", "timestamp": "2024-01-02T03:04:05Z"}


def precise(record_type, payload):
    """What the contract's own validator makes of ``payload`` (fast path off)."""
    with mock.patch.dict(events._FAST, clear=True):
        return decode_batch(record_type, payload)


def check_fast_agrees(record_type, payload) -> bool:
    """True when the fast path decided ``payload``."""
    fast = events._FAST[record_type](payload) if isinstance(payload, (bytes, str)) else None
    if fast is None:
        return False
    slow = precise(record_type, payload)
    assert not slow.errors, (payload, slow.errors[0])
    assert fast == slow.records
    # Same types too (1 and 1.0 are equal in Python, not on the wire).
    assert encode_many(fast, validate=False) == encode_many(slow.records, validate=False)
    assert decode_batch(record_type, payload).records == fast
    return True


FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("record_type", [Prediction, Label, LabeledRecord], ids=lambda t: t.__name__)
def test_the_fast_path_accepts_only_what_the_validator_accepts_and_gives_the_same_records(record_type):
    decided = []

    @FUZZ
    @given(payload=message_for(record_type))
    def check(payload):
        decided.append(check_fast_agrees(record_type, payload))

    check()
    assert sum(decided) >= 10, "the generators must reach the fast path"


@pytest.mark.parametrize(
    "record_type, event",
    [(Prediction, GOOD_PREDICTION), (Label, GOOD_LABEL),
     (Prediction, {**GOOD_PREDICTION, "probabilities": None, "latency_ms": 0, "prediction": 1, "timestamp": 5}),
     (Prediction, {**GOOD_PREDICTION, "features": {"x": 2**63 - 1, "y": -(2**63), "z": 1e308, "w": -0.0}}),
     (LabeledRecord, {"event_id": "e", "model": "churn", "model_version": 1, "features": {"x": 1.5},
                      "prediction": 0, "label": 1, "prediction_timestamp": 1.0,
                      "label_timestamp": "2024-01-02T03:04:05+01:00", "latency_ms": -2.5})],
)
def test_ordinary_messages_take_the_fast_path(record_type, event):
    for payload in (json.dumps(event).encode(), json.dumps([event] * 3).encode(), json.dumps(event)):
        assert check_fast_agrees(record_type, payload), payload


@pytest.mark.parametrize(
    "change",
    [{"model_version": 2.0},  # integral float: the validator accepts it as 2
     {"features": {"x": 2**64 - 1}},  # beyond msgspec's signed bound, within the contract's
     {"extra": "1e400"},  # unknown fields: the validator reads (and here refuses) them
     {"model": "a..b"}, {"model": "churn\n"}, {"features": {"": 1}}, {"features": {"k" * 257: 1}},
     {"timestamp": "2024-02-30"}, {"timestamp": "9999-12-31"}],
)
def test_what_the_fast_path_cannot_decide_goes_to_the_validator(change):
    payload = json.dumps({**GOOD_PREDICTION, **change}).replace('"1e400"', "1e400").encode()
    assert events._FAST[Prediction](payload) is None
    batch, slow = decode_batch(Prediction, payload), precise(Prediction, payload)
    assert batch.records == slow.records and list(map(str, batch.errors)) == list(map(str, slow.errors))


def test_a_bulk_message_with_one_bad_event_keeps_the_good_ones_and_names_the_bad_one():
    payload = json.dumps([GOOD_PREDICTION, {**GOOD_PREDICTION, "model_version": "x"}, GOOD_PREDICTION])
    batch = decode_batch(Prediction, payload)
    assert len(batch.records) == 2
    [error] = batch.errors
    assert str(error) == "[1].model_version: must be an integer (got 'x')"


# -- JSON Schema ---------------------------------------------------------------------


def test_the_committed_schema_is_what_driftline_schema_prints(capsys):
    assert main(["schema"]) == 0
    printed = capsys.readouterr().out
    with open(SCHEMA_FILE, encoding="utf-8") as handle:
        committed = handle.read()
    assert printed == schema_text() == committed, "run: driftline schema > schema/driftline-events.schema.json"


def _validator(definition: str):
    schema = json.loads(schema_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator({"$ref": f"#/$defs/{definition}", "$defs": schema["$defs"]})


def test_the_schema_accepts_good_messages_of_every_record_type():
    samples = {
        "PredictionMessage": [GOOD_PREDICTION, [GOOD_PREDICTION, GOOD_PREDICTION],
                              {**GOOD_PREDICTION, "probabilities": None, "features": {"x": 2**64 - 1}}],
        "LabelMessage": [GOOD_LABEL, [GOOD_LABEL], {**GOOD_LABEL, "label": 1, "timestamp": 0}],
        "AlertMessage": [{"alert_id": "a", "model": "churn", "model_version": 2, "kind": "data_drift",
                          "subject": "age", "detector": "ks", "value": 0.31, "threshold": 0.2, "timestamp": 5.0,
                          "message": "age drifted"}],
        "RetrainRequestMessage": [{"request_id": "r", "model": "churn", "reason": "drift", "timestamp": 6.0,
                                   "alert_ids": ["a"]}],
        "ModelEventMessage": [{"event": "promoted", "model": "churn", "timestamp": 7.0, "version": 4,
                               "alias": "champion", "metrics": {"accuracy": 0.9, "auc": None},
                               "details": {"a": [1, {"b": None}]}}],
        "MetricsSnapshotMessage": [{"model": "churn", "model_version": 4, "timestamp": 8.0,
                                    "cumulative": {"accuracy": 0.9}, "stats": {"joined": 7}}],
        "DeadLetterMessage": [events.DeadLetter.for_payload(b"\xff", ValueError("boom"), source_topic="t",
                                                            component="c").to_dict()],
    }
    for definition, messages in samples.items():
        validator = _validator(definition)
        for message in messages:
            errors = [e.message for e in validator.iter_errors(message)]
            assert not errors, (definition, message, errors)
            # And the contract itself accepts them: the schema is not looser in these.
            record_type = getattr(events, definition[: -len("Message")])
            assert not decode_batch(record_type, json.dumps(message)).errors


@pytest.mark.parametrize(
    "definition, message",
    [
        ("PredictionMessage", {k: v for k, v in GOOD_PREDICTION.items() if k != "model"}),
        ("PredictionMessage", {**GOOD_PREDICTION, "model": "../etc/passwd"}),
        ("PredictionMessage", {**GOOD_PREDICTION, "model": "a..b"}),
        ("PredictionMessage", {**GOOD_PREDICTION, "model": "churn\n"}),
        ("PredictionMessage", {**GOOD_PREDICTION, "model_version": -1}),
        ("PredictionMessage", {**GOOD_PREDICTION, "model_version": True}),
        ("PredictionMessage", {**GOOD_PREDICTION, "timestamp": -5}),
        ("PredictionMessage", {**GOOD_PREDICTION, "timestamp": {"t": 1}}),
        ("PredictionMessage", {**GOOD_PREDICTION, "features": {}}),
        ("PredictionMessage", {**GOOD_PREDICTION, "features": {"a": {"b": 1}}}),
        ("PredictionMessage", {**GOOD_PREDICTION, "features": {"": 1}}),
        ("PredictionMessage", {**GOOD_PREDICTION, "features": {"a": "x" * 2000}}),
        ("PredictionMessage", {**GOOD_PREDICTION, "prediction": None}),
        ("PredictionMessage", {**GOOD_PREDICTION, "probabilities": {"yes": 1.5}}),
        ("PredictionMessage", {**GOOD_PREDICTION, "latency_ms": -1}),
        ("PredictionMessage", []),
        ("PredictionMessage", [GOOD_PREDICTION, 42]),
        ("PredictionMessage", "hello"),
        ("LabelMessage", {**GOOD_LABEL, "label": [1]}),
        ("AlertMessage", {"alert_id": "a", "model": "m", "model_version": 1, "kind": "Data Drift", "subject": "x",
                          "detector": "ks", "value": 1, "timestamp": 1, "message": "m"}),
        ("RetrainRequestMessage", {"request_id": "r", "model": "m", "reason": "boredom", "timestamp": 1}),
        ("ModelEventMessage", {"event": "exploded", "model": "m", "timestamp": 1}),
        ("MetricsSnapshotMessage", {"model": "m", "model_version": 1, "timestamp": 1,
                                    "cumulative": {"accuracy": True}}),
    ],
)
def test_the_schema_refuses_what_the_contract_refuses(definition, message):
    assert not _validator(definition).is_valid(message)
    record_type = getattr(events, definition[: -len("Message")])
    assert decode_batch(record_type, json.dumps(message)).errors
