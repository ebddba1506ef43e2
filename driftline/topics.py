"""Create Driftline's topics (idempotent)."""

from __future__ import annotations

from typing import Iterable

from .config import Settings

__all__ = ["create_topics", "admin_client", "existing_topics", "topic_partitions"]


def admin_client(settings: Settings):
    from kafka import KafkaAdminClient

    # KafkaAdminClient logs its whole configuration at DEBUG: kafka_security()
    # hands the password over as a redact.Secret, which shows as '***'.
    return KafkaAdminClient(
        bootstrap_servers=settings.bootstrap_list, client_id="driftline-admin", **settings.kafka_security()
    )


def existing_topics(settings: Settings) -> set[str]:
    """Names of the topics the broker has (raises kafka-python errors when
    it cannot be reached)."""
    admin = admin_client(settings)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def create_topics(
    settings: Settings,
    partitions: int = 4,
    replication_factor: int = 1,
    names: Iterable[str] | None = None,
) -> dict[str, str]:
    """Create every Driftline topic (or ``names``); existing ones are left as
    they are. Returns topic -> ``created`` or ``exists``."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    if not 1 <= partitions <= 10_000:
        raise ValueError(f"partitions must be between 1 and 10000 (got {partitions})")
    if not 1 <= replication_factor <= 32:
        raise ValueError(f"replication_factor must be between 1 and 32 (got {replication_factor})")
    wanted = list(names) if names is not None else settings.topics.all()
    admin = admin_client(settings)
    try:
        existing = set(admin.list_topics())
        result = {name: "exists" for name in wanted if name in existing}
        missing = [name for name in wanted if name not in existing]
        for name in missing:
            try:
                admin.create_topics([NewTopic(name, partitions, replication_factor)])
                result[name] = "created"
            except TopicAlreadyExistsError:  # another process won the race
                result[name] = "exists"
        return result
    finally:
        admin.close()


def topic_partitions(consumer, topic: str, timeout_s: float = 10.0) -> set[int]:
    """Partition numbers of ``topic`` seen by a kafka-python ``consumer``,
    waiting up to ``timeout_s`` for metadata (a fresh client has none yet).
    An empty set means the topic does not exist."""
    import time

    deadline = time.monotonic() + timeout_s
    partitions = consumer.partitions_for_topic(topic)
    while partitions is None and time.monotonic() < deadline:
        time.sleep(0.2)
        partitions = consumer.partitions_for_topic(topic)
    return set(partitions or ())
