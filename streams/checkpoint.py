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
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterator, Mapping

from driftline.errors import DriftlineError

__all__ = ["Watermarks", "CheckpointError", "encode_checkpoint", "decode_checkpoint", "chunk_keys", "CHUNK_BYTES"]

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
