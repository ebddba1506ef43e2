"""Stage 2 checkpoints: a model's monitor state plus the watermarks it covers.

A checkpoint is what makes "no loss, no double counting" hold across a
kill -9: the stage-2 agent writes, per model, the bytes of
``ModelMonitor.to_state()`` together with the highest applied source
coordinate of every (kind, source topic, partition) — the *watermarks* —
into a changelog-backed faust table, and only then acknowledges the
observation messages the checkpoint covers. After a restart the table comes
back from its changelog, the uncommitted observations are delivered again,
and every observation whose coordinate is at or below the watermark is
skipped: it is already inside the restored state.

A checkpoint is stored as a small header under the model's name and the
state in chunks of at most :data:`CHUNK_BYTES` under ``<model>#<gen>#<i>``, so
that no changelog message comes near Kafka's 1 MiB limit. Chunks of a new
generation are written before its header; the header names the generation
and the SHA-256 of the state, so a torn write is detected, never loaded.

:class:`ModelCheckpoints` writes them to the ``models`` table and
acknowledges what they cover; a model's state there is its re-join guards
and its monitor's state, framed by :func:`pack_model_state`.

Examples
--------
>>> w = Watermarks()
>>> w.admit("p", "p", 0, 5, 0), w.admit("p", "p", 0, 5, 0), w.admit("p", "p", 0, 4, 9)
(True, False, False)
>>> store = {}
>>> for key, value in encode_checkpoint("churn", b"state", w, generation=1):
...     store[key] = value
>>> decode_checkpoint("churn", store)[0], decode_checkpoint("churn", store)[1].to_dict()
(b'state', {'pp0': [5, 0]})
>>> unpack_model_state(pack_model_state({"e1": [0, 3, 4]}, b"monitor"))
({'e1': [0, 3, 4]}, b'monitor')
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Iterator, Mapping, NamedTuple

import numpy as np
import orjson

from driftline.errors import DriftlineError

__all__ = ["Watermarks", "CheckpointError", "encode_checkpoint", "decode_checkpoint", "chunk_keys", "CHUNK_BYTES",
           "pack_model_state", "unpack_model_state", "RestoredCheckpoint", "ModelCheckpoints"]

#: Largest state chunk per changelog message (Kafka's default limit is 1 MiB).
CHUNK_BYTES = 512 * 1024
_FORMAT = 1


class CheckpointError(DriftlineError):
    """A stored checkpoint is malformed or incomplete."""


class Watermarks:
    """Highest applied ``(offset, index)`` per (kind, source topic, partition).

    Stage 1 emits observations of one (kind, source partition) in offset
    order, so anything at or below the watermark has been applied before.
    """

    __slots__ = ("_marks",)

    def __init__(self, marks: Mapping[str, list[int]] | None = None):
        self._marks: dict[str, tuple[int, int]] = {k: (int(v[0]), int(v[1])) for k, v in (marks or {}).items()}

    def admit(self, kind: str, topic: str, partition: int, offset: int, index: int) -> bool:
        """True (and advance) when the coordinate is new; False for a replay."""
        key = f"{kind}{topic}{partition}"
        coord = (offset, index)
        mark = self._marks.get(key)
        if mark is not None and coord <= mark:
            return False
        self._marks[key] = coord
        return True

    def admit_block(self, kind: str, topic: str, partition: int, offsets: np.ndarray,
                    indexes: np.ndarray) -> np.ndarray:
        """Positions of the new coordinates of a block, advancing the mark:
        :meth:`admit` for each, in one pass when they are in order (as stage 1 sends them).

        >>> marks = Watermarks({"pp0": [5, 1]})
        >>> marks.admit_block("p", "p", 0, np.array([5, 5, 6]), np.array([1, 2, 0])).tolist()
        [1, 2]
        >>> marks.to_dict()
        {'pp0': [6, 0]}
        """
        n = offsets.size
        if n > 1 and not np.all((offsets[1:] > offsets[:-1]) | ((offsets[1:] == offsets[:-1])
                                                               & (indexes[1:] > indexes[:-1]))):
            return np.array([i for i, (o, x) in enumerate(zip(offsets.tolist(), indexes.tolist()))
                             if self.admit(kind, topic, partition, o, x)], dtype=np.intp)
        if n == 0:
            return np.empty(0, dtype=np.intp)
        key = f"{kind}{topic}{partition}"
        mark = self._marks.get(key)
        if mark is None:
            admitted = np.arange(n)
        else:
            admitted = np.flatnonzero((offsets > mark[0]) | ((offsets == mark[0]) & (indexes > mark[1])))
        if admitted.size:
            self._marks[key] = (int(offsets[-1]), int(indexes[-1]))
        return admitted

    def to_dict(self) -> dict[str, list[int]]:
        return {k: list(v) for k, v in sorted(self._marks.items())}

    def __len__(self) -> int:
        return len(self._marks)


def chunk_keys(model: str, generation: int, count: int) -> list[str]:
    return [f"{model}#{generation}#{i}" for i in range(count)]


def encode_checkpoint(
    model: str, state: bytes, watermarks: Watermarks, generation: int, extra: dict[str, Any] | None = None
) -> Iterator[tuple[str, bytes]]:
    """``(key, value)`` pairs to write, chunks first, header last."""
    chunks = [state[i : i + CHUNK_BYTES] for i in range(0, len(state), CHUNK_BYTES)] or [b""]
    for key, chunk in zip(chunk_keys(model, generation, len(chunks)), chunks):
        yield key, chunk
    header = {
        "format": _FORMAT,
        "model": model,
        "generation": generation,
        "chunks": len(chunks),
        "size": len(state),
        "sha256": hashlib.sha256(state).hexdigest(),
        "watermarks": watermarks.to_dict(),
        "extra": extra or {},
    }
    yield model, json.dumps(header, separators=(",", ":")).encode()


def decode_checkpoint(model: str, store: Mapping[str, bytes]) -> tuple[bytes, Watermarks, dict[str, Any]] | None:
    """The newest checkpoint of ``model`` in ``store``, or ``None``."""
    raw = store.get(model)
    if raw is None:
        return None
    try:
        header = json.loads(raw)
        if header.get("format") != _FORMAT or header.get("model") != model:
            raise ValueError(f"unexpected header {str(header)[:80]}")
        parts = []
        for key in chunk_keys(model, int(header["generation"]), int(header["chunks"])):
            chunk = store.get(key)
            if chunk is None:
                raise ValueError(f"chunk {key} is missing")
            parts.append(bytes(chunk))
        state = b"".join(parts)
        if len(state) != header["size"] or hashlib.sha256(state).hexdigest() != header["sha256"]:
            raise ValueError("state does not match its checksum")
        return state, Watermarks(header["watermarks"]), header.get("extra") or {}
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"checkpoint of model {model!r} is unusable: {error}") from None


def pack_model_state(recent: Mapping[str, list[int]], monitor_state: bytes) -> bytes:
    """A model's checkpointed state: its re-join guards (``event_id`` ->
    source partition, prediction offset, label offset), then its monitor's state."""
    guards = orjson.dumps(recent)
    return len(guards).to_bytes(4, "big") + guards + monitor_state


