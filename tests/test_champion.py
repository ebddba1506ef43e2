"""Champion against the real broker and registry: v1 serves; a v2 registered
and promoted by another process takes over within seconds (and its
predictions carry model_version 2 on the predictions topic); a rollback goes
back to v1; a tampered v3 is refused and v2 keeps serving."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time

import pytest
from sklearn.datasets import load_breast_cancer

from driftline import Champion
from driftline.events import Label, Prediction, ValidationError
from tests.kafka_helpers import read_records

MODEL = "cancer"

# Trains on breast cancer; FLIP=1 learns the flipped labels, so v2's answers
# are the opposite of v1's and the two versions can be told apart.
TRAIN = textwrap.dedent("""
    import os, sys
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from driftline.config import load_settings
    from driftline.registry import open_registry
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    if os.environ["FLIP"] == "1":
        y = 1 - y
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    with open_registry(load_settings(), publish=True) as reg:
        version = reg.register_version("cancer", model)
        if os.environ["PROMOTE"] == "1":
            reg.promote("cancer", version.version)
    print(version.version)
""")


def train(test_env, flip: bool, promote: bool) -> int:
    done = subprocess.run([sys.executable, "-c", TRAIN], env={**test_env, "FLIP": str(int(flip)),
                                                             "PROMOTE": str(int(promote))},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


@pytest.fixture(scope="module")
def rows():
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    return X.iloc[:40], y.iloc[:40].to_numpy()


def wait_for(condition, timeout: float = 20.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"not true within {timeout}s")


def test_champion_follows_promotions_rollbacks_and_refuses_a_tampered_version(settings, test_env, rows, caplog):
    X, y = rows
    assert train(test_env, flip=False, promote=True) == 1
    caplog.set_level(logging.INFO, logger="driftline.champion")
    with Champion(MODEL, settings=settings, refresh_s=300) as champion:  # no periodic help: events only
        first = champion.predict(X)
        assert first.model_version == 1 and champion.version == 1
        assert first.predictions == champion.estimator.predict(X).tolist()
        accuracy_v1 = sum(p == t for p, t in zip(first.predictions, y)) / len(y)
        assert accuracy_v1 > 0.9
        assert len(set(first.event_ids)) == len(X)
        assert all(set(p) == {"0", "1"} and abs(sum(p.values()) - 1) < 1e-9 for p in first.probabilities)
        assert (champion.predict_proba(X).proba == champion.estimator.predict_proba(X)).all()

        assert train(test_env, flip=True, promote=True) == 2           # another process
        took = wait_for(lambda: champion.version == 2)
        assert took < 10
        second = champion.predict(X)
        assert second.model_version == 2
        assert second.predictions == [1 - p for p in first.predictions]  # v2 learnt the flipped labels
        champion.publish_label(second.event_ids[0], y[0])
        champion.flush()
        assert champion.stats["reloads"] == 1

        from driftline.registry import open_registry

        with open_registry(settings, publish=True) as reg:
            reg.rollback(MODEL)
            wait_for(lambda: champion.version == 1)
            assert champion.predict(X).predictions == first.predictions
            reg.promote(MODEL, 2)
            wait_for(lambda: champion.version == 2)

            v3 = train(test_env, flip=False, promote=False)
            assert v3 == 3
            with reg.backend.transaction() as tx:
                (relative,) = tx.one("SELECT artifact_path FROM versions WHERE model = ? AND version = 3", (MODEL,))
            path = reg.store.path(relative)
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0xFF                                  # flip bytes in the artifact
            path.write_bytes(bytes(data))
            failures = champion.stats["reload_failures"]
            reg.promote(MODEL, 3)
            wait_for(lambda: champion.stats["reload_failures"] > failures)
        assert champion.version == 2
        third = champion.predict(X)
        assert third.model_version == 2 and third.predictions == second.predictions
        refused = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any("version 3" in m and "still serving version 2" in m and "ArtifactIntegrityError" in m
                   for m in refused), refused
        # a row with a column the model does not use: checked event by event, published whole
        extra = champion.predict([{**X.iloc[0].to_dict(), "note": "vip"}])
        champion.flush()
        stats = dict(champion.stats)

    assert stats["publish_failures"] == 0 and stats["dropped"] == 0 and stats["refused"] == 0
    published = read_records(settings, "predictions", Prediction, until=lambda m: len(m) >= 1, quiet_s=3.0)
    by_id = {p.event_id: p for p in published}
    assert len(by_id) == len(published) == 5 * len(X) + 1  # six predict calls
    assert by_id[extra.event_ids[0]].features == {**X.iloc[0].to_dict(), "note": "vip"}
    assert by_id[extra.event_ids[0]].prediction == third.predictions[0]
    assert {by_id[e].model_version for e in first.event_ids} == {1}
    assert {by_id[e].model_version for e in second.event_ids} == {2}
    assert {by_id[e].model_version for e in third.event_ids} == {2}
    for event_id, prediction, probabilities in zip(second.event_ids, second.predictions, second.probabilities):
        got = by_id[event_id]
        assert got.prediction == prediction and got.probabilities == probabilities
        assert got.features == X.iloc[second.event_ids.index(event_id)].to_dict()
        assert got.latency_ms is not None and got.latency_ms >= 0
    labels = read_records(settings, "labels", Label, count=1, quiet_s=2.0)
    assert [(l.event_id, l.label) for l in labels] == [(second.event_ids[0], int(y[0]))]


def test_champion_inputs_and_a_broker_that_is_down(settings, test_env, rows, caplog):
    X, _ = rows
    train(test_env, flip=False, promote=True)
    down = settings.with_overrides(bootstrap_servers="127.0.0.1:1")
    caplog.set_level(logging.WARNING, logger="driftline.champion")
    # publishing to a broker that is down neither blocks nor fails predictions
    with Champion(MODEL, settings=down, follow=False, log_every_s=60) as champion:
        started = time.monotonic()
        for _ in range(50):
            result = champion.predict(X.iloc[:2])
            assert result.model_version == 1
        assert time.monotonic() - started < 5
        one = champion.predict(X.iloc[0].to_dict())                   # one row as a dict
        many = champion.predict(X.iloc[:3].to_dict("records"))        # a list of dicts
        assert one.predictions == champion.estimator.predict(X.iloc[:1]).tolist()
        assert many.predictions == champion.estimator.predict(X.iloc[:3]).tolist()
        with pytest.raises(ValidationError) as caught:
            champion.predict({k: v for k, v in X.iloc[0].to_dict().items() if k != "mean radius"})
        assert caught.value.field == "inputs[0].mean radius" and "missing feature" in str(caught.value)
        with pytest.raises(ValidationError) as caught:
            champion.predict([{**X.iloc[0].to_dict(), "mean radius": [1, 2]}])
        assert caught.value.field == "inputs[0].mean radius"
        with pytest.raises(ValidationError) as caught:
            champion.predict([{**X.iloc[0].to_dict(), "mean radius": "big"}])
        assert caught.value.field == "inputs" and "the model refused the input" in str(caught.value)
        champion.close(timeout=15)
        stats = dict(champion.stats)
    assert stats["published"] == 0
    assert stats["publish_failures"] + stats["dropped"] == 50 * 2 + 1 + 3
    warnings = [r.getMessage() for r in caplog.records if r.name == "driftline.champion" and r.levelno >= logging.WARNING]
    assert 1 <= len(warnings) <= 6, warnings  # bounded: one line per kind of trouble per minute
