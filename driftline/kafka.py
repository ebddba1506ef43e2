"""Kafka plumbing every command and daemon shares (kafka-python clients).

One copy of each piece:

* :func:`unreachable` — the one "cannot reach Kafka" error;
* :func:`admin_client`, :func:`existing_topics`, :func:`require_topics` —
  topic listings and the check that the topics a process needs exist;
* :func:`topic_partitions`, :func:`partition_counts` — partition probes
  (a fresh client has no metadata yet, so both wait for it);
* :func:`quiet_kafka_logs` — the commands' output without the clients'
  connection chatter;
* :func:`follow_topics` — a consumer without a consumer group, assigned every
  partition of some topics and positioned at their beginning or end: how the
  CLI, the report, the demo and the champion read the output topics (every
  reader sees every record; nothing is committed).

kafka-python is imported inside the functions: ``import driftline`` stays
cheap for processes that never talk to Kafka. (This module's absolute
``import kafka`` finds kafka-python, not itself: ``driftline.kafka`` is only
ever imported under its package name.)

Examples
--------
>>> from driftline.config import load_settings
>>> settings = load_settings(environ={}, bootstrap_servers="broker-1:9092")
>>> print(unreachable(settings, ConnectionRefusedError()))
cannot reach Kafka at broker-1:9092 (ConnectionRefusedError); check DRIFTLINE_BOOTSTRAP_SERVERS
>>> print(MissingTopicError(["demo.alerts"]))
topic 'demo.alerts' does not exist; run 'driftline topics create'
>>> print(MissingTopicError(["a", "b"]))
topics 'a', 'b' do not exist; run 'driftline topics create'
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Iterable

from .errors import DriftlineError

if TYPE_CHECKING:  # pragma: no cover
    from .config import Settings

__all__ = ["KafkaUnreachableError", "MissingTopicError", "unreachable", "admin_client", "existing_topics",
           "require_topics", "topic_partitions", "partition_counts", "follow_topics", "follow_topics_async",
           "quiet_kafka_logs"]

#: How long a probe waits for a fresh client's first metadata.
METADATA_WAIT_S = 10.0


class KafkaUnreachableError(DriftlineError):
    """No broker of ``DRIFTLINE_BOOTSTRAP_SERVERS`` answered."""


class MissingTopicError(DriftlineError):
    """Topics a process needs do not exist on the broker."""

    def __init__(self, topics: Iterable[str]):
        self.topics = list(topics)
        names = ", ".join(repr(t) for t in self.topics)
        if len(self.topics) == 1:
            message = f"topic {names} does not exist"
        else:
            message = f"topics {names} do not exist"
        super().__init__(message + "; run 'driftline topics create'")


def unreachable(settings: "Settings", error: BaseException) -> KafkaUnreachableError:
    """The error to raise when the broker cannot be reached (``error`` is
    what the client raised; only its type is shown: its text can be long)."""
    return KafkaUnreachableError(f"cannot reach Kafka at {settings.bootstrap_servers} "
                                 f"({type(error).__name__}); check DRIFTLINE_BOOTSTRAP_SERVERS")


def quiet_kafka_logs() -> None:
    """Kafka clients log every connection at INFO; users of the commands
    want their output, not that (still shown with ``--log-level DEBUG``)."""
    import logging

    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("kafka").setLevel(logging.WARNING)


def admin_client(settings: "Settings"):
    """A kafka-python admin client (the caller closes it)."""
    from kafka import KafkaAdminClient

    # KafkaAdminClient logs its whole configuration at DEBUG: kafka_security()
    # hands the password over as a redact.Secret, which shows as '***'.
    return KafkaAdminClient(
        bootstrap_servers=settings.bootstrap_list, client_id="driftline-admin", **settings.kafka_security()
    )


def existing_topics(settings: "Settings") -> set[str]:
    """Names of the topics the broker has (raises kafka-python errors when
    it cannot be reached)."""
    admin = admin_client(settings)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def require_topics(settings: "Settings", names: Iterable[str]) -> None:
    """Raise :class:`MissingTopicError` unless every topic of ``names``
    exists, :class:`KafkaUnreachableError` when the broker cannot be asked.

    Checking up front matters: a producer's metadata request would otherwise
    create a missing topic on brokers that auto-create topics.
    """
    from kafka.errors import KafkaError

    wanted = list(names)
    try:
        existing = existing_topics(settings)
    except KafkaError as error:
        raise unreachable(settings, error) from None
    missing = [name for name in wanted if name not in existing]
    if missing:
        raise MissingTopicError(missing)


def topic_partitions(consumer, topic: str, timeout_s: float = METADATA_WAIT_S) -> set[int]:
    """Partition numbers of ``topic`` seen by a kafka-python ``consumer``,
    waiting up to ``timeout_s`` for metadata (a fresh client has none yet).
    An empty set means the topic does not exist."""
    deadline = time.monotonic() + timeout_s
    partitions = consumer.partitions_for_topic(topic)
    while partitions is None and time.monotonic() < deadline:
        time.sleep(0.2)
        partitions = consumer.partitions_for_topic(topic)
    return set(partitions or ())


def partition_counts(settings: "Settings", names: Iterable[str], client_id: str = "driftline-probe",
                     timeout_s: float = METADATA_WAIT_S) -> dict[str, int]:
    """``topic -> number of partitions`` for every topic of ``names``, from a
    short-lived consumer; :class:`MissingTopicError` names the missing ones."""
    consumer = _consumer(settings, client_id)
    try:
        counts = {name: len(topic_partitions(consumer, name, timeout_s)) for name in names}
    finally:
        consumer.close()
    missing = [name for name, count in counts.items() if not count]
    if missing:
        raise MissingTopicError(missing)
    return counts


def follow_topics(settings: "Settings", topics: Iterable[str], client_id: str, *, from_end: bool = False,
                  required: bool = True, timeout_s: float = METADATA_WAIT_S, **options: Any):
    """A kafka-python consumer without a consumer group, assigned every
    partition of ``topics`` and positioned at their beginning (or, with
    ``from_end``, their end). The caller polls and closes it.

    The positions are resolved before it is returned, so a record published
    after this call is never missed ("ready" means ready).

    Parameters
    ----------
    topics
        Full topic names.
    client_id
        Names the reader in the broker's logs.
    from_end
        Start after the records already on the topics.
    required
        A missing topic raises :class:`MissingTopicError` (else it is skipped).
    options
        More ``KafkaConsumer`` options.

    Raises :class:`KafkaUnreachableError` when no broker answers.
    """
    from kafka import TopicPartition

    consumer = _consumer(settings, client_id, auto_offset_reset="latest" if from_end else "earliest", **options)
    try:
        assigned = []
        for topic in topics:
            partitions = topic_partitions(consumer, topic, timeout_s)
            if not partitions and required:
                raise MissingTopicError([topic])
            assigned += [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        if from_end:
            consumer.seek_to_end()
        else:
            consumer.seek_to_beginning()
        for tp in assigned:  # resolve the positions now
            consumer.position(tp)
    except BaseException:
        _close(consumer)
        raise
    return consumer


async def follow_topics_async(settings: "Settings", topics: Iterable[str], client_id: str, *,
                              from_end: bool = False, retry_s: float = 1.0, **options: Any):
    """The aiokafka twin of :func:`follow_topics`, for asyncio daemons (the
    monitor): a started ``AIOKafkaConsumer`` without a consumer group,
    assigned every partition of ``topics`` and positioned at their beginning
    (or end). The caller reads and stops it.

    A missing topic is waited for (metadata refreshed every ``retry_s``
    seconds) rather than refused: a daemon may start before its topics are
    created. Client errors (an unreachable broker) propagate as aiokafka
    raises them, for the daemon's supervision to classify.
    """
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                                client_id=client_id, auto_offset_reset="latest" if from_end else "earliest",
                                **{**settings.aiokafka_security(), **options})
    await consumer.start()
    try:
        assigned = []
        for topic in topics:
            partitions = consumer.partitions_for_topic(topic)
            while not partitions:
                await consumer._client.force_metadata_update()  # aiokafka has no public refresh
                partitions = consumer.partitions_for_topic(topic)
                if not partitions:
                    await asyncio.sleep(retry_s)
            assigned += [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        if from_end:
            await consumer.seek_to_end(*assigned)
        else:
            await consumer.seek_to_beginning(*assigned)
    except BaseException:
        await consumer.stop()
        raise
    return consumer


def _consumer(settings: "Settings", client_id: str, **options: Any):
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    try:
        return KafkaConsumer(bootstrap_servers=settings.bootstrap_list, client_id=client_id,
                             enable_auto_commit=False, **{**settings.kafka_security(), **options})
    except KafkaError as error:
        raise unreachable(settings, error) from None


def _close(consumer) -> None:
    from kafka.errors import KafkaError

    try:
        consumer.close()
    except (KafkaError, OSError):  # closing a broken connection: nothing left to save
        pass
