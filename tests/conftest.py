"""Shared fixtures: a real Kafka-protocol broker and per-test topics.

The broker is, in order of preference:

1. an external one, when ``DRIFTLINE_BOOTSTRAP_SERVERS`` is set;
2. Apache Kafka from testcontainers, when a Docker engine answers;
3. the embedded ``tansu`` broker (``driftline.broker.EmbeddedBroker``).

Every test gets its own topic prefix, so tests never see each other's events.
"""

from __future__ import annotations

import os
import uuid
from typing import Iterator

import pytest

from driftline.broker import EmbeddedBroker
from driftline.config import Settings, load_settings
from driftline.topics import create_topics

#: Consumer-group settings that keep joins fast on tansu (DESIGN.md): a
#: group join waits about one session timeout there.
FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def bootstrap_servers() -> Iterator[str]:
    """Bootstrap address of a real broker for the whole test session."""
    external = os.environ.get("DRIFTLINE_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    if os.environ.get("DRIFTLINE_TEST_DOCKER", "1") != "0" and _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap_servers


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:12]}."


@pytest.fixture
def settings(bootstrap_servers: str, topic_prefix: str, tmp_path) -> Settings:
    """Settings for one test: its own topics (created, 4 partitions) and its
    own registry directory."""
    settings = load_settings(
        environ={},
        bootstrap_servers=bootstrap_servers,
        topic_prefix=topic_prefix,
        registry=str(tmp_path / "registry"),
    )
    create_topics(settings, partitions=4)
    return settings


@pytest.fixture
def test_env(settings: Settings) -> dict[str, str]:
    """Environment for a child process that should use this test's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update(
        DRIFTLINE_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
        DRIFTLINE_TOPIC_PREFIX=settings.topic_prefix,
        DRIFTLINE_REGISTRY=settings.registry,
        PYTHONUNBUFFERED="1",
    )
    return env
