"""The join-state stores (streams/join_store.py), without a broker: both
behave alike under the join, RocksDB keeps what was persisted (with its
changelog offsets) across a reopen and nothing that was not."""

from __future__ import annotations

import pytest

from driftline.events import Label, Prediction
from driftline.streams.join import Joiner, index_of
from driftline.streams.join_store import MemoryJoinStore, RocksJoinStore, open_join_store


def pred(i, model="m"):
    return Prediction(event_id=f"e{i}", model=model, model_version=1, timestamp=1.0, features={"x": float(i)},
                      prediction=i % 2)


def label(i, model="m"):
    return Label(event_id=f"e{i}", model=model, label=1, timestamp=2.0)


@pytest.fixture(params=["memory", "rocksdb"])
def store(request, tmp_path):
    opened = open_join_store(request.param, tmp_path / "state", index_of, memory_mb=8)
    yield opened
    opened.close()


def _persisted(store, writes, offsets=None):
    seq = store.apply(writes)
    store.persist(seq, offsets or {})
    return seq


def _entry_value(deadline, kind, offset=0, model="m"):
    # a value of the join's format (driftline.streams.join): only what index_of reads
    if kind == "p":
        return b'{"s":"p","p":0,"pc":[%d,0],"d":%r,"r":{"model":"%s"}}' % (offset, deadline, model.encode())
    if kind == "l":
        return b'{"s":"l","p":0,"lc":[%d,0],"d":%r}' % (offset, deadline)
    return b'{"s":"j","p":0,"pc":[0,0],"lc":[0,0],"d":%r}' % deadline


def test_get_put_delete_and_the_expiry_index(store):
    store.open(0)
    _persisted(store, [(0, "a", _entry_value(5.0, "p", 3)), (0, "b", _entry_value(5.0, "l", 1)),
                       (0, "c", _entry_value(2.5, "m")), (0, "d", _entry_value(50.0, "p", 4, model="n")),
                       (1, "z", _entry_value(1.0, "l"))], {0: 4, 1: 0})
    assert store.get(0, "a") == _entry_value(5.0, "p", 3) and store.get(0, "nope") is None
    # markers first, then waiting records in (deadline, kind, offset) order; partitions apart
    assert store.due(0, now=6.0) == [(3.0 if isinstance(store, MemoryJoinStore) else 2.5, "m", 0, 0, "c"),
                                     (5.0, "l", 1, 0, "b"), (5.0, "p", 3, 0, "a")]
    assert store.last_deadlines(0) == {"m": 5.0, "n": 50.0}
    _persisted(store, [(0, "a", None), (0, "d", _entry_value(60.0, "p", 4, model="n"))], {0: 6})
    assert store.get(0, "a") is None
    assert sorted(store.items(0))[0] == ("b", _entry_value(5.0, "l", 1))
    assert store.last_deadlines(0)["n"] == 60.0


def test_the_joiner_gives_the_same_outputs_over_both_stores(tmp_path):
    def scenario(store):
        ttl = {"m": 10.0}
        j = Joiner(lambda m: ttl[m], store=store)
        outputs = []

        def run(out):
            store.persist(j.apply(out.writes), {})
            outputs.append((dict(out.observations), [d.reason for d in out.dead_letters], dict(out.counts)))

        j.rebuild([1])
        run(j.process([("p", 1, i, 0, pred(i)) for i in range(5)], now=0.0))
        run(j.process([("l", 1, 0, 0, label(0))], now=1.0))
        ttl["m"] = 1.0  # a shorter TTL: newer predictions still expire after older ones
        run(j.process([("p", 1, 5, 0, pred(5)), ("l", 1, 1, 0, label(99))], now=2.0))
        for now in (5.0, 10.0, 10.5, 100.0):
            run(j.expire(now=now, partitions=[1]))
        run(j.process([("l", 1, 7, 0, label(3))], now=100.5))
        return outputs, len(list(store.items(1)))

    memory = scenario(MemoryJoinStore(index_of))
    rocks_store = RocksJoinStore(tmp_path / "rocks", index_of, memory_mb=8)
    rocks = scenario(rocks_store)
    rocks_store.close()
    assert rocks == memory
    expired = memory[0][4][0][("m", "p", 1)]
    assert expired == [["x", i, 0, 1] for i in (1, 2, 3, 4, 5)]
    assert memory[1] == 1  # only the late label waits


def test_rocksdb_keeps_what_was_persisted_and_its_offsets_across_a_reopen(tmp_path):
    store = RocksJoinStore(tmp_path / "s", index_of, memory_mb=8)
    _persisted(store, [(0, "a", _entry_value(5.0, "l")), (2, "b", _entry_value(7.0, "p"))], {0: 10, 2: 3})
    store.apply([(0, "c", _entry_value(6.0, "l"))])  # not in the changelog yet: never on disk
    assert store.get(0, "c") is not None  # (but visible)
    store.close()
    again = RocksJoinStore(tmp_path / "s", index_of, memory_mb=8)
    assert (again.persisted_offset(0), again.persisted_offset(2), again.persisted_offset(1)) == (10, 3, None)
    assert again.get(0, "a") == _entry_value(5.0, "l") and again.get(0, "c") is None
    assert [e[4] for e in again.due(2, now=8.0)] == ["b"]  # the expiry index came back with it
    # the changelog's tail, read at recovery: values, index and offset in one batch
    again.apply_changelog(0, [("c", _entry_value(6.0, "l")), ("a", None)], offset=12)
    assert again.persisted_offset(0) == 12 and again.replayed == 2
    assert [e[4] for e in again.due(0, now=8.0)] == ["c"]
    again.discard(0)
    assert again.persisted_offset(0) is None and again.get(0, "c") is None
    again.close()


def test_memory_store_indexes_a_recovered_partition_when_it_is_opened():
    store = MemoryJoinStore(index_of)
    store.apply_changelog(3, [("a", _entry_value(1.0, "p")), ("b", _entry_value(2.0, "m"))], offset=1)
    assert store.due(3, now=10.0) == [] and store.replayed == 2  # not served here yet
    store.open(3)
    assert [e[4] for e in store.due(3, now=10.0)] == ["b", "a"]
    assert store.persisted_offset(3) is None  # the whole changelog is read after a restart


def test_unknown_store_kind():
    with pytest.raises(ValueError, match="rocksdb or memory"):
        open_join_store("redis", "/tmp/unused", index_of)
