"""Stage 1 of the monitor: join predictions with labels by ``event_id``.

:class:`Joiner` is the join's logic without Kafka: it takes decoded records
with their *source coordinates* — ``(topic kind, partition, offset, index)``,
``index`` being the position inside a bulk message — and returns what to
publish plus the state changes to write. The faust application's stage 1
(:mod:`driftline.streams.stage1`) feeds it batches, publishes the outputs, waits until the
broker has them, and only then writes the state changes (to a changelog-
backed faust table) and acknowledges the input. That order is what makes a
crash safe: a state change is never durable before the output it stands for,
so replaying the input after a crash either finds the state untouched (and
produces the same outputs again, with the same coordinates, which stage 2
recognises and skips) or finds the state already updated (and the outputs
already delivered).

State per ``event_id`` (one compact JSON value):

``{"s": "p", ...}``
    a prediction waiting for its label, until its deadline (label TTL);
``{"s": "l", ...}``
    a label waiting for its prediction (a label may arrive first);
``{"s": "j", ...}``
    a small "joined" marker, kept for one TTL so that a re-sent label or
    prediction is not joined twice;
``{"s": "x", ...}``
    an "expired" marker: the prediction's label never came (counted for
    label coverage); a label arriving later is dead-lettered as late.

Every entry carries its partition and the coordinates of the records that
made it, so a replayed record (same coordinates) is recognised and ignored,
while a *different* record with a known ``event_id`` is a duplicate and goes
to the dead-letter topic. Expiry walks the store's expiry index
(:mod:`driftline.streams.join_store`, in memory or in RocksDB), in (deadline, kind,
offset) order per partition; per (model, partition) deadlines never decrease,
so expirations leave in offset order — stage 2 relies on that to skip
replays by a watermark.

Examples
--------
>>> from driftline.events import Prediction, Label
>>> j = Joiner(ttl_for=lambda model: 60.0)
>>> p = Prediction(event_id="e1", model="m", model_version=1, timestamp=0.0,
...                features={"x": 1.0}, prediction=1)
>>> out = j.process([("p", 0, 10, 0, p)], now=100.0)
>>> [(k, len(v)) for k, v in out.observations.items()]
[(('m', 'p', 0), 1)]
>>> _ = j.apply(out.writes)
>>> out = j.process([("l", 0, 7, 0, Label(event_id="e1", model="m", label=1, timestamp=5.0))], now=101.0)
>>> [r["label"] for r in out.labeled], j.store.get(0, "e1")[:8]
([1], b'{"s":"p"')
>>> _ = j.apply(out.writes); j.store.get(0, "e1")[:8]
b'{"s":"j"'

"""

from __future__ import annotations

import orjson
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from driftline import events
from driftline.events import DeadLetter, Label, Prediction, ValidationError

from .join_store import JoinStore, MemoryJoinStore

__all__ = ["Joiner", "JoinOutput", "Item", "COMPONENT", "index_of", "entry_of", "EXPIRY_BATCH"]

COMPONENT = "monitor"

#: (topic kind 'p'|'l', partition, offset, index, record)
Item = tuple

# orjson: the join state is encoded/decoded once per record (json was the
# stage's largest cost); validated records hold no NaN/Infinity
_loads = orjson.loads


def _dumps(value: Any) -> bytes:
    # orjson's bytes keep a ~4 KB buffer whatever their length (orjson
    # 3.13: 30,000 join states took 123 MB); the state lives for a label
    # TTL, so keep an exact-size copy
    return bytes(memoryview(orjson.dumps(value)))


#: Index entries one expiry sweep handles per partition at most (a backlog,
#: after a long stop, leaves over several sweeps instead of one huge output)
EXPIRY_BATCH = 20_000


def index_of(raw: bytes) -> tuple[float, str, int, int, str | None] | None:
    """A state's place in the store's expiry index: ``(deadline, kind,
    offset, index, model)`` -- kind ``p``/``l`` for a waiting record (at its
    coordinates; ``model`` for a prediction), ``m`` for a marker.

    >>> index_of(b'{"s":"p","p":0,"pc":[7,2],"d":60.0,"r":{"model":"m"}}')
    (60.0, 'p', 7, 2, 'm')
    >>> index_of(b'{"s":"j","p":0,"pc":[7,2],"lc":[3,0],"d":90.0}')
    (90.0, 'm', 0, 0, None)
    """
    return entry_of(_loads(raw))


