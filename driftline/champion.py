"""The application side of the loop: serve the registry's champion, follow
promotions, publish every prediction.

:class:`Champion` loads ``NAME@champion`` (or another alias) from the
registry, follows ``model-events`` in a background thread and swaps to the
new version when the alias moves (``promoted``, ``rolled_back``,
``alias_set``), verifying the artifact exactly as :meth:`driftline.registry.Registry.load`
does. A version that fails to load (a bad checksum, an untrusted type, a
missing file) is refused and the old one keeps serving; the reason is
logged. The alias is also re-resolved every ``refresh_s`` seconds, so a
promotion missed while the broker was away is still picked up.

Every call to :meth:`Champion.predict` publishes one prediction event per
row, with the version that answered, the latency and (for classifiers) the
probabilities. Publishing happens on a background thread: it never blocks
or fails a prediction. Events that cannot be sent (the broker is down, the
queue is full, a value the contract refuses) are counted in
:attr:`Champion.stats` and logged, at most one line per ``log_every_s``.

:class:`ModelEventFollower` is the follower on its own, for code that only
needs the model events.
"""

from __future__ import annotations

import logging
import math
import queue
import sqlite3
import threading
import time
import os
from collections.abc import Mapping
from itertools import chain
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from . import events
from .config import Settings, load_settings
from .errors import DriftlineError
from .events import ModelEvent, ValidationError
from .extras import error_types
from .kafka import follow_topics
from .model_store import ModelStore, ModelStoreError, open_model_store
from .sdk import class_key, plain

__all__ = ["Champion", "ModelEventFollower", "Predictions", "NotReadyError", "parse_model_ref"]

log = logging.getLogger(__name__)

#: Model events after which the alias is resolved again.
_MOVES = ("promoted", "rolled_back", "alias_set")
_STOP = object()


class NotReadyError(DriftlineError):
    """No version of the model could be loaded yet."""


def parse_model_ref(ref: str, alias: str | None = None) -> tuple[str, str]:
    """``NAME``, ``NAME@ALIAS`` (or ``models:/NAME@ALIAS``) -> (name, alias);
    ``alias`` applies when the reference names none (default ``champion``).

    >>> parse_model_ref("churn"), parse_model_ref("churn@staging"), parse_model_ref("churn", "canary")
    (('churn', 'champion'), ('churn', 'staging'), ('churn', 'canary'))
    """
    text = ref[len("models:/"):] if isinstance(ref, str) and ref.startswith("models:/") else ref
    if not isinstance(text, str):
        raise ValidationError("model", ref, "must be a string NAME or NAME@ALIAS")
    name, sep, named_alias = text.partition("@")
    if sep and alias is not None and alias != named_alias:
        raise ValidationError("alias", alias, f"conflicts with the alias in {ref!r}")
    return events.validate_name(name, "model"), events.validate_name(named_alias or alias or "champion", "alias")


