"""``driftline dead-letters``: readable dead letters, the index of a bad
element in a bulk message, and ``--replay`` after the cause is fixed — with
a real monitor process on the real broker."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from kafka import KafkaProducer

from driftline.broker import free_port
from driftline.events import DeadLetter
from driftline.policy import Policy
from driftline.sdk import partition_for
from tests.kafka_helpers import read_records, read_topic
from tests.test_monitor_faults import _start, _wait_healthy
from tests.process_helpers import stop
from tests.test_monitor_pipeline import latest_snapshots
from tests.worker_helpers import wait_until

CLI = [sys.executable, "-m", "driftline"]


def _cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + args, env=env, capture_output=True, text=True, timeout=120)


def _same_partition(event_id: str, prefix: str) -> str:
    target = partition_for(event_id, 4)
    return next(f"{prefix}{i}" for i in range(1000) if partition_for(f"{prefix}{i}", 4) == target)


def test_dead_letters_show_the_bulk_index_and_replay_puts_a_fixed_label_back(settings, test_env, tmp_path):
    from driftline.registry import open_registry

    registry = open_registry(settings, publish=False)
    registry.create_model("churn", exist_ok=True)
    registry.set_policy("churn", Policy.from_dict({"monitor": {"label_ttl_s": 2}}))
    registry.close()
    port = free_port()
    proc = _start(tmp_path, test_env, "monitor", "--metrics-port", str(port))
    try:
        _wait_healthy(port, proc)
        now = time.time()

        # "steady" (default label TTL) for pairs that must join whatever the machine's pace;
        # "churn" (2 s) for labels that must expire
        def prediction(event_id, model="steady"):
            return dict(event_id=event_id, model=model, model_version=1, timestamp=now, features={"x": 1.5},
                        prediction=1)

        def label(event_id, model="steady"):
            return dict(event_id=event_id, model=model, label=1, timestamp=now)

        producer = KafkaProducer(bootstrap_servers=settings.bootstrap_list, acks="all")
        # a churn prediction without label: the monitor then follows churn (and reloads its policy)
        producer.send(settings.topics.predictions, json.dumps(prediction("c0", "churn")).encode(), key=b"c0")
        for i in range(10):
            producer.send(settings.topics.predictions, json.dumps(prediction(f"p{i}")).encode(), key=f"p{i}".encode())
        orphan = _same_partition("p0", "orphan")
        # labels in bulk: element 1 has no prediction (yet) and expires after the 2 s label TTL
        producer.send(settings.topics.labels, json.dumps([label("p0"), label(orphan, "churn")]).encode(), key=b"p0",
                      partition=partition_for("p0", 4))
        for i in range(1, 10):
            producer.send(settings.topics.labels, json.dumps(label(f"p{i}")).encode(), key=f"p{i}".encode())
        # predictions in bulk: element 1 breaks the contract
        producer.send(settings.topics.predictions, json.dumps([prediction("g0"), {"event_id": "g1"}]).encode(),
                      key=b"g0", partition=partition_for("g0", 4))
        producer.flush()
        # single-event messages (not bulk): a duplicate, a label that expires; no index
        producer.send(settings.topics.predictions, json.dumps(prediction("p1")).encode(), key=b"p1")
        producer.send(settings.topics.labels, json.dumps(label("lonely", "churn")).encode(), key=b"lonely")
        producer.flush()
        letters = read_records(settings, "dead_letter", DeadLetter, count=4, timeout_s=90)
        latest_snapshots(settings, {"steady": {"joined": 10}})

        shown = _cli(["dead-letters", "--json", "--quiet-s", "1"], test_env)
        assert shown.returncode == 0, shown.stderr
        by_class = {(row["reason_class"], row["index"]): row for row in map(json.loads, shown.stdout.splitlines())}
        assert set(by_class) == {("unmatched_label", 1), ("unmatched_label", None), ("invalid_field", 1),
                                 ("duplicate", None)}, shown.stdout
        assert "element" not in by_class["duplicate", None]
        assert json.loads(by_class["unmatched_label", None]["original_text"])["event_id"] == "lonely"
        unmatched, invalid = by_class["unmatched_label", 1], by_class["invalid_field", 1]
        assert (unmatched["source_topic"], unmatched["partition"], unmatched["index"]) == (
            settings.topics.labels, partition_for("p0", 4), 1)
        assert json.loads(unmatched["original_text"])["event_id"] == orphan  # the element alone
        assert (invalid["source_topic"], invalid["index"], invalid["field"]) == (settings.topics.predictions, 1,
                                                                                 "model")
        assert invalid["element"] == {"event_id": "g1"}
        assert sorted(letter.error_id for letter in letters) == sorted(r["error_id"] for r in by_class.values())

        readable = _cli(["dead-letters", "--reason", "missing required", "--quiet-s", "1"], test_env)
        assert readable.returncode == 0, readable.stderr
        heading, element, original = readable.stdout.splitlines()
        assert f"{settings.topics.predictions} partition {partition_for('g0', 4)} offset " in heading
        assert " index 1  invalid_field  [1].model: missing required field" in heading
        assert element == '    element: {"event_id":"g1"}'
        assert original.startswith('    original: [{"event_id": "g0"')

        # the fix: a longer label TTL (a policy_changed event reaches the monitor) and the missing prediction
        registry = open_registry(settings, publish=True)
        registry.set_policy("churn", Policy.from_dict({"monitor": {"label_ttl_s": 600}}))
        registry.close()
        wait_until(lambda: "event=policy_reloaded model=churn" in (tmp_path / "monitor.log").read_text(),
                   what="the monitor's policy reload")
        producer.send(settings.topics.predictions, json.dumps(prediction(orphan, "churn")).encode(),
                      key=orphan.encode())
        producer.flush()
        producer.close()

        replay = _cli(["dead-letters", "--reason", "unmatched_label", "--id", unmatched["error_id"], "--replay",
                       "--quiet-s", "1"], test_env)
        assert replay.returncode == 0, replay.stdout + replay.stderr
        assert replay.stdout.startswith(f"replayed {unmatched['error_id']} to {settings.topics.labels} partition "
                                        f"{partition_for('p0', 4)}"), replay.stdout
        latest_snapshots(settings, {"churn": {"joined": 1}})  # the monitor counted the replayed label
        # what went back: the element alone, keyed by its event_id, marked as a replay
        [back] = [m for m in read_topic(settings, settings.topics.labels, quiet_s=1) if m.headers]
        assert back.headers == [("driftline-replay-of", unmatched["error_id"].encode())]
        assert back.key == orphan.encode() and json.loads(back.value)["event_id"] == orphan
        assert len(read_records(settings, "dead_letter", DeadLetter, quiet_s=1)) == 4  # nothing dead-lettered anew
    finally:
        stop(proc, 20)


def test_replay_refuses_without_a_selection_and_with_follow(test_env):
    for args, text in ((["--replay"], "--replay needs a selection"),
                       (["--replay", "--all", "--follow"], "not with --follow"),
                       (["--since", "yesterday"], "--since 'yesterday'")):
        result = _cli(["dead-letters", *args], test_env)
        assert result.returncode == 1 and text in result.stderr, result.stderr
