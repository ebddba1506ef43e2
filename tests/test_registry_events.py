"""Model events through the real broker (the ``settings`` fixture)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from driftline.broker import free_port
from driftline.cli import main
from driftline.events import ModelEvent, decode
from driftline.registry import PublishError, open_registry
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
    result = subprocess.run([sys.executable, "-m", "driftline.registry", "alias", "churn", "champion", "1"], cwd=ROOT,
                            env=test_env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["churn@champion -> version 1",
                                          f"event sent: promoted churn@champion version 1 (to {settings.topics.model_events})"]
    _, [event] = _events(settings, 1)
    assert (event.event, event.model, event.version, event.alias) == ("promoted", "churn", 1, "champion")


# -- every command that changes the registry ---------------------------------------------------


@pytest.fixture
def files(tmp_path):
    """A training CSV, an external skops model and a policy file."""
    import skops.io as sio

    from tests.registry_fixtures import pipeline_data, pipeline_model

    df, y = pipeline_data(n=120, seed=5)
    csv = tmp_path / "train.csv"
    df.assign(label=y).to_csv(csv, index=False)
    artifact = tmp_path / "model.skops"
    sio.dump(pipeline_model(n_estimators=5, df=df, y=y), artifact)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"monitor": {"warmup": 50, "retrain_on": ["metric"]}}))
    return {"csv": str(csv), "artifact": str(artifact), "policy": str(policy)}


@pytest.fixture
def run(monkeypatch, capsys):
    """``driftline ARGS`` in-process with the given DRIFTLINE_* environment:
    (exit code, stdout lines, stderr, seconds)."""

    def go(env: dict, *args: str):
        for key in list(os.environ):
            if key.startswith("DRIFTLINE_"):
                monkeypatch.delenv(key)
        for key, value in env.items():
            if key.startswith("DRIFTLINE_"):
                monkeypatch.setenv(key, value)
        started = time.monotonic()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out.splitlines(), err, time.monotonic() - started

    return go


# (command, events it publishes, in order)
CHANGES = [
    (("train", "churn", "--data", "{csv}", "--target", "label", "--estimator", "logistic_regression"),
     [("policy_changed", None, None), ("registered", 1, None), ("promoted", 1, "champion")]),
    (("registry", "register", "churn", "{artifact}", "--reference", "{csv}", "--target", "label"),
     [("registered", 2, None)]),
    (("registry", "alias", "churn", "challenger", "2"), [("alias_set", 2, "challenger")]),
    (("registry", "unalias", "churn", "challenger"), [("alias_set", None, "challenger")]),
    (("registry", "alias", "churn", "champion", "2"), [("promoted", 2, "champion")]),
    (("registry", "rollback", "churn"), [("rolled_back", 1, "champion")]),
    (("registry", "delete", "churn", "2"), [("deleted", 2, None)]),
    (("registry", "policy", "set", "churn", "{policy}"), [("policy_changed", None, None)]),
]


def _describe(event, version, alias):
    return f"{event} churn" + (f"@{alias}" if alias else "") + (f" version {version}" if version else "")


def test_every_changing_command_publishes_and_says_so(settings, test_env, files, run):
    expected = []
    for command, published in CHANGES:
        code, out, err, _ = run(test_env, *(arg.format(**files) for arg in command))
        assert code == 0, (command, out, err)
        assert [line for line in out if line.startswith("event")] == [
            f"event sent: {_describe(*e)} (to {settings.topics.model_events})" for e in published], command
        expected.extend(published)
    _, events = _events(settings, len(expected))
    assert [(e.event, e.version, e.alias) for e in events] == expected
    assert events[5].details == {"previous_version": 2, "removed": True}  # unalias
    assert events[-1].details["policy"]["monitor"]["retrain_on"] == ["metric"]


def test_broker_down_the_change_is_saved_and_the_command_fails(tmp_path, files, run):
    env = {"DRIFTLINE_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # nothing listens there
           "DRIFTLINE_REGISTRY": str(tmp_path / "registry")}
    for command, published in CHANGES:
        code, out, err, seconds = run(env, *(arg.format(**files) for arg in command), "--event-timeout-s", "2")
        assert code == 1, (command, out, err)
        lines = [line for line in out if line.startswith("event")]
        first, *rest = published
        assert lines[0].startswith(f"event NOT sent: {_describe(*first)}: the registry change was saved, but "
                                   f"the {first[0]!r} event for model 'churn' could not be published"), lines
        # later events of the same command are not attempted: one timeout per command at most
        assert lines[1:] == [f"event NOT sent: {_describe(*e)}: not attempted: an earlier event of this command "
                             "was not sent" for e in rest]
        assert err.strip().splitlines()[-1].startswith("driftline: error: the change is saved, but not every "
                                                       "model event was sent")
        assert seconds < 20, (command, seconds)
    # every change was saved all the same
    with open_registry(_local(env)) as reg:
        assert [v.version for v in reg.list_versions("churn")] == [1]
        assert reg.resolve("churn@champion").version == 1
        assert reg.alias_history("churn", "challenger")[-1].action == "removed"
        assert reg.get_policy("churn").monitor.retrain_on == ("metric",)


def _local(env):
    from driftline.config import load_settings

    return load_settings(environ=env)


def test_no_events_attempts_nothing(tmp_path, files, run):
    """``--no-events``: exit 0, and not even a connection to the broker."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    connections = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                connections.append(listener.accept()[0])
            except socket.timeout:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    env = {"DRIFTLINE_BOOTSTRAP_SERVERS": f"127.0.0.1:{listener.getsockname()[1]}",
           "DRIFTLINE_REGISTRY": str(tmp_path / "registry")}
    try:
        for command, _published in CHANGES:
            code, out, err, _ = run(env, *(arg.format(**files) for arg in command), "--no-events")
            assert code == 0, (command, out, err)
            assert [line for line in out if line.startswith("event")] == []
            assert out[-1] == ("model events off (--no-events): the monitor, the worker and serving processes "
                               "were not told")
        code, out, _, _ = run(env, "registry", "delete", "churn", "2", "--no-events", "--json")
        assert code == 1  # already deleted: the error, not the events
        time.sleep(0.5)
        assert connections == []
    finally:
        stop.set()
        thread.join()
        listener.close()
        for conn in connections:
            conn.close()
    with open_registry(_local(env)) as reg:
        assert [v.version for v in reg.list_versions("churn")] == [1]