def entry_of(state: dict) -> tuple[float, str, int, int, str | None]:
    """:func:`index_of` of a decoded state."""
    s = state["s"]
    if s == "p":
        offset, index = state["pc"]
        return state["d"], "p", offset, index, state["r"]["model"]
    if s == "l":
        offset, index = state["lc"]
        return state["d"], "l", offset, index, None
    return state["d"], "m", 0, 0, None


@dataclass
class JoinOutput:
    """What one batch (or one expiry sweep) produced.

    ``observations`` maps ``(model, topic kind, partition)`` to a list of
    ``[kind, offset, index, payload]`` items for stage 2 (kind ``p``: a
    prediction, ``j``: a joined pair, ``x``: an expired prediction's model
    version). ``writes`` are ``(partition, key, value-or-None, entry,
    old entry)`` state changes (with the expiry-index entries of the new and
    the replaced state) to apply *after* the outputs are delivered.
    """

    observations: dict[tuple[str, str, int], list] = field(default_factory=lambda: defaultdict(list))
    #: the joined pairs as ``labeled`` records' dicts (built from validated records: encoded as they are)
    labeled: list[dict] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    writes: list[tuple] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def merge(self, other: "JoinOutput") -> "JoinOutput":
        """Append ``other`` (the output of a later batch) to this one."""
        for key, items in other.observations.items():
            self.observations[key].extend(items)
        self.labeled.extend(other.labeled)
        self.dead_letters.extend(other.dead_letters)
        self.writes.extend(other.writes)
        for name, value in other.counts.items():
            self.counts[name] += value
        return self


