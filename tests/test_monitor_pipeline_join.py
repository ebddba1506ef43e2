"""Stage 1's join logic and stage 2's checkpoint format, without a broker."""

from __future__ import annotations

import pytest

from driftline.events import Label, LabeledRecord, Prediction
from driftline.streams.checkpoint import CHUNK_BYTES, CheckpointError, Watermarks, decode_checkpoint, encode_checkpoint
from driftline.streams.join import Joiner, index_of
from driftline.streams.join_store import MemoryJoinStore


def pred(i, model="m", version=1):
    return Prediction(event_id=f"e{i}", model=model, model_version=version, timestamp=1.0,
                      features={"x": float(i)}, prediction=i % 2)


def label(i, model="m", value=1):
    return Label(event_id=f"e{i}", model=model, label=value, timestamp=2.0)


def run(joiner, items, now):
    out = joiner.process(items, now)
    joiner.apply(out.writes)
    return out


def kinds(out):
    return [(key, [item[0] for item in items]) for key, items in out.observations.items()]


def test_join_in_both_orders():
    j = Joiner(lambda m: 60.0)
    out = run(j, [("p", 0, 0, 0, pred(1)), ("l", 0, 0, 0, label(2))], now=0.0)
    assert out.labeled == []
    out = run(j, [("l", 0, 1, 0, label(1)), ("p", 0, 1, 0, pred(2))], now=1.0)
    assert sorted(r["event_id"] for r in out.labeled) == ["e1", "e2"]
    # the prediction that completes a join is observed as a prediction and as a joined pair
    assert kinds(out) == [(("m", "l", 0), ["j"]), (("m", "p", 0), ["p", "j"])]
    r = {x["event_id"]: x for x in out.labeled}["e2"]
    # a labeled record's fields, as the worker decodes them
    assert LabeledRecord.from_dict(r) == LabeledRecord("e2", "m", 1, {"x": 2.0}, 0, 1, r["prediction_timestamp"],
                                                       r["label_timestamp"], None, None)


def test_replay_is_ignored_and_duplicates_are_dead_lettered():
    j = Joiner(lambda m: 60.0)
    run(j, [("p", 0, 5, 3, pred(1)), ("l", 0, 9, 0, label(1))], now=0.0)
    # the same records at the same coordinates: a replay after a crash
    replay = run(j, [("p", 0, 5, 3, pred(1)), ("l", 0, 9, 0, label(1))], now=1.0)
    assert replay.labeled == [] and not replay.observations and replay.dead_letters == []
    # the same event_id at new coordinates: a duplicate the user sent
    dup = run(j, [("l", 0, 10, 0, label(1)), ("p", 0, 11, 0, pred(1))], now=1.0)
    assert dup.labeled == [] and not dup.observations
    assert [d.reason for d in dup.dead_letters] == [
        "event_id: duplicate label: event_id 'e1' was already joined (got 'e1')",
        "event_id: duplicate prediction: event_id 'e1' was already joined with its label (got 'e1')",
    ]
    assert [(d.source_topic, d.partition, d.offset) for d in dup.dead_letters] == [("labels", 0, 10),
                                                                                   ("predictions", 0, 11)]


def test_label_for_other_model_is_dead_lettered_and_prediction_keeps_waiting():
    j = Joiner(lambda m: 60.0)
    run(j, [("p", 0, 0, 0, pred(1))], now=0.0)
    out = run(j, [("l", 0, 0, 0, label(1, model="other"))], now=0.0)
    assert out.labeled == [] and "names model 'other'" in out.dead_letters[0].reason
    assert [r["event_id"] for r in run(j, [("l", 0, 1, 0, label(1))], now=0.0).labeled] == ["e1"]


def test_ttl_expiry_is_counted_in_offset_order_and_state_stays_bounded():
    ttl = {"m": 10.0}
    j = Joiner(lambda m: ttl[m])
    run(j, [("p", 1, i, 0, pred(i)) for i in range(5)], now=0.0)
    run(j, [("l", 1, 0, 0, label(0))], now=1.0)
    ttl["m"] = 1.0  # a shorter TTL later must not let newer predictions expire before older ones
    run(j, [("p", 1, 5, 0, pred(5)), ("l", 1, 1, 0, label(99))], now=2.0)
    assert j.store.count() == 7
    early = j.expire(now=5.0)
    j.apply(early.writes)
    assert not early.observations and len(early.dead_letters) == 1  # only the orphan label (TTL 1s)
    assert "no prediction with event_id 'e99'" in early.dead_letters[0].reason
    out = j.expire(now=10.0)
    j.apply(out.writes)
    assert out.observations[("m", "p", 1)] == [["x", i, 0, 1] for i in (1, 2, 3, 4, 5)]
    assert out.counts["expired"] == 5
    late = run(j, [("l", 1, 7, 0, label(3))], now=10.5)
    assert late.labeled == [] and "late label" in late.dead_letters[0].reason
    # markers are dropped one TTL later: nothing stays behind
    j.apply(j.expire(now=100.0).writes)
    assert j.store.count() == 0 and j.store.pending(1) == 0


def test_rebuild_after_restart_expires_what_the_store_holds():
    j = Joiner(lambda m: 10.0)
    run(j, [("p", 2, i, 0, pred(i)) for i in range(3)], now=0.0)
    store = MemoryJoinStore(index_of)  # a restart: the changelog read back, then the partition opened
    store.apply_changelog(2, list(j.store.items(2)), offset=2)
    restarted = Joiner(lambda m: 10.0, store=store)
    restarted.rebuild([2])
    assert store.pending(2) == 3
    out = restarted.expire(now=11.0)
    assert out.observations[("m", "p", 2)] == [["x", i, 0, 1] for i in range(3)]
    restarted.forget([2])
    assert store.pending(2) == 0


def test_watermarks_and_chunked_checkpoint_round_trip():
    w = Watermarks()
    assert w.admit("j", "l", 3, 10, 2) and not w.admit("j", "l", 3, 10, 1) and w.admit("j", "l", 3, 10, 3)
    assert w.admit("j", "p", 3, 1, 0)  # another source topic: another watermark
    state = bytes(range(256)) * (3 * CHUNK_BYTES // 256 + 7)
    store = dict(encode_checkpoint("churn", state, w, generation=4))
    assert len(store) == 5 and max(len(v) for v in store.values()) <= CHUNK_BYTES
    restored, marks, _ = decode_checkpoint("churn", store)
    assert restored == state and marks.to_dict() == {"jl3": [10, 3], "jp3": [1, 0]}
    del store["churn#4#2"]
    with pytest.raises(CheckpointError, match="chunk churn#4#2 is missing"):
        decode_checkpoint("churn", store)
    assert decode_checkpoint("absent", store) is None
