"""Atomic, race-free registration with real processes on both backends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from driftline.registry import NotFoundError, open_registry
from tests.registry_fixtures import backend, reg_settings, small_model  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parent.parent

_WRITER = """
import json, os, sys, time
from driftline.config import load_settings
from driftline.registry import open_registry
from tests.registry_fixtures import small_model
writer, ready, go, out, count = sys.argv[1:6]
reg = open_registry(load_settings(), publish=False)
model = small_model()
from driftline.registry import artifacts
artifacts.dumps(model)  # warm up (imports skops) so both writers start at full speed
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.005)
versions = [reg.register_version("churn", model, tags={"writer": writer, "i": str(i)}).version
            for i in range(int(count))]
reg.close()
with open(out, "w") as handle:
    json.dump(versions, handle)
"""

_KILLED = """
import sys, time
from driftline.config import load_settings
from driftline.registry import open_registry
from tests.registry_fixtures import small_model
ready = sys.argv[1]
reg = open_registry(load_settings(), publish=False)
reg.register_version("churn", small_model(1.0))
def pause(version):
    # Inside the transaction: artifact written, row inserted, not committed.
    with open(ready, "w") as handle:
        handle.write(str(version))
    time.sleep(600)
reg._before_commit = pause
reg.register_version("churn", small_model(0.5))
"""


def _env(settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update(DRIFTLINE_REGISTRY=settings.registry, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    if settings.registry_artifacts:
        env["DRIFTLINE_REGISTRY_ARTIFACTS"] = settings.registry_artifacts
    return env


def _wait_for(path: Path, processes: list[subprocess.Popen], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        for process in processes:
            if process.poll() is not None:
                raise AssertionError(f"child exited early with {process.returncode}: {process.stderr.read()}")
        assert time.monotonic() < deadline, f"timed out waiting for {path}"
        time.sleep(0.02)


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        for stream in (process.stdout, process.stderr):
            if stream:
                stream.close()


def test_two_processes_register_100_distinct_gapless_versions(reg_settings, tmp_path):
    per_writer = 50  # both writers also race to create the tables and the model
    go = tmp_path / "go"
    processes = []
    try:
        for writer in ("a", "b"):
            processes.append(subprocess.Popen(
                [sys.executable, "-c", _WRITER, writer, str(tmp_path / f"ready-{writer}"), str(go),
                 str(tmp_path / f"out-{writer}.json"), str(per_writer)],
                cwd=ROOT, env=_env(reg_settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            ))
        for writer in ("a", "b"):
            _wait_for(tmp_path / f"ready-{writer}", processes)
        go.touch()
        for process in processes:
            _, err = process.communicate(timeout=300)
            assert process.returncode == 0, err
    finally:
        _stop(processes)
    got = {w: json.loads((tmp_path / f"out-{w}.json").read_text()) for w in ("a", "b")}
    assert sorted(got["a"] + got["b"]) == list(range(1, 2 * per_writer + 1))
    for versions in got.values():
        assert versions == sorted(versions) and len(versions) == per_writer
    interleaved = sum(1 for v in got["a"] if got["b"] and got["b"][0] < v < got["b"][-1])
    print(f"{reg_settings.registry.split('?')[0]}: versions of writer a inside writer b's range: {interleaved}")
    with open_registry(reg_settings) as reg:
        versions = reg.list_versions("churn")
        assert [v.version for v in versions] == list(range(1, 2 * per_writer + 1))
        for v in versions:  # each row is the registration its writer was told about
            assert v.version in got[v.tags["writer"]]
            assert got[v.tags["writer"]][int(v.tags["i"])] == v.version
        assert len({path for path, _ in reg.store.files()}) == 2 * per_writer
        assert reg.load("churn/1").version.version == 1 and reg.load("churn/100").version.version == 100


def test_kill_during_registration_leaves_no_partial_version(reg_settings, tmp_path):
    ready = tmp_path / "ready"
    process = subprocess.Popen([sys.executable, "-c", _KILLED, str(ready)], cwd=ROOT, env=_env(reg_settings),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(ready, [process])
        assert ready.read_text() == "2"  # the pause is inside the registration of version 2
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL
    finally:
        _stop([process])

    with open_registry(reg_settings) as reg:
        assert [v.version for v in reg.list_versions("churn")] == [1]
        with pytest.raises(NotFoundError):
            reg.resolve("churn/2")
        files = [path for path, _ in reg.store.files()]
        assert len(files) == 2  # version 1's artifact and the killed registration's orphan
        # The lock died with the process: the next registration takes number 2.
        assert reg.register_version("churn", small_model(0.1)).version == 2
        assert reg.gc(min_age_s=3600) == []  # young orphans may still be in flight: kept
        removed = reg.gc(min_age_s=0)
        assert len(removed) == 1 and removed[0] in files
        assert [v.version for v in reg.list_versions("churn")] == [1, 2]
        for ref in ("churn/1", "churn/2"):
            assert reg.load(ref).estimator.predict([[0.0, 1.0]]).tolist() == [0]


def test_gc_removes_stale_temporary_files_only(reg_settings):
    with open_registry(reg_settings) as reg:
        reg.register_version("churn", small_model())
        stale = reg.store.root / "churn" / ".tmp-deadbeef"
        stale.write_bytes(b"half an artifact")
        old = time.time() - 7200
        os.utime(stale, (old, old))
        assert reg.gc() == ["churn/.tmp-deadbeef"]
        assert not stale.exists()
        assert reg.load("churn/1").version.version == 1
