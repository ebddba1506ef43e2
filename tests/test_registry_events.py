"""Model events through the real broker (the ``settings`` fixture)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from driftline.broker import free_port
from driftline.events import ModelEvent, decode
from registry import PublishError, open_registry
from tests.kafka_helpers import read_topic
from tests.registry_fixtures import small_model

ROOT = Path(__file__).resolve().parent.parent


def _events(settings, count):
    messages = read_topic(settings, settings.topics.model_events, count=count, timeout_s=60)
    assert len(messages) == count
    return messages, [decode(ModelEvent, m.value)[0] for m in messages]


def test_every_change_is_published_in_order_keyed_by_model(settings):
    with open_registry(settings, publish=True) as reg:
        reg.register_version("churn", small_model(), metrics={"accuracy": 0.8}, request_id="req-1",
                             lineage={"parent_version": None, "rows": 4})
        reg.register_version("churn", small_model(), status="rejected", reason="accuracy 0.7 < champion 0.8",
                             request_id="req-2")
        reg.register_version("churn", small_model(0.1), lineage={"parent_version": 1})
        reg.promote("churn", 1)
        reg.promote("churn", 3, request_id="req-3", metrics={"candidate_accuracy": 0.9, "champion_accuracy": 0.8})
        reg.set_alias("churn", "challenger", 1)
        reg.rollback("churn")
        reg.set_policy("churn", {"monitor": {"cooldown_s": 30}})
        reg.publish_event(ModelEvent(event="failed", model="churn", timestamp=1.0, reason="too few rows"))
    messages, events = _events(settings, 9)
    assert {m.key for m in messages} == {b"churn"} and len({m.partition for m in messages}) == 1
    assert [(e.event, e.version, e.alias) for e in events] == [
        ("registered", 1, None), ("rejected", 2, None), ("registered", 3, None), ("promoted", 1, "champion"),
        ("promoted", 3, "champion"), ("alias_set", 1, "challenger"), ("rolled_back", 1, "champion"),
        ("policy_changed", None, None), ("failed", None, None),
    ]
    registered, rejected, _, _, promoted, _, rolled_back, policy, _ = events
    assert registered.metrics == {"accuracy": 0.8} and registered.request_id == "req-1"
    assert len(registered.details["artifact_sha256"]) == 64
    assert rejected.reason == "accuracy 0.7 < champion 0.8" and rejected.details["status"] == "rejected"
    assert promoted.metrics == {"candidate_accuracy": 0.9, "champion_accuracy": 0.8}
    assert promoted.request_id == "req-3" and promoted.details == {"previous_version": 1}
    assert rolled_back.details == {"previous_version": 3}
    assert policy.details["policy"]["monitor"]["cooldown_s"] == 30.0
    assert events[2].details["parent_version"] == 1


def test_unreachable_broker_fails_loudly_after_the_change_is_saved(tmp_path):
    from driftline.config import load_settings

    settings = load_settings(environ={}, bootstrap_servers=f"127.0.0.1:{free_port()}",
                             registry=str(tmp_path / "registry"))
    with open_registry(settings, publish=True, publish_timeout_s=2) as reg:
        with pytest.raises(PublishError, match="was saved.*'registered' event"):
            reg.register_version("churn", small_model())
    with open_registry(settings, publish=False) as reg:  # no broker needed without publishing
        assert reg.get_version("churn", 1).status == "ready"
        reg.promote("churn", 1)


def test_cli_publishes_when_a_broker_is_configured(settings, test_env):
    with open_registry(settings) as reg:
        reg.register_version("churn", small_model())
    result = subprocess.run([sys.executable, "-m", "registry", "alias", "churn", "champion", "1"], cwd=ROOT,
                            env=test_env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "churn@champion -> version 1"
    _, [event] = _events(settings, 1)
    assert (event.event, event.model, event.version, event.alias) == ("promoted", "churn", 1, "champion")
