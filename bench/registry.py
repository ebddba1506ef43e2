"""Registry benchmark: register + load against plain skops, and concurrent
registration throughput on each backend.

    .venv/bin/python bench/registry.py [--repeats 15] [--writers 2] [--per-writer 50]

1. A scaler + one-hot + gradient-boosting pipeline on 10 features: median
   time of ``Registry.register_version`` + ``Registry.load`` against
   ``skops.io.dump`` + ``skops.io.load`` of the same model, to files in the
   same directory, in the same run (goal: at most 1.5x).
2. Versions per second when ``--writers`` processes each register
   ``--per-writer`` versions of one model at once, on SQLite and (when
   reachable) PostgreSQL; checks the versions are 1..N without gaps.
Figures only: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from driftline.config import load_settings  # noqa: E402
from driftline.registry import open_registry  # noqa: E402

PG_URL = os.environ.get("DRIFTLINE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

_WRITER = """
import json, os, sys, time
sys.path.insert(0, {root!r})
from driftline.config import load_settings
from driftline.registry import open_registry, artifacts
from tests.registry_fixtures import small_model
ready, go, out, count = sys.argv[1:5]
reg = open_registry(load_settings(), publish=False)
model = small_model()
artifacts.dumps(model)
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.001)
versions = [reg.register_version("bench", model).version for _ in range(int(count))]
reg.close()
json.dump(versions, open(out, "w"))
"""


def pipeline():
    from tests.registry_fixtures import pipeline_data, pipeline_model

    df, y = pipeline_data(n=2000, seed=0)
    return pipeline_model(n_estimators=100, df=df, y=y), df


def bench_register_load(settings, model, df, repeats: int, workdir: Path) -> dict:
    """Plain skops and the registry alternate in one loop, so load from
    other jobs on the machine hits both alike."""
    import skops.io as sio

    expected = model.predict_proba(df[:50])
    plain_dump, plain_load, plain_load_fixed, reg_register, reg_load = [], [], [], [], []
    with open_registry(settings) as reg:
        for i in range(repeats + 1):
            path = workdir / f"plain-{i}.skops"
            start = time.perf_counter()
            sio.dump(model, path)
            middle = time.perf_counter()
            # skops' documented safe load: find the types to trust, then load
            trusted = sio.get_untrusted_types(file=path)
            loaded = sio.load(path, trusted=trusted)
            end = time.perf_counter()
            assert (loaded.predict_proba(df[:50]) == expected).all()
            start_fixed = time.perf_counter()
            sio.load(path, trusted=trusted)  # a list known in advance: no schema pass
            end_fixed = time.perf_counter()
            path.unlink()
            if i:  # the first round warms caches and imports
                plain_dump.append(middle - start)
                plain_load.append(end - middle)
                plain_load_fixed.append(end_fixed - start_fixed)

            start = time.perf_counter()
            version = reg.register_version("pipeline", model, metrics={"accuracy": 0.9})
            middle = time.perf_counter()
            loaded = reg.load(version.ref).estimator
            end = time.perf_counter()
            assert (loaded.predict_proba(df[:50]) == expected).all()
            if i:
                reg_register.append(middle - start)
                reg_load.append(end - middle)
        size = version.artifact_size
    med = statistics.median
    plain = med([a + b for a, b in zip(plain_dump, plain_load)])
    registry = med([a + b for a, b in zip(reg_register, reg_load)])
    fixed = med([a + b for a, b in zip(plain_dump, plain_load_fixed)])
    return {"plain_fixed_ms": fixed * 1e3, "ratio_fixed": registry / fixed,"artifact_kb": size / 1024, "plain_dump_ms": med(plain_dump) * 1e3, "plain_load_ms": med(plain_load) * 1e3,
            "register_ms": med(reg_register) * 1e3, "load_ms": med(reg_load) * 1e3,
            "plain_total_ms": plain * 1e3, "registry_total_ms": registry * 1e3, "ratio": registry / plain}


def bench_concurrent(settings, writers: int, per_writer: int, workdir: Path) -> dict:
    with open_registry(settings) as reg:
        reg.create_model("bench")
        before = reg.get_model("bench").latest_version or 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update(DRIFTLINE_REGISTRY=settings.registry, PYTHONPATH=str(ROOT))
    if settings.registry_artifacts:
        env["DRIFTLINE_REGISTRY_ARTIFACTS"] = settings.registry_artifacts
    tag = uuid.uuid4().hex[:6]
    go = workdir / f"go-{tag}"
    processes = []
    try:
        for i in range(writers):
            processes.append(subprocess.Popen(
                [sys.executable, "-c", _WRITER.format(root=str(ROOT)), str(workdir / f"ready-{tag}-{i}"), str(go),
                 str(workdir / f"out-{tag}-{i}.json"), str(per_writer)], cwd=ROOT, env=env))
        deadline = time.monotonic() + 120
        while not all((workdir / f"ready-{tag}-{i}").exists() for i in range(writers)):
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise RuntimeError("a writer did not start")
            time.sleep(0.01)
        start = time.perf_counter()
        go.touch()
        for process in processes:
            if process.wait(timeout=600) != 0:
                raise RuntimeError(f"a writer failed with exit code {process.returncode}")
        elapsed = time.perf_counter() - start
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    versions = sorted(v for i in range(writers) for v in json.loads((workdir / f"out-{tag}-{i}.json").read_text()))
    total = writers * per_writer
    assert versions == list(range(before + 1, before + total + 1)), "versions collided or have gaps"
    return {"versions": total, "seconds": elapsed, "versions_per_s": total / elapsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--per-writer", type=int, default=50)
    args = parser.parse_args()

    model, df = pipeline()
    backends = []
    with tempfile.TemporaryDirectory(prefix="driftline-bench-") as tmp:
        workdir = Path(tmp)
        backends.append(("sqlite", load_settings(environ={}, registry=str(workdir / "registry"))))
        schema = None
        try:
            import psycopg

            with psycopg.connect(PG_URL, connect_timeout=3, autocommit=True) as conn:
                schema = f"dlbench_{uuid.uuid4().hex[:10]}"
                conn.execute(f"CREATE SCHEMA {schema}")
            backends.append(("postgres", load_settings(
                environ={}, registry=f"{PG_URL}?options=-csearch_path%3D{schema}",
                registry_artifacts=str(workdir / "pg-artifacts"))))
        except Exception as error:
            print(f"postgres: skipped ({type(error).__name__}: {str(error).strip()[:120]})")
        try:
            print(f"register + load, scaler + one-hot + gradient boosting (100 trees) on 10 features, "
                  f"median of {args.repeats}")
            for name, settings in backends:
                r = bench_register_load(settings, model, df, args.repeats, workdir)
                print(f"  {name:8s} artifact {r['artifact_kb']:.0f} KiB | plain skops dump {r['plain_dump_ms']:.1f} ms "
                      f"+ load {r['plain_load_ms']:.1f} ms = {r['plain_total_ms']:.1f} ms | registry register "
                      f"{r['register_ms']:.1f} ms + load {r['load_ms']:.1f} ms = {r['registry_total_ms']:.1f} ms | "
                      f"ratio {r['ratio']:.2f}x (goal <= 1.5x)")
                print(f"  {'':8s} vs dump + load with a hard-coded trusted list ({r['plain_fixed_ms']:.1f} ms): "
                      f"{r['ratio_fixed']:.2f}x")
            print(f"concurrent registration: {args.writers} processes x {args.per_writer} versions of one model "
                  "(small classifier)")
            for name, settings in backends:
                r = bench_concurrent(settings, 1, args.per_writer, workdir)
                c = bench_concurrent(settings, args.writers, args.per_writer, workdir)
                print(f"  {name:8s} 1 writer: {r['versions_per_s']:.0f} versions/s | {args.writers} writers: "
                      f"{c['versions']} versions in {c['seconds']:.2f} s = {c['versions_per_s']:.0f} versions/s "
                      "(numbers gap-free, no collisions)")
        finally:
            if schema:
                import psycopg

                with psycopg.connect(PG_URL, autocommit=True) as conn:
                    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB "
          "(machine shared with other jobs: figures are indicative)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