class Joiner:
    """Join state over a :class:`driftline.streams.join_store.JoinStore` of ``event_id -> bytes``.

    Parameters
    ----------
    ttl_for
        Label TTL in seconds for a model (from its policy).
    store
        The state and its expiry index (default: a
        :class:`~driftline.streams.join_store.MemoryJoinStore`); :meth:`apply` writes
        to it (the faust app: after the outputs are delivered, then sends
        the changelog).
    topics
        Source topic names for dead letters: ``{"p": ..., "l": ...}``.
    """

    def __init__(
        self,
        ttl_for: Callable[[str], float],
        store: JoinStore | None = None,
        topics: dict[str, str] | None = None,
    ):
        self.ttl_for = ttl_for
        self._ttl_cache: dict[str, float] = {}
        self.store: JoinStore = MemoryJoinStore(index_of) if store is None else store
        self.topics = topics or {"p": "predictions", "l": "labels"}
        # (model, partition) -> last deadline given to a pending prediction
        self._last_deadline: dict[tuple[str, int], float] = {}
        #: (topic kind, partition, offset) of this batch's single-event
        #: messages (not bulk arrays): their dead letters carry no index.
        #: Set by the caller before :meth:`process`.
        self.single: set[tuple[str, int, int]] = set()

    # -- the join ---------------------------------------------------------------
    def process(self, items: Iterable[Item], now: float) -> JoinOutput:
        """Join a batch of decoded records, in consumption order."""
        out = JoinOutput()
        self._ttl_cache.clear()  # policies may change between batches, not within one
        overlay: dict[str, Any] = {}  # this batch's changes, visible to later items

        before: dict[str, Any] = {}  # the stored states this batch looked up
        get = self.store.get

        def lookup(partition: int, key: str):
            if key in overlay:
                return overlay[key]
            raw = get(partition, key)
            state = before[key] = None if raw is None else _loads(raw)
            return state

        def put(partition: int, key: str, value: dict) -> None:
            # every put follows the lookup of its key: the state it replaces is known,
            # and so are both index entries (the store need not parse them again)
            old = overlay[key] if key in overlay else before.get(key)
            overlay[key] = value
            out.writes.append((partition, key, _dumps(value), entry_of(value),
                               None if old is None else entry_of(old)))

        for kind, partition, offset, index, record in items:
            key = record.event_id
            state = lookup(partition, key)
            if kind == "p":
                out.counts["prediction"] += 1
                self._on_prediction(record, partition, offset, index, state, now, out, put)
            else:
                out.counts["label"] += 1
                self._on_label(record, partition, offset, index, state, now, out, put)
        return out

    def _on_prediction(self, p: Prediction, partition, offset, index, state, now, out, put) -> None:
        coords = [offset, index]
        data = None
        if state is None or state["s"] == "l":
            data = p.to_dict()
            out.observations[(p.model, "p", partition)].append(["p", offset, index, data])
        if state is None:
            deadline = self._deadline(p.model, partition, now)
            put(partition, p.event_id, {"s": "p", "p": partition, "pc": coords, "d": deadline, "r": data})
        elif state["s"] == "l":
            label = Label(**state["r"])  # our own state: validated when it was written
            if label.model != p.model:
                self._dead(out, "p", partition, offset, index, p, "model",
                           f"label for event_id {p.event_id!r} names model {label.model!r}, the prediction {p.model!r}")
                return
            self._join(data, label, partition, "p", offset, index, coords, state["lc"], now, out, put)
        elif state.get("pc") == coords:
            return  # a replay of a record already applied
        else:
            what = {"p": "is already waiting for its label", "j": "was already joined with its label",
                    "x": "already expired without a label"}[state["s"]]
            self._dead(out, "p", partition, offset, index, p, "event_id",
                       f"duplicate prediction: event_id {p.event_id!r} {what}")

    def _on_label(self, label: Label, partition, offset, index, state, now, out, put) -> None:
        coords = [offset, index]
        if state is None:
            deadline = now + self._ttl(label.model)
            state = {"s": "l", "p": partition, "lc": coords, "d": deadline, "r": label.to_dict()}
            if ("l", partition, offset) in self.single:
                state["one"] = 1  # a single-event message: its dead letter, if it expires, has no index
            put(partition, label.event_id, state)
        elif state["s"] == "p":
            p = state["r"]  # our own state: a prediction validated when it was written
            if p["model"] != label.model:
                self._dead(out, "l", partition, offset, index, label, "model",
                           f"label names model {label.model!r} but the prediction for event_id "
                           f"{label.event_id!r} was made by {p['model']!r}")
                return
            self._join(p, label, partition, "l", offset, index, state["pc"], coords, now, out, put)
        elif state.get("lc") == coords:
            return  # replay
        elif state["s"] == "x":
            self._dead(out, "l", partition, offset, index, label, "event_id",
                       f"late label: the prediction for event_id {label.event_id!r} expired without a label "
                       f"(label TTL {self._ttl(label.model):g}s)")
        else:
            what = "is already waiting for its prediction" if state["s"] == "l" else "was already joined"
            self._dead(out, "l", partition, offset, index, label, "event_id",
                       f"duplicate label: event_id {label.event_id!r} {what}")

    def _join(self, p: dict, label: Label, partition, kind, offset, index, pc, lc, now, out, put) -> None:
        """Join ``label`` with the prediction ``p`` (a validated prediction's dict)."""
        model, event_id = p["model"], p["event_id"]
        # a LabeledRecord's fields, in its order (the labeled topic's records)
        data = {"event_id": event_id, "model": model, "model_version": p["model_version"], "features": p["features"],
                "prediction": p["prediction"], "label": label.label, "prediction_timestamp": p["timestamp"],
                "label_timestamp": label.timestamp, "probabilities": p.get("probabilities"),
                "latency_ms": p.get("latency_ms")}
        out.labeled.append(data)
        # Joined pairs carry both sides' coordinates: which side completes a
        # join depends on arrival order, which a replay may change, so stage 2
        # recognises a re-joined pair by event_id (see driftline.streams.stage2).
        out.observations[(model, kind, partition)].append(["j", offset, index, data, pc, lc])
        out.counts["joined"] += 1
        remove_at = now + self._ttl(model)
        put(partition, event_id, {"s": "j", "p": partition, "pc": pc, "lc": lc, "d": remove_at})

    def _ttl(self, model: str) -> float:
        ttl = self._ttl_cache.get(model)
        if ttl is None:
            ttl = self._ttl_cache[model] = self.ttl_for(model)
        return ttl

    def _deadline(self, model: str, partition: int, now: float) -> float:
        # Never earlier than the previous one for this (model, partition), so
        # expirations leave in offset order even after a TTL change.
        deadline = max(now + self._ttl(model), self._last_deadline.get((model, partition), 0.0))
        self._last_deadline[(model, partition)] = deadline
        return deadline

    def _dead(self, out: JoinOutput, kind: str, partition: int, offset: int, index: int | None, record,
              field_name: str, reason: str) -> None:
        # the record alone is the original (re-publishable as it is); ``index``
        # is its position in a bulk source message, None for a single event
        if (kind, partition, offset) in self.single:
            index = None
        error = ValidationError(field_name, getattr(record, "event_id", None), reason)
        letter = DeadLetter.for_payload(events.encode(record), error, source_topic=self.topics[kind],
                                        component=COMPONENT, partition=partition, offset=offset)
        letter.index = index
        out.dead_letters.append(letter)
        out.counts["dead_letter"] += 1

    # -- expiry -------------------------------------------------------------------------
    def expire(self, now: float, partitions: Iterable[int] | None = None,
               limit: int = EXPIRY_BATCH) -> JoinOutput:
        """Expire predictions and labels past their TTL and drop old markers
        (up to ``limit`` index entries per partition; the rest next time)."""
        out = JoinOutput()
        self._ttl_cache.clear()
        store = self.store
        for partition in store.partitions() if partitions is None else partitions:
            for deadline, kind, offset, index, key in store.due(partition, now, limit):
                raw = store.get(partition, key)
                if raw is None:
                    continue
                state = _loads(raw)
                if kind == "m":  # a joined/expired marker: deleted one TTL after it was made
                    if state["s"] in ("j", "x") and state["d"] <= now:
                        out.writes.append((partition, key, None, None, entry_of(state)))
                    continue
                if state.get("d") != deadline:
                    continue  # superseded entry (lazy deletion)
                if state["s"] == "p":
                    p = state["r"]
                    out.observations[(p["model"], "p", partition)].append(["x", offset, index, p["model_version"]])
                    out.counts["expired"] += 1
                    remove_at = now + self._ttl(p["model"])
                    marker = {"s": "x", "p": partition, "pc": state["pc"], "d": remove_at}
                    out.writes.append((partition, key, _dumps(marker), entry_of(marker), entry_of(state)))
                elif state["s"] == "l":
                    label = Label(**state["r"])
                    self._dead(out, "l", partition, state["lc"][0], None if state.get("one") else state["lc"][1],
                               label, "event_id",
                               f"no prediction with event_id {key!r} arrived within the label TTL "
                               f"({self._ttl(label.model):g}s)")
                    out.counts["expired_label"] += 1
                    out.writes.append((partition, key, None, None, entry_of(state)))
                else:
                    out.writes.append((partition, key, None, None, entry_of(state)))
        return out

    def apply(self, writes: Iterable[tuple]) -> int:
        """Write state changes to the store (after the outputs are delivered);
        returns the store's sequence number for them."""
        return self.store.apply(writes)

    # -- recovery -----------------------------------------------------------------------
    def rebuild(self, partitions: Iterable[int]) -> None:
        """Start serving ``partitions`` (after a restart or a rebalance): the
        store indexes them, the last deadlines per model come back."""
        for partition in partitions:
            self.store.open(partition)
            for model, deadline in self.store.last_deadlines(partition).items():
                k = (model, partition)
                self._last_deadline[k] = max(self._last_deadline.get(k, 0.0), deadline)

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop what is kept for partitions this process no longer owns."""
        for partition in partitions:
            self.store.close_partition(partition)
            for k in [k for k in self._last_deadline if k[1] == partition]:
                del self._last_deadline[k]