class _Throttle:
    """At most one log line per ``every_s`` for one kind of trouble; the
    line says how many were not logged since."""

    def __init__(self, every_s: float):
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._hidden: dict[str, int] = {}
        self._lock = threading.Lock()

    def warn(self, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(kind, -math.inf) < self.every_s:
                self._hidden[kind] = self._hidden.get(kind, 0) + 1
                return
            self._last[kind] = now
            hidden = self._hidden.pop(kind, 0)
        if hidden:
            message += f" ({hidden} more since the last report)"
        log.warning(message, *args)


class ModelEventFollower(threading.Thread):
    """Follow ``model-events`` from the end (no consumer group: every
    follower sees every event) and call ``on_event`` for each valid event.

    The consumer is positioned before :attr:`ready` is set, so an event
    published after ``ready`` is never missed. When the broker cannot be
    reached the follower retries every ``retry_s``; ``on_idle`` is called
    about every ``idle_s`` whatever happens (the champion re-resolves its
    alias there).

    Parameters
    ----------
    settings
        Connection and topic settings.
    on_event
        Called on the follower's thread with each :class:`ModelEvent`.
    on_idle
        Called on the follower's thread about every ``idle_s`` seconds.

    Examples
    --------
    >>> follower = ModelEventFollower(settings, lambda e: print(e.event, e.model, e.version))  # doctest: +SKIP
    >>> follower.start(); follower.ready.wait(15)                                   # doctest: +SKIP
    >>> follower.stop()                                                             # doctest: +SKIP
    """

    def __init__(self, settings: Settings, on_event: Callable[[ModelEvent], None],
                 on_idle: Callable[[], None] | None = None, idle_s: float = 30.0, retry_s: float = 2.0,
                 client_id: str = "driftline-model-events"):
        super().__init__(name="driftline-model-events", daemon=True)
        self.settings = settings
        self.on_event = on_event
        self.on_idle = on_idle
        self.idle_s = idle_s
        self.retry_s = retry_s
        self.client_id = client_id
        self.ready = threading.Event()
        self.stop_event = threading.Event()
        self.errors = 0
        self._throttle = _Throttle(30.0)

    def stop(self, timeout: float | None = 5.0) -> None:
        self.stop_event.set()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        last_idle = time.monotonic()
        consumer = None
        while not self.stop_event.is_set():
            try:
                if consumer is None:
                    consumer = self._connect()
                    self.ready.set()
                for messages in consumer.poll(timeout_ms=200).values():
                    for message in messages:
                        for event in events.decode_batch(ModelEvent, message.value or b"").records:
                            self.on_event(event)
                if self.on_idle is not None and time.monotonic() - last_idle >= self.idle_s:
                    last_idle = time.monotonic()
                    self.on_idle()
            except Exception as error:  # the follower's one error policy: log, reconnect, go on
                self.errors += 1
                self._throttle.warn("follow", "following %s failed: %s: %s; retrying every %.0fs",
                                    self.settings.topics.model_events, type(error).__name__, error, self.retry_s)
                if consumer is not None:
                    _close_quietly(consumer)
                    consumer = None
                if self.on_idle is not None and time.monotonic() - last_idle >= self.idle_s:
                    last_idle = time.monotonic()
                    self._idle_quietly()
                self.stop_event.wait(self.retry_s)
        if consumer is not None:
            _close_quietly(consumer)

    def _idle_quietly(self) -> None:
        try:
            self.on_idle()
        except Exception as error:  # same policy: the thread must go on
            self._throttle.warn("idle", "periodic refresh failed: %s: %s", type(error).__name__, error)

    def _connect(self):
        # positioned at the end, positions resolved: later events are never missed
        return follow_topics(self.settings, [self.settings.topics.model_events], self.client_id, from_end=True)


def _close_quietly(consumer) -> None:
    from kafka.errors import KafkaError

    try:
        consumer.close()
    except (KafkaError, OSError) as error:  # closing a broken connection: nothing left to save
        log.debug("closing the model-events consumer failed: %s", error)


@dataclass
class Predictions:
    """What :meth:`Champion.predict` returns.

    ``predictions`` (plain Python values, one per row), ``event_ids`` (the
    prediction events' ids: send labels with them), ``model_version`` (the
    version that answered), ``probabilities`` (classifiers: one
    ``{class: probability}`` per row) and ``latency_ms`` (per row).
    Iterating, indexing and ``len`` act on ``predictions``.
    """

    predictions: list
    event_ids: list[str]
    model: str
    model_version: int
    probabilities: list[dict[str, float]] | None = None
    latency_ms: float = 0.0
    proba: Any = field(default=None, repr=False)  # predict_proba's matrix, for predict_proba()

    def __len__(self) -> int:
        return len(self.predictions)

    def __iter__(self) -> Iterator:
        return iter(self.predictions)

    def __getitem__(self, index: int) -> Any:
        return self.predictions[index]

    def to_dict(self) -> dict[str, Any]:
        return {"predictions": self.predictions, "event_ids": self.event_ids, "model": self.model,
                "model_version": self.model_version}


@dataclass(frozen=True)
class _Served:
    """The version being served. Replaced as a whole, so a request always
    sees one consistent (estimator, version) pair."""

    estimator: Any
    version: int
    columns: tuple[str, ...] | None
    classes: tuple | None  # class_key text per column of predict_proba
    labels: tuple | None  # the classes as plain values
    checkable: bool = False  # column names and class labels the contract takes: batches checked at once


class Champion:
    """Serve the model behind ``NAME@ALIAS`` and follow its promotions.

    Parameters
    ----------
    model
        ``NAME`` or ``NAME@ALIAS``.
    alias
        The alias to follow when ``model`` names none (default ``champion``).
    settings
        Connection, topic and registry settings (default: from the environment).
    publish
        Publish a prediction event per row (``False``: serve only).
    follow
        Follow ``model-events`` and swap versions (``False``: keep the first).
    probabilities
        For classifiers, compute ``predict_proba`` and predict the most
        probable class (one model call for both); ``False`` calls ``predict``.
    require
        Raise when no version can be loaded now; with ``False`` the champion
        starts empty (:meth:`predict` raises :class:`NotReadyError`) and
        loads the version as soon as the alias resolves.
    refresh_s
        Re-resolve the alias this often, events or not.
    retry_s
        After the broker could not be reached, wait this long before trying
        again (events published meanwhile are counted as failures).
    batch_s
        How long the publishing thread lets events gather before it sends
        them (one bulk send per period, not one per call).
    queue_size
        Most events waiting to be published; beyond it events are dropped
        (and counted) rather than slow the application down.
    log_every_s
        At most one log line per kind of publishing trouble in this period.
    registry
        An open :class:`~driftline.model_store.ModelStore` to use, such as a
        :class:`driftline.registry.Registry` (default: the installed registry,
        opened from ``settings`` and closed by :meth:`close`).

    Examples
    --------
    >>> from driftline import Champion                                    # doctest: +SKIP
    >>> champion = Champion("churn")                                     # doctest: +SKIP
    >>> result = champion.predict({"age": 42, "plan": "pro"})            # doctest: +SKIP
    >>> result.predictions, result.model_version                         # doctest: +SKIP
    (['yes'], 3)
    >>> champion.publish_label(result.event_ids[0], "no")                # doctest: +SKIP
    >>> champion.close()                                                 # doctest: +SKIP
    """

    def __init__(self, model: str, alias: str | None = None, settings: Settings | None = None, *,
                 publish: bool = True, follow: bool = True, probabilities: bool = True, require: bool = True,
                 refresh_s: float = 30.0, retry_s: float = 5.0, batch_s: float = 0.05, queue_size: int = 100_000,
                 log_every_s: float = 30.0, registry: ModelStore | None = None, **producer_options: Any):
        self.name, self.alias = parse_model_ref(model, alias)
        self.settings = settings or load_settings()
        self.publishing = publish
        self.use_probabilities = probabilities
        self.retry_s = retry_s
        self.batch_s = batch_s
        self.stats: dict[str, int] = {"published": 0, "publish_failures": 0, "dropped": 0, "refused": 0,
                                      "reloads": 0, "reload_failures": 0}
        self._stats_lock = threading.Lock()
        self._throttle = _Throttle(log_every_s)
        self._served: _Served | None = None
        self._refused: dict[int, str] = {}  # version -> why it was refused (logged once)
        self._reload_lock = threading.Lock()
        self._closed = False
        self._own_registry = registry is None
        if registry is None:
            registry = open_model_store(self.settings)  # the registry, found through its entry point
        self.registry: ModelStore = registry
        self._publisher = None
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._sender: threading.Thread | None = None
        self._follower: ModelEventFollower | None = None
        try:
            if publish:
                self._start_publisher(producer_options)
            if follow:
                # Positioned on model-events before the first load, so a
                # promotion between the two is never missed.
                self._follower = ModelEventFollower(self.settings, self._on_event, on_idle=self.refresh,
                                                    idle_s=refresh_s, client_id="driftline-champion")
                self._follower.start()
                self._follower.ready.wait(15)
            loaded = self.refresh()
            if require and not loaded and self._served is None:
                raise NotReadyError(f"{self.name}@{self.alias}: {self._last_error}")
        except BaseException:
            self.close()
            raise

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:  # counted from the request, sender and producer threads
            self.stats[key] += n

    # -- what is served --------------------------------------------------------------------
    @property
    def version(self) -> int | None:
        """The version serving now (``None`` before one is loaded)."""
        served = self._served
        return served.version if served is not None else None

    @property
    def estimator(self) -> Any:
        served = self._served
        return served.estimator if served is not None else None

    @property
    def ready(self) -> bool:
        return self._served is not None

    @property
    def columns(self) -> tuple[str, ...] | None:
        """The serving version's feature names (``feature_names_in_``), if it has them."""
        served = self._served
        return served.columns if served is not None else None

    @property
    def last_error(self) -> str:
        """Why the last load failed (or ``"not loaded yet"``)."""
        return self._last_error

    _last_error = "not loaded yet"

    def refresh(self) -> bool:
        """Resolve the alias and load its version if it is not the one
        serving. Returns whether the version serving now is the alias's
        (``False``: it could not be loaded, and the old one keeps serving)."""
        with self._reload_lock:  # the follower and a caller may both refresh
            if self._closed:
                return False
            ref = f"{self.name}@{self.alias}"
            target = None
            try:
                target = self.registry.resolve(ref).version
                served = self._served
                if served is not None and served.version == target:
                    return True
                loaded = self.registry.load(f"{self.name}/{target}")  # verified: checksum and trusted types
            except (ModelStoreError, OSError, *_database_errors()) as error:
                self._last_error = f"{type(error).__name__}: {error}"
                self._count("reload_failures")
                if self._refused.get(target) != self._last_error:  # once per version and reason
                    self._refused[target] = self._last_error
                    log.error("%s: cannot load %s%s; %s: %s", ref,
                              f"version {target}" if target is not None else "the alias",
                              f", still serving version {self.version}" if self._served else "",
                              type(error).__name__, error)
                return False
            served = self._describe(loaded.estimator, loaded.version.version)
            previous = self.version
            self._served = served  # one assignment: requests see the old or the new pair, never a mix
            self._refused.pop(served.version, None)
            if previous is not None:
                self._count("reloads")
            log.info("%s: serving version %s%s", ref, served.version,
                     f" (was {previous})" if previous is not None else "")
            return True

    def _on_event(self, event: ModelEvent) -> None:
        if event.model != self.name or event.event not in _MOVES:
            return
        if event.alias is not None and event.alias != self.alias:
            return
        self.refresh()

    @staticmethod
    def _describe(estimator: Any, version: int) -> _Served:
        columns = getattr(estimator, "feature_names_in_", None)
        classes = getattr(estimator, "classes_", None)
        labels = keys = None
        if classes is not None and hasattr(estimator, "predict_proba"):
            labels = tuple(plain(c) for c in classes)
            keys = tuple(class_key(c) for c in labels)
        names = tuple(str(c) for c in columns) if columns is not None else None
        checkable = (names is not None and 0 < len(names) <= events.MAX_FEATURES
                     and all(0 < len(n) <= events.MAX_ID for n in names))
        for label in labels or ():
            try:  # each class once per version, not once per event
                events.Label.from_dict({"event_id": "x", "model": "x", "label": label, "timestamp": 0.0})
            except ValidationError:
                checkable = False
        if labels is not None and len(labels) > events.MAX_FEATURES:
            checkable = False
        return _Served(estimator, version, names, keys, labels, checkable)

    # -- predicting ---------------------------------------------------------------------------
    def predict(self, rows: Any, *, event_ids: Sequence[str] | None = None) -> Predictions:
        """Predict ``rows`` with the version serving now and publish one
        prediction event per row.

        Parameters
        ----------
        rows
            A pandas DataFrame, one row as a dict, or a list of dicts.
        event_ids
            Ids for the prediction events (default: fresh random ones).

        Raises :class:`driftline.events.ValidationError` naming the field
        when the input is malformed or the model refuses it, and
        :class:`NotReadyError` before a version is loaded.
        """
        served = self._served
        if served is None:
            raise NotReadyError(f"{self.name}@{self.alias}: no version loaded ({self._last_error})")
        frame, records = _frame(rows, served.columns)
        n = len(records)
        if event_ids is None:
            event_ids = _new_ids(n)
        elif len(event_ids) != n:
            raise ValidationError("event_ids", len(event_ids), f"must give one id per row ({n} rows)")
        estimator = served.estimator
        proba = raw = None
        started = time.perf_counter()
        try:
            if self.use_probabilities and served.classes is not None:
                proba = estimator.predict_proba(frame)
                best = proba.argmax(axis=1)
                predictions = [served.labels[i] for i in best.tolist()]
            else:
                raw = estimator.predict(frame)
                predictions = [plain(p) for p in raw.tolist()]
        except (ValueError, TypeError, KeyError) as error:  # what scikit-learn raises for inputs it cannot use
            raise ValidationError("inputs", _shown(records), f"the model refused the input "
                                                             f"({type(error).__name__}: {error})") from None
        latency_ms = (time.perf_counter() - started) * 1000.0 / max(1, n)
        probabilities = None
        if proba is not None:
            keys = served.classes
            probabilities = [dict(zip(keys, row)) for row in proba.tolist()]
        result = Predictions(predictions, list(event_ids), self.name, served.version, probabilities,
                             latency_ms, proba)
        if self.publishing:
            checked = _batch_checked(served, records, event_ids, raw, probabilities, latency_ms)
            self._enqueue(("p", records, result, events.now(), checked))
        return result

    def predict_proba(self, rows: Any, *, event_ids: Sequence[str] | None = None) -> Predictions:
        """Like :meth:`predict` for a classifier; the result's ``proba`` is
        ``predict_proba``'s matrix (columns in ``estimator.classes_`` order)."""
        served = self._served
        if served is not None and served.classes is None:
            raise ValidationError("model", self.name, f"version {served.version} is not a classifier "
                                                      "with predict_proba")
        if not self.use_probabilities:
            raise ValidationError("probabilities", False, "this champion was created with probabilities=False")
        return self.predict(rows, event_ids=event_ids)

    # -- labels -------------------------------------------------------------------------------
    def publish_label(self, event_id: str, label: Any, timestamp: float | None = None) -> None:
        """Send the truth for an earlier prediction (asynchronously, like
        predictions). A label the contract refuses raises ValidationError."""
        record = events.Label.from_dict({"event_id": plain(event_id), "model": self.name, "label": plain(label),
                                         "timestamp": events.now() if timestamp is None else plain(timestamp)})
        self._enqueue(("l", record))

    def publish_labels(self, labels: Sequence[tuple[str, Any]]) -> None:
        """Several ``(event_id, label)`` pairs; all are checked before any is sent."""
        now = events.now()
        records = [events.Label.from_dict({"event_id": plain(e), "model": self.name, "label": plain(y),
                                           "timestamp": now}, i) for i, (e, y) in enumerate(labels)]
        for record in records:
            self._enqueue(("l", record))

    # -- publishing (background thread) -------------------------------------------------------
    def _start_publisher(self, producer_options: dict[str, Any]) -> None:
        # The producer is made on the sender thread, so a broker that is down
        # delays events, never the application's start or its requests.
        self._retry_at = 0.0
        self._connect_error = ""
        self._producer_options = {"linger_ms": 50, "max_block_ms": 10_000, "request_timeout_ms": 10_000, "delivery_timeout_ms": 30_000,
                                  "client_id": "driftline-champion", **producer_options}
        self._sender = threading.Thread(target=self._send_loop, name="driftline-champion-publisher", daemon=True)
        self._sender.start()

    def _get_publisher(self):
        if self._publisher is None:
            from kafka import KafkaProducer

            from .sdk import Publisher

            from kafka.errors import KafkaError

            if time.monotonic() < self._retry_at:
                raise DriftlineError(f"no connection to the broker (retrying in "
                                     f"{self._retry_at - time.monotonic():.0f}s): {self._connect_error}")
            options = dict(self._producer_options)
            if "bootstrap_timeout_ms" in KafkaProducer.DEFAULT_CONFIG:  # kafka-python 3: do not wait a minute
                options.setdefault("bootstrap_timeout_ms", 5_000)
            try:
                self._publisher = Publisher(self.settings, on_delivery_error=self._on_delivery_error, **options)
            except KafkaError as error:  # no broker (or a bad option): try again later, count meanwhile
                self._retry_at = time.monotonic() + self.retry_s
                self._connect_error = f"{type(error).__name__}: {error}"
                raise
        return self._publisher

    def _enqueue(self, item: tuple) -> None:
        if self._sender is None:
            if item[0] == "l":
                raise DriftlineError("this champion was created with publish=False: labels cannot be sent")
            return
        if self._closed:  # nothing sends any more: count it, as for a full queue
            count = len(item[1]) if item[0] == "p" else 1
            self._count("dropped", count)
            self._throttle.warn("closed", "%s: champion closed: %d event(s) not published", self.name, count)
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            count = len(item[1]) if item[0] == "p" else 1
            self._count("dropped", count)
            self._throttle.warn("dropped", "%s: publishing queue full (broker slow or down): %d event(s) dropped",
                                self.name, count)

    def _send_loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            if batch[0] is not _STOP and self.batch_s > 0:
                # Let a burst gather: one wake-up and one bulk send per
                # batch_s rather than per request keeps this thread (and the
                # GIL) out of the requests' way.
                time.sleep(self.batch_s)
            while len(batch) < 10_000 and batch[-1] is not _STOP:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = batch[-1] is _STOP
            try:
                self._send([item for item in batch if item is not _STOP])
            finally:
                for _ in batch:
                    self._queue.task_done()
            if stop:
                return

    def _send(self, batch: list[tuple]) -> None:
        predictions, labels = [], []
        for item in batch:
            if item[0] == "l":
                labels.append(item[1])
            elif item[4]:  # the batch passed the contract's checks at once (see _batch_checked)
                predictions.extend(self._prediction_dicts(*item[1:4]))
            else:
                predictions.extend(r.to_dict() for r in self._prediction_records(*item[1:4]))
        for records, kind in ((predictions, "predictions"), (labels, "labels")):
            if not records:
                continue
            try:
                publisher = self._get_publisher()
                topics = self.settings.topics
                # checked when they were built: not checked twice
                if kind == "predictions":
                    publisher._publish_checked(topics.predictions, records)
                else:
                    publisher._publish_records(topics.labels, records)
                self._count("published", len(records))
            except Exception as error:  # the sender thread's one error policy: count, log, go on
                self._count("publish_failures", len(records))
                self._throttle.warn("publish", "%s: publishing %d %s failed: %s: %s", self.name, len(records),
                                    kind, type(error).__name__, error)

    def _prediction_dicts(self, records: list[dict], result: Predictions, timestamp: float) -> list[dict]:
        name, version, latency = self.name, result.model_version, result.latency_ms
        probabilities = result.probabilities or [None] * len(records)
        return [{"event_id": event_id, "model": name, "model_version": version, "timestamp": timestamp,
                 "features": features, "prediction": prediction, "probabilities": probs, "latency_ms": latency}
                for features, event_id, prediction, probs in zip(records, result.event_ids, result.predictions,
                                                                 probabilities)]

    def _prediction_records(self, records: list[dict], result: Predictions, timestamp: float) -> list:
        out = []
        probabilities = result.probabilities or [None] * len(records)
        for i, (features, event_id, prediction, probs) in enumerate(
                zip(records, result.event_ids, result.predictions, probabilities)):
            fields = {"event_id": event_id, "model": self.name, "model_version": result.model_version,
                      "timestamp": timestamp, "features": features, "prediction": prediction,
                      "probabilities": probs, "latency_ms": result.latency_ms}
            try:
                try:
                    out.append(events.Prediction.from_dict(fields))
                except ValidationError as error:
                    if not (error.field.startswith("features.") and error.value != error.value):
                        raise
                    # NaN is how pandas writes "missing"; the contract writes null
                    fields["features"] = {k: (None if v != v else v) for k, v in features.items()}
                    out.append(events.Prediction.from_dict(fields))
            except ValidationError as error:  # an input the contract cannot hold: count, say why
                self._count("refused")
                self._throttle.warn("refused", "%s: prediction event %s not published: %s", self.name, event_id,
                                    error)
        return out

    def _on_delivery_error(self, error: BaseException) -> None:
        self._count("publish_failures")
        self._throttle.warn("delivery", "%s: a message was not delivered: %s: %s", self.name,
                            type(error).__name__, error)

    def flush(self, timeout: float | None = 30.0) -> None:
        """Block until every event queued so far has been sent and
        acknowledged, or has failed (and been counted), or ``timeout``."""
        if self._sender is None:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._queue.unfinished_tasks and self._sender.is_alive():
            if deadline is not None and time.monotonic() > deadline:
                return
            time.sleep(0.005)
        if self._publisher is not None:
            from kafka.errors import KafkaError

            try:
                self._publisher.flush(None if deadline is None else max(0.0, deadline - time.monotonic()))
            except KafkaError as error:  # already counted by the errback; said once here
                self._throttle.warn("flush", "%s: flush: %s: %s", self.name, type(error).__name__, error)

    def close(self, timeout: float = 30.0) -> None:
        """Stop following, flush what is queued, close the producer and the registry."""
        with self._reload_lock:
            if self._closed:
                return
            self._closed = True
        if self._follower is not None:
            self._follower.stop()
        if self._sender is not None and self._sender.is_alive():
            self.flush(timeout)
            self._queue.put(_STOP)
            self._sender.join(timeout)
        lost = 0
        while True:  # what the sender could not take in time is lost: count it
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                lost += len(item[1]) if item[0] == "p" else 1
        if lost:
            self._count("dropped", lost)
            log.warning("%s: %d event(s) not published before close", self.name, lost)
        if self._publisher is not None:
            from kafka.errors import KafkaError

            try:
                self._publisher._producer.close(timeout)
            except KafkaError as error:  # closing after a broker failure: already counted and logged
                log.warning("%s: closing the producer failed: %s", self.name, error)
        if self._own_registry and self.registry is not None:
            self.registry.close()

    def __enter__(self) -> "Champion":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Champion({self.name}@{self.alias}, version={self.version})"


def _database_errors() -> tuple[type[BaseException], ...]:
    """What a registry query can raise when its database is unavailable."""
    return (sqlite3.Error, *error_types("psycopg", "Error"))  # psycopg: the postgres extra


def _new_ids(n: int) -> list[str]:
    """``n`` random 128-bit ids as 32 hex digits (like ``uuid4().hex``, from
    one ``os.urandom`` call rather than one per id)."""
    text = os.urandom(16 * n).hex()
    return [text[i : i + 32] for i in range(0, 32 * n, 32)]


def _shown(records: list[dict]) -> Any:
    return records[0] if len(records) == 1 else f"{len(records)} rows"


def _batch_checked(served: _Served, records: list[dict], event_ids: Sequence[str], raw: Any,
                   probabilities: list[dict] | None, latency_ms: float) -> bool:
    """Whether a whole batch of prediction events meets the contract, checked
    at once (set operations in C, NumPy over the outputs) rather than event
    by event: rows with exactly the model's columns, no infinite number, no
    string over the limit, valid ids, finite predictions, probabilities in
    [0, 1]. NaN features are fine (written as null). ``False`` means: check
    each event (the slow path, which names what is wrong)."""
    import numpy as np

    if not served.checkable or not (math.isfinite(latency_ms) and latency_ms >= 0):
        return False
    width = len(served.columns)
    if set(map(len, records)) != {width}:  # with the columns already required: the same keys
        return False
    if not (0 < min(map(len, event_ids)) and max(map(len, event_ids)) <= events.MAX_ID
            and _STR.issuperset(map(type, event_ids))):
        return False
    if probabilities is not None:
        flat = list(chain.from_iterable(map(dict.values, probabilities)))
        # a finite sum means no NaN and no infinity among them
        if not (math.isfinite(sum(flat)) and min(flat) >= 0.0 and max(flat) <= 1.0):
            return False
    elif raw is None or raw.dtype.kind not in "iufb" or (raw.dtype.kind == "f" and not np.isfinite(raw).all()):
        return False
    values = list(chain.from_iterable(map(dict.values, records)))  # every cell, in one C-level pass
    try:
        numeric_and_finite = math.isfinite(sum(values))  # all numbers: the usual case, and the fastest check
    except TypeError:  # strings or nulls among them
        numeric_and_finite = False
    if numeric_and_finite:
        return True
    if not _INFINITIES.isdisjoint(values):
        return False
    if str in set(map(type, values)) and max(len(v) for v in values if type(v) is str) > events.MAX_STRING:
        return False
    return True


_INFINITIES = frozenset((math.inf, -math.inf))
_CELL_TYPES = frozenset((str, int, float, bool, type(None)))
_STR = frozenset((str,))


def _cell(value: Any, path: str) -> Any:
    value = plain(value)
    kind = type(value)
    if kind is float:
        return None if value != value else value  # NaN: missing, sent as null (the contract's missing value)
    if kind is int or kind is str or kind is bool or value is None:
        return value
    raise ValidationError(path, value, "must be a number, string, bool or null")


def _plain_row(row: Any, i: int, where: str, columns: frozenset | None) -> dict:
    if not isinstance(row, Mapping):
        raise ValidationError(f"{where}[{i}]", row, "must be an object of feature -> value")
    # The usual row (JSON or plain Python) is checked with C-speed set and
    # map operations; only the others are rebuilt cell by cell. (NaN, the
    # one plain value the contract refuses, becomes null when the event is
    # built, off the request's path.)
    if type(row) is dict and _CELL_TYPES.issuperset(map(type, row.values())) and _STR.issuperset(map(type, row)):
        out = row
    else:
        out = {}
        for name, value in row.items():
            if type(name) is not str:
                raise ValidationError(f"{where}[{i}]", name, "feature names must be strings")
            out[name] = _cell(value, f"{where}[{i}].{name}")
    if columns is not None and not columns <= out.keys():
        missing = sorted(columns - out.keys())
        raise ValidationError(f"{where}[{i}].{missing[0]}", events.MISSING_VALUE,
                              f"missing feature (the model needs {len(columns)} features; "
                              f"{len(missing)} missing)")
    return out


def _frame(rows: Any, columns: tuple[str, ...] | None):
    """The model's input frame and each row's features as a plain dict."""
    import pandas as pd

    if isinstance(rows, pd.DataFrame):
        frame = rows
        records = rows.to_dict("records")
        where = "rows"
    else:
        if isinstance(rows, Mapping):
            rows = [rows]
        if not isinstance(rows, (list, tuple)):
            raise ValidationError("inputs", type(rows).__name__, "must be a DataFrame, an object or a list of objects")
        records = rows
        where = "inputs"
        frame = None
    if not records:
        raise ValidationError(where, [], "must hold at least one row")
    needed = frozenset(columns) if columns is not None else None
    plain_records = [_plain_row(row, i, where, needed) for i, row in enumerate(records)]
    if frame is None:
        frame = pd.DataFrame.from_records(plain_records, columns=list(columns) if columns is not None else None)
    elif columns is not None and tuple(frame.columns) != columns:
        frame = frame[list(columns)]
    return frame, plain_records
