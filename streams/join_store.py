"""Where stage 1's join state lives: one interface, two stores.

The join state (``event_id -> bytes``, see :mod:`driftline.streams.join`) is kept per
*changelog partition* (the source partition of the records that made it),
with an **expiry index**: every entry's deadline, so that a label-TTL sweep
finds what is due without walking the state.

:class:`MemoryJoinStore`
    dicts and heaps in memory, rebuilt from the whole changelog after a
    restart (memory grows with the label TTL's worth of traffic);
:class:`RocksJoinStore`
    one RocksDB database per partition (``rocksdict``): the state, the expiry
    index (kept sorted by RocksDB itself, nothing of it in memory) and the
    changelog offset the database holds, written in one atomic batch. Memory
    is bounded by one setting (a block cache shared by all partitions, which
    the write buffers are charged to). After a restart only the changelog's
    tail, past the stored offset, is read again.

Writes follow the monitor's order (outputs, then state, see
:mod:`driftline.streams.join`): :meth:`JoinStore.apply` makes a batch of changes
visible at once; :meth:`JoinStore.persist` is called when the changelog has
them, with their changelog offsets. The RocksDB store keeps changes in
memory until then, so its files never hold a change the changelog lacks
(after ``kill -9`` the local state is a prefix of the changelog, and the tail
recovery completes it).

The stores know one thing about the values: ``index_of(raw)`` gives a value's
place in the expiry index, ``(deadline, kind, offset, index, model)`` with
``kind`` ``"p"``/``"l"`` (a waiting record) or ``"m"`` (a marker that only
waits to be deleted), or ``None`` (never expires). :func:`driftline.streams.join.index_of`
is the join's.

Examples
--------
>>> import tempfile
>>> def index_of(raw):  # values here: b"<deadline>"
...     return (float(raw), "l", 0, 0, None)
>>> store = RocksJoinStore(tempfile.mkdtemp(), index_of, memory_mb=8)
>>> store.open(0)
>>> seq = store.apply([(0, "a", b"5.0"), (0, "b", b"9.0")])
>>> store.get(0, "a"), store.persisted_offset(0)
(b'5.0', None)
>>> store.persist(seq, {0: 41})  # the changelog has them, up to offset 41
>>> [entry[4] for entry in store.due(0, now=6.0)], store.persisted_offset(0)
(['a'], 41)
>>> store.close()
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import shutil
import struct
from collections import defaultdict, deque
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

import orjson

__all__ = ["JoinStore", "MemoryJoinStore", "RocksJoinStore", "Entry", "IndexOf", "Write", "open_join_store"]

log = logging.getLogger("driftline.monitor")

#: an expiry index entry: (deadline, kind "p"|"l"|"m", offset, index, key)
Entry = tuple[float, str, int, int, str]
#: raw value -> (deadline, kind, offset, index, model of a waiting prediction) or None
IndexOf = Callable[[bytes], "tuple[float, str, int, int, str | None] | None"]
#: (partition, key, value or None for a deletion), optionally followed by the
#: index entries (``index_of``'s answer) of the value and of the value it
#: replaces, when the writer knows them: the store then parses nothing
Write = tuple


class JoinStore:
    """The interface of a join-state store (see the module's docstring).

    Keys are ``str``; values ``bytes``; every method takes the partition.
    """

    #: changelog records applied by :meth:`apply_changelog` (recovery) since start
    replayed: int = 0
    #: the ``--state`` value that opens this store
    kind: str = ""

    def get(self, partition: int, key: str) -> bytes | None:
        """The value of ``key`` (pending changes included), or None."""
        raise NotImplementedError

    def apply(self, writes: Iterable[Write]) -> int:
        """Make ``writes`` visible; returns their sequence number for :meth:`persist`.

        A write is ``(partition, key, value)``, or ``(partition, key, value,
        entry, old_entry)`` with the index entries of the value and of the
        value it replaces (None: none), as :func:`driftline.streams.join.index_of` or
        the join (which has them at hand) gives them."""
        raise NotImplementedError

    def persist(self, seq: int, offsets: Mapping[int, int]) -> None:
        """The changelog holds the writes up to ``seq``, up to ``offsets``
        (partition -> last changelog offset written)."""

    def apply_changelog(self, partition: int, records: Iterable[tuple[str, bytes | None]], offset: int) -> None:
        """Apply changelog records (recovery) read up to ``offset``."""
        raise NotImplementedError

    def persisted_offset(self, partition: int) -> int | None:
        """The last changelog offset this store holds (None: read it all)."""
        return None

    def open(self, partition: int) -> None:
        """Start serving ``partition`` (after its recovery): index it."""

    def close_partition(self, partition: int) -> None:
        """Stop serving ``partition`` (revoked)."""

    def discard(self, partition: int) -> None:
        """Delete the local state of ``partition`` (rebuilt from the changelog)."""

    def partitions(self) -> set[int]:
        """The partitions :meth:`due` may have entries for."""
        raise NotImplementedError

    def due(self, partition: int, now: float, limit: int = 10_000) -> list[Entry]:
        """Up to ``limit`` index entries with a deadline ``<= now``, markers
        first, then waiting records in (deadline, kind, offset, index) order.
        An entry may be stale (its key changed since): check the value."""
        raise NotImplementedError

    def last_deadlines(self, partition: int) -> dict[str, float]:
        """model -> the latest deadline of its waiting predictions in ``partition``."""
        raise NotImplementedError

    def count(self) -> int:
        """Entries held (an estimate for RocksDB)."""
        raise NotImplementedError

    def items(self, partition: int) -> Iterator[tuple[str, bytes]]:
        """Every ``(key, value)`` of ``partition`` (tests, small stores)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release files and memory."""


class MemoryJoinStore(JoinStore):
    """The join state in dicts, its expiry index in heaps (per partition).

    Parameters
    ----------
    index_of
        A value's place in the expiry index (see the module's docstring).

    Examples
    --------
    >>> store = MemoryJoinStore(lambda raw: (float(raw), "l", 0, 0, None))
    >>> store.open(0)
    >>> store.apply([(0, "a", b"5.0"), (0, "b", b"9.0")])
    1
    >>> [e[4] for e in store.due(0, 6.0)], store.get(0, "b"), store.count()
    (['a'], b'9.0', 2)
    """

    kind = "memory"

    def __init__(self, index_of: IndexOf):
        self.index_of = index_of
        self._data: dict[int, dict[str, bytes]] = defaultdict(dict)
        # partition -> heap of (deadline, kind, offset, index, key); lazy deletion
        self._heaps: dict[int, list] = {}
        # Markers only wait to be deleted: keys in one-second buckets
        # {ceil(deadline): [key, ...]} plus a heap of bucket deadlines -- a
        # list slot per marker instead of a 5-tuple
        self._marks: dict[int, dict[int, list[str]]] = {}
        self._mark_heaps: dict[int, list[int]] = {}
        self._seq = 0

    def get(self, partition: int, key: str) -> bytes | None:
        data = self._data.get(partition)
        return None if data is None else data.get(key)

    def apply(self, writes: Iterable[Write]) -> int:
        index_of, heaps = self.index_of, self._heaps
        for write in writes:
            partition, key, value = write[:3]
            data = self._data[partition]
            if value is None:
                data.pop(key, None)
                continue
            data[key] = value
            if partition not in heaps:
                self._new_index(partition)
            # (the old entry is left in the heap: lazy deletion, see due())
            self._index(partition, key, write[3] if len(write) > 3 else index_of(value))
        self._seq += 1
        return self._seq

    def apply_changelog(self, partition: int, records: Iterable[tuple[str, bytes | None]], offset: int) -> None:
        data = self._data[partition]
        indexed = partition in self._heaps  # else indexed when opened (after its recovery)
        for key, value in records:
            self.replayed += 1
            if value is None:
                data.pop(key, None)
                continue
            data[key] = value
            if indexed:
                self._index(partition, key, self.index_of(value))

    def open(self, partition: int) -> None:
        if partition in self._heaps:
            return
        self._new_index(partition)
        index_of = self.index_of
        for key, value in self._data[partition].items():
            self._index(partition, key, index_of(value), push=False)
        heapq.heapify(self._heaps[partition])

    def _new_index(self, partition: int) -> None:
        self._heaps[partition] = []
        self._marks[partition] = {}
        self._mark_heaps[partition] = []

    def close_partition(self, partition: int) -> None:
        for index in (self._heaps, self._marks, self._mark_heaps):
            index.pop(partition, None)

    def drop(self, partition: int) -> None:
        """Forget a partition's state (faust's memory store does so with the
        partitions not assigned after a recovery)."""
        self.close_partition(partition)
        self._data.pop(partition, None)

    def discard(self, partition: int) -> None:
        self.drop(partition)

    def partitions(self) -> set[int]:
        """The partitions indexed for expiry."""
        return set(self._heaps)

    def _index(self, partition: int, key: str, entry, push: bool = True) -> None:
        if entry is None:
            return
        deadline, kind, offset, index, _model = entry
        if kind != "m":
            item = (deadline, kind, offset, index, key)
            if push:
                heapq.heappush(self._heaps[partition], item)
            else:
                self._heaps[partition].append(item)
            return
        bucket = -int(-deadline // 1)  # ceil: a marker never leaves before its deadline
        buckets = self._marks[partition]
        keys = buckets.get(bucket)
        if keys is None:
            keys = buckets[bucket] = []
            heapq.heappush(self._mark_heaps[partition], bucket)
        keys.append(key)

    def due(self, partition: int, now: float, limit: int = 10_000) -> list[Entry]:
        found: list[Entry] = []
        mark_heap, buckets = self._mark_heaps.get(partition), self._marks.get(partition)
        while mark_heap and mark_heap[0] <= now and len(found) < limit:
            bucket = heapq.heappop(mark_heap)
            found.extend((float(bucket), "m", 0, 0, key) for key in buckets.pop(bucket, ()))
        heap = self._heaps.get(partition)
        while heap and heap[0][0] <= now and len(found) < limit:
            found.append(heapq.heappop(heap))
        return found

    def last_deadlines(self, partition: int) -> dict[str, float]:
        last: dict[str, float] = {}
        index_of = self.index_of
        for value in self._data.get(partition, {}).values():
            entry = index_of(value)
            if entry is not None and entry[4] is not None:
                last[entry[4]] = max(last.get(entry[4], 0.0), entry[0])
        return last

    def count(self) -> int:
        return sum(map(len, self._data.values()))

    def pending(self, partition: int) -> int:
        """Entries indexed for expiry in ``partition``."""
        return len(self._heaps.get(partition, ())) + sum(map(len, self._marks.get(partition, {}).values()))

    def items(self, partition: int) -> Iterator[tuple[str, bytes]]:
        return iter(list(self._data.get(partition, {}).items()))


# RocksDB layout, per partition database: a state under its changelog key
# (the JSON string, b'"event-id"'); expiry index entries under
# b"\0w" (waiting) / b"\0m" (markers) + deadline + kind + offset + index +
# key, sorted by RocksDB; the changelog offset under b"\1offset".
_WAITING, _MARKERS, _OFFSET_KEY = b"\x00w", b"\x00m", b"\x01offset"
_ENTRY = struct.Struct(">dcQI")


def _raw_key(key: str) -> bytes:
    # an exact-size copy: orjson's bytes keep a ~4 KB buffer whatever their
    # length, and a batch holds thousands of keys (83 MB for 20,000)
    return bytes(memoryview(orjson.dumps(key)))


def _index_key(key: bytes, entry) -> tuple[bytes, bytes]:
    deadline, kind, offset, index, model = entry
    prefix = _MARKERS if kind == "m" else _WAITING
    value = model.encode() if model else b""
    return prefix + _ENTRY.pack(deadline, kind.encode(), offset, index) + key, value


class RocksJoinStore(JoinStore):
    """The join state and its expiry index in RocksDB, one database per partition.

    Parameters
    ----------
    path
        Directory of the databases (``p<partition>`` in it).
    index_of
        A value's place in the expiry index (see the module's docstring).
    memory_mb
        RocksDB's memory for all partitions: a shared block cache of this
        size, the write buffers (memtables) charged to it.

    Examples
    --------
    >>> import tempfile
    >>> path = tempfile.mkdtemp()
    >>> store = RocksJoinStore(path, lambda raw: None, memory_mb=8)
    >>> store.persist(store.apply([(1, "k", b"v")]), {1: 7})
    >>> store.close()
    >>> again = RocksJoinStore(path, lambda raw: None, memory_mb=8)
    >>> again.get(1, "k"), again.persisted_offset(1)
    (b'v', 7)
    >>> again.close()
    """

    kind = "rocksdb"

    def __init__(self, path: str | Path, index_of: IndexOf, memory_mb: int = 64):
        import rocksdict

        self._rocksdict = rocksdict
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.index_of = index_of
        self.memory_mb = memory_mb
        budget = memory_mb * 1024 * 1024
        self._cache = rocksdict.Cache(budget)
        # memtables charged to the cache: one limit for both
        self._write_buffers = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
            budget // 2, False, self._cache)
        self._dbs: dict = {}
        # changes not yet in the changelog: key -> (seq, partition, value),
        # and the batches in order; bounded by the writes in flight
        self._pending: dict[str, tuple[int, int, bytes | None]] = {}
        self._batches: deque[tuple[int, list[Write]]] = deque()
        self._seq = 0

    # -- databases ------------------------------------------------------------------
    def _options(self):
        rocksdict = self._rocksdict
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_max_open_files(256)
        options.set_write_buffer_manager(self._write_buffers)
        options.set_write_buffer_size(max(1, self.memory_mb // 8) * 1024 * 1024)
        options.set_max_write_buffer_number(2)
        table = rocksdict.BlockBasedOptions()
        table.set_block_cache(self._cache)
        table.set_cache_index_and_filter_blocks(True)  # their memory counts in the cache too
        table.set_bloom_filter(10, False)
        options.set_block_based_table_factory(table)
        return options

    def _db(self, partition: int):
        db = self._dbs.get(partition)
        if db is None:
            self.path.mkdir(parents=True, exist_ok=True)  # (a reset may have removed the data directory)
            db = self._dbs[partition] = self._rocksdict.Rdict(
                str(self.path / f"p{partition}"), options=self._options())
        return db

    def open(self, partition: int) -> None:
        self._db(partition)

    def close_partition(self, partition: int) -> None:
        # pending changes of the partition stay until persisted (its changelog sends are in flight)
        db = self._dbs.pop(partition, None)
        if db is not None:
            db.close()

    def discard(self, partition: int) -> None:
        self.close_partition(partition)
        for key in [k for k, (_s, p, _v) in self._pending.items() if p == partition]:
            del self._pending[key]
        shutil.rmtree(self.path / f"p{partition}", ignore_errors=True)

    def partitions(self) -> set[int]:
        """The partitions whose database is open."""
        return set(self._dbs)

    def close(self) -> None:
        for partition in list(self._dbs):
            self.close_partition(partition)

    # -- state ------------------------------------------------------------------------
    def get(self, partition: int, key: str) -> bytes | None:
        pending = self._pending.get(key)
        if pending is not None:
            return pending[2]
        return self._db(partition).get(orjson.dumps(key))  # (a key that is not kept: no copy)

    def apply(self, writes: Iterable[Write]) -> int:
        self._seq += 1
        seq, pending = self._seq, self._pending
        batch = list(writes)
        for write in batch:
            pending[write[1]] = (seq, write[0], write[2])
        self._batches.append((seq, batch))
        return seq

    def persist(self, seq: int, offsets: Mapping[int, int]) -> None:
        batches: dict[int, list[tuple]] = defaultdict(list)
        while self._batches and self._batches[0][0] <= seq:
            _seq, writes = self._batches.popleft()
            for write in writes:
                batches[write[0]].append((_raw_key(write[1]), *write[2:]))
        for partition in set(batches) | set(offsets):
            self._write(partition, batches.get(partition, ()), offsets.get(partition))
        pending = self._pending
        for key in [k for k, (s, _p, _v) in pending.items() if s <= seq]:
            del pending[key]

    def apply_changelog(self, partition: int, records: Iterable[tuple[str, bytes | None]], offset: int) -> None:
        writes = [(_raw_key(key), value) for key, value in records]
        self.replayed += len(writes)
        self._write(partition, writes, offset)

    def _write(self, partition: int, writes: Iterable[tuple], offset: int | None) -> None:
        """One atomic batch: the values, their index entries and the offset.
        ``writes``: ``(raw key, value[, entry, old entry])``."""
        db = self._db(partition)
        batch = self._rocksdict.WriteBatch(raw_mode=True)
        index_of = self.index_of
        latest: dict[bytes, bytes | None] = {}  # this batch's values, for a key written twice
        for write in writes:
            raw_key, value = write[0], write[1]
            if len(write) > 2:  # the writer knows both entries (in order: an earlier
                entry, old_entry = write[2], write[3]  # batch's value is persisted first)
            else:
                old = latest[raw_key] if raw_key in latest else db.get(raw_key)
                old_entry = None if old is None else index_of(old)
                entry = None if value is None else index_of(value)
                latest[raw_key] = value
            if old_entry is not None:
                batch.delete(_index_key(raw_key, old_entry)[0])
            if value is None:
                batch.delete(raw_key)
                continue
            batch.put(raw_key, value)
            if entry is not None:
                batch.put(*_index_key(raw_key, entry))
        if offset is not None:
            batch.put(_OFFSET_KEY, str(offset).encode())
        db.write(batch)

    def persisted_offset(self, partition: int) -> int | None:
        raw = self._db(partition).get(_OFFSET_KEY)
        return None if raw is None else int(raw)

    # -- expiry -------------------------------------------------------------------------
    def _scan(self, partition: int, prefix: bytes, until: float | None = None) -> Iterator[tuple[bytes, bytes]]:
        iterator = self._db(partition).iter()
        iterator.seek(prefix)
        while iterator.valid():
            raw = iterator.key()
            if not raw.startswith(prefix):
                return
            if until is not None and _ENTRY.unpack_from(raw, 2)[0] > until:
                return
            yield raw, iterator.value()
            iterator.next()

    def due(self, partition: int, now: float, limit: int = 10_000) -> list[Entry]:
        found: list[Entry] = []
        head = 2 + _ENTRY.size
        for prefix in (_MARKERS, _WAITING):
            for raw, _value in self._scan(partition, prefix, now):
                if len(found) >= limit:
                    return found
                deadline, kind, offset, index = _ENTRY.unpack_from(raw, 2)
                found.append((deadline, kind.decode(), offset, index, orjson.loads(raw[head:])))
        return found

    def last_deadlines(self, partition: int) -> dict[str, float]:
        last: dict[str, float] = {}
        for raw, model in self._scan(partition, _WAITING):
            if model:  # a waiting prediction: its model; deadlines ascend
                last[model.decode()] = _ENTRY.unpack_from(raw, 2)[0]
        return last

    def count(self) -> int:
        # estimate: each entry is a value and an index key (offset keys aside)
        return sum(db.property_int_value("rocksdb.estimate-num-keys") or 0 for db in self._dbs.values()) // 2

    def items(self, partition: int) -> Iterator[tuple[str, bytes]]:
        for raw, value in self._db(partition).items():
            if raw[:1] == b'"':
                yield orjson.loads(raw), value


def open_join_store(kind: str, path: str | Path, index_of: IndexOf, memory_mb: int = 64) -> JoinStore:
    """The store for ``--state`` (``"rocksdb"`` or ``"memory"``)."""
    if kind == "rocksdb":
        return RocksJoinStore(path, index_of, memory_mb)
    if kind == "memory":
        return MemoryJoinStore(index_of)
    raise ValueError(f"unknown join state store {kind!r} (rocksdb or memory)")


def faust_store_class():
    """faust's Store API over a :class:`JoinStore`: what faust's table
    recovery needs (changelog batches in, the offset to resume from, the
    rebalance hooks); the monitor itself reads and writes the JoinStore.

    Why not faust's own ``rocksdb://`` store: it writes one key at a time
    inside an event (stage 1 writes whole batches, outside events too),
    records the changelog offset per message callback (here per delivered
    batch, atomically with the batch), and opens a 2 GB block cache per
    partition (here one bounded cache for all).
    """
    from faust.stores import base

    class FaustJoinStore(base.Store):
        def __init__(self, url, app, table, *, join_store: JoinStore, **kwargs):
            super().__init__(url, app, table, **kwargs)
            self.join_store = join_store
            self.data: dict = {}  # faust's generic mapping view: unused, the JoinStore holds the state

        def persisted_offset(self, tp) -> int | None:
            return self.join_store.persisted_offset(tp.partition)

        def set_persisted_offset(self, tp, offset: int) -> None:
            pass  # written by the JoinStore with the state it stands for

        def apply_changelog_batch(self, batch, to_key, to_value) -> None:
            records: dict[int, list[tuple[str, bytes | None]]] = defaultdict(list)
            offsets: dict[int, int] = {}
            for event in batch:
                message = event.message
                records[message.partition].append((orjson.loads(message.key), message.value))
                offsets[message.partition] = max(message.offset, offsets.get(message.partition, -1))
            for partition, items in records.items():
                self.join_store.apply_changelog(partition, items, offsets[partition])

        async def on_rebalance(self, assigned, revoked, newly_assigned, generation_id: int = 0) -> None:
            topic = self.table.changelog_topic.get_topic_name()
            mine = [tp for tp in newly_assigned if tp.topic == topic]
            if mine:
                await self._discard_ahead(mine)

        async def _discard_ahead(self, tps) -> None:
            """A local store that holds more than the changelog (emptied or
            created again, e.g. a broker that lost its data) is not trusted:
            deleted, the partition is rebuilt from what the changelog has."""
            stored = {tp: self.join_store.persisted_offset(tp.partition) for tp in tps}
            stored = {tp: offset for tp, offset in stored.items() if offset is not None}
            if not stored:
                return
            from aiokafka.errors import KafkaError

            try:
                ends = await self.app.consumer.highwaters(*stored)
            except (KafkaError, OSError, asyncio.TimeoutError) as error:
                # faust's own consistency check (after this) still refuses a store ahead of its changelog
                log.warning("join state: cannot read the changelog's end offsets (%s); local state kept", error)
                return
            for tp, offset in stored.items():
                end = ends.get(tp)
                if end is not None and offset >= end:
                    log.warning("join state of partition %d discarded: the local store holds changelog offsets "
                                "up to %d but %s ends at %d (the changelog was emptied or created again); "
                                "rebuilding it from the changelog", tp.partition, offset, tp.topic, end)
                    self.join_store.discard(tp.partition)

        async def on_recovery_completed(self, active_tps, standby_tps) -> None:
            store = self.join_store
            if isinstance(store, MemoryJoinStore):
                # as faust's memory store: keep only the partitions served here
                active = {tp.partition for tp in active_tps}
                for partition in set(store._data) - active:
                    store.drop(partition)

        def reset_state(self) -> None:
            for partition in list(self.join_store.partitions()):
                self.join_store.discard(partition)

        async def backup_partition(self, tp, flush: bool = True, purge: bool = False, keep: int = 1) -> None:
            raise NotImplementedError("the changelog is the join state's backup")

        def restore_backup(self, tp, latest: bool = True, backup_id: int = 0) -> None:
            raise NotImplementedError("the changelog is the join state's backup")

    return FaustJoinStore