def unpack_model_state(state: bytes) -> tuple[dict[str, list[int]], bytes]:
    """``(re-join guards, monitor state)`` from :func:`pack_model_state`'s bytes."""
    size = int.from_bytes(state[:4], "big")
    return orjson.loads(state[4:4 + size]), state[4 + size:]


class RestoredCheckpoint(NamedTuple):
    """A model's newest checkpoint, as read from the ``models`` table."""

    monitor_state: bytes
    watermarks: Watermarks
    recent: dict[str, list[int]]
    generation: int
    chunks: int


class ModelCheckpoints:
    """Stage 2's checkpoints in the ``models`` table, and the observation
    messages waiting for one before they are acknowledged.

    Parameters
    ----------
    table
        The ``models`` table (a table whose ``write(partition, key, value)``
        names the changelog partition).
    models
        Stage 2's entries by model (``dirty``, ``recent``, ``lows``,
        ``monitor``, ``watermarks``, ``partition``, ``generation``, ``chunks``);
        read at each checkpoint.
    every_events, every_s
        A checkpoint is due after this many observation messages or seconds.
    cpu
        Stage 2's CPU-seconds counter.
    counts
        The monitor's counts (``checkpoints``).
    """

    def __init__(self, table, models: dict, every_events: int, every_s: float, cpu, counts: dict[str, int]):
        self.table = table
        self.models = models
        self.every_events = every_events
        self.every_s = every_s
        self._cpu = cpu
        self._counts = counts
        #: the ``models`` agent's manual-acknowledgement stream, once it runs
        self.stream = None
        self._pending_acks: list = []
        self._since_checkpoint = 0
        self.last_checkpoint = time.monotonic()

    def cover(self, event) -> bool:
        """``event`` waits for the next checkpoint; True when one is due."""
        self._pending_acks.append(event)
        self._since_checkpoint += 1
        return self._since_checkpoint >= self.every_events or self.overdue()

    def overdue(self) -> bool:
        """True when the last checkpoint is ``every_s`` old."""
        return time.monotonic() - self.last_checkpoint >= self.every_s

    def restore(self, model: str) -> RestoredCheckpoint | None:
        """``model``'s newest checkpoint, or ``None``; raises
        :class:`CheckpointError` (or ``ValueError``) for an unusable one."""
        found = decode_checkpoint(model, self.table)
        if found is None:
            return None
        state, watermarks, _extra = found
        header = json.loads(self.table[model])
        recent, monitor_state = unpack_model_state(state)
        return RestoredCheckpoint(monitor_state, watermarks, recent, header["generation"], header["chunks"])

    async def checkpoint(self) -> None:
        """Write every changed model's state and watermarks, then acknowledge
        the observation messages they cover."""
        cpu = time.thread_time()
        self.last_checkpoint = time.monotonic()
        self._since_checkpoint = 0
        write = self.table.write
        for model, entry in self.models.items():
            if not entry.dirty:
                continue
            lows = entry.lows
            if entry.recent and lows:
                # pairs whose inputs stage 1 has committed cannot be re-joined
                for key in [k for k, (part, po, lo) in entry.recent.items()
                            if part in lows and po < lows[part][0] and lo < lows[part][1]]:
                    del entry.recent[key]
            state = pack_model_state(entry.recent, entry.monitor.to_state())
            old_generation, old_chunks = entry.generation, entry.chunks
            entry.generation += 1
            pairs = list(encode_checkpoint(model, state, entry.watermarks, entry.generation))
            entry.chunks = len(pairs) - 1
            for key, value in pairs:
                write(entry.partition, key, value)
            for key in chunk_keys(model, old_generation, old_chunks):
                write(entry.partition, key, None)
            entry.dirty = False
        self._cpu.inc(time.thread_time() - cpu)
        pending, self._pending_acks = self._pending_acks, []
        stream = self.stream
        for event in pending:
            if stream is not None:
                await stream.ack(event)
            else:  # pragma: no cover
                event.ack()
        self._counts["checkpoints"] += 1

    def forget(self, partitions: set[int]) -> None:
        """Observation partitions revoked: their messages are no longer ours to acknowledge."""
        self._pending_acks = [e for e in self._pending_acks if e.message.partition not in partitions]
