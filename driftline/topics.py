"""Create Driftline's topics (idempotent); the other Kafka helpers live in
:mod:`driftline.kafka`."""

from __future__ import annotations

from typing import Iterable

from .config import Settings
# the shared Kafka helpers, still importable from here
from .kafka import admin_client, existing_topics, topic_partitions

__all__ = ["create_topics", "admin_client", "existing_topics", "topic_partitions"]


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
