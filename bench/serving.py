"""Benchmark of ``driftline serve`` and :class:`driftline.Champion`.

Requests per second and p50/p99 latency of ``POST /invocations`` (1 and 100
rows per request, ``dataframe_records``) on a real uvicorn process over
loopback, with event publishing on and off (``--no-publish``), against the
same estimator called directly in this process, in the same run. Also
``Champion.predict`` in-process, publishing on and off, which shows the
SDK's own cost without HTTP. Goal: publishing costs at most 10% of
throughput.

The model is a scaler + logistic regression pipeline on scikit-learn's
breast-cancer data (30 features), or with ``--estimator forest`` a 100-tree
random forest; the broker is the embedded tansu. Publishing costs a fixed
amount of CPU per event, so its share of throughput is largest for a cheap
model and many rows per request.

Run: ``.venv/bin/python bench/serving.py [--requests N] [--repeats R] [--estimator forest]``
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._util import peak_rss_mb, row  # noqa: E402
from driftline.broker import EmbeddedBroker, free_port  # noqa: E402
from driftline.config import load_settings  # noqa: E402
from driftline.topics import create_topics  # noqa: E402

MODEL = "cancer"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(latencies: list[float], total_s: float) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms)."""
    return len(latencies) / total_s, percentile(latencies, 0.5) * 1e3, percentile(latencies, 0.99) * 1e3


def timed_loop(n: int, call) -> tuple[float, float, float]:
    call()  # warm-up
    latencies = []
    started = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - t0)
    return summary(latencies, time.perf_counter() - started)


class ServerProcess:
    def __init__(self, env: dict, publish: bool, log_dir: str):
        self.port = free_port()
        self.log = open(os.path.join(log_dir, f"serve-{self.port}.log"), "wb")
        args = [sys.executable, "-m", "driftline", "--log-level", "WARNING", "serve", MODEL, "--port", str(self.port)]
        if not publish:
            args.append("--no-publish")
        self.process = subprocess.Popen(args, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    conn.close()
                    break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.log.close()
                with open(self.log.name, "rb") as log:
                    tail = log.read()[-2000:].decode(errors="replace")
                raise SystemExit(f"driftline serve did not come up (exit {self.process.poll()}):\n{tail}")
            time.sleep(0.2)
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def invoke(self, body: bytes) -> None:
        self.conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise SystemExit(f"HTTP {response.status}: {data[:200]!r}")

    def metric(self, name: str) -> float:
        self.conn.request("GET", "/metrics")
        text = self.conn.getresponse().read().decode()
        return sum(float(line.rpartition(" ")[2]) for line in text.splitlines() if line.startswith(name))

    def stop(self) -> None:
        self.conn.close()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
        self.log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per 1-row run (100-row runs: /10)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per configuration (best kept)")
    parser.add_argument("--estimator", choices=("logistic", "forest"), default="logistic",
                        help="scaler + logistic regression (cheap: publishing's share is largest) or a "
                             "100-tree random forest")
    args = parser.parse_args()

    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    if args.estimator == "logistic":
        estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
        described = "scaler + logistic regression"
    else:
        estimator = RandomForestClassifier(n_estimators=100, random_state=0).fit(X, y)
        described = "random forest (100 trees)"
    records = json.loads(X.to_json(orient="records"))
    work = tempfile.mkdtemp(prefix="driftline-bench-serving-")
    print(f"driftline serve benchmark: breast cancer (30 features), {described}, {os.cpu_count()} CPUs")
    try:
        run(args, estimator, records, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args, estimator, records, work: str) -> None:
    import pandas as pd

    from driftline.champion import Champion
    from driftline.registry import open_registry

    with EmbeddedBroker() as broker:
        settings = load_settings(environ={}, bootstrap_servers=broker.bootstrap_servers, topic_prefix="bench.",
                                 registry=os.path.join(work, "registry"))
        create_topics(settings, partitions=4)
        with open_registry(settings, publish=True) as reg:
            reg.promote(MODEL, reg.register_version(MODEL, estimator).version)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
        env.update(DRIFTLINE_BOOTSTRAP_SERVERS=settings.bootstrap_servers, DRIFTLINE_TOPIC_PREFIX="bench.",
                   DRIFTLINE_REGISTRY=settings.registry)
        results: dict[tuple[str, int], tuple[float, float, float]] = {}

        def keep(key, figures):
            if key not in results or figures[0] > results[key][0]:
                results[key] = figures

        for rows in (1, 100):
            n = args.requests if rows == 1 else max(50, args.requests // 10)
            batch = records[:rows]
            body = json.dumps({"dataframe_records": batch}).encode()
            for _ in range(args.repeats):
                keep(("estimator", rows), timed_loop(
                    n, lambda: estimator.predict_proba(pd.DataFrame.from_records(batch))))
            for publish in (True, False):
                with Champion(MODEL, settings=settings, publish=publish, follow=False) as champion:
                    for _ in range(args.repeats):
                        keep((f"champion publish={publish}", rows), timed_loop(n, lambda: champion.predict(batch)))
                    champion.flush(60)
                    if publish and champion.stats["publish_failures"]:
                        raise SystemExit(f"publishing failed: {champion.stats}")
            for _ in range(args.repeats):
                for publish in (True, False):  # alternated, so both see the same machine
                    server = ServerProcess(env, publish, work)
                    try:
                        keep((f"serve publish={publish}", rows), timed_loop(n, lambda: server.invoke(body)))
                        failures = server.metric("driftline_serve_publish_failures_total")
                    finally:
                        server.stop()
                    if failures:
                        raise SystemExit(f"the server counted {failures} publish failures")

        for rows in (1, 100):
            base = results[("estimator", rows)][0]
            print(f"\n{rows} row(s) per request")
            for name in ("estimator", "champion publish=False", "champion publish=True",
                         "serve publish=False", "serve publish=True"):
                rps, p50, p99 = results[(name, rows)]
                label = {"estimator": "estimator.predict_proba directly",
                         "champion publish=False": "Champion.predict, publishing off",
                         "champion publish=True": "Champion.predict, publishing on",
                         "serve publish=False": "POST /invocations, publishing off",
                         "serve publish=True": "POST /invocations, publishing on"}[name]
                print(row(label, rps, "req/s", base, "x estimator") + f"   p50 {p50:.2f} ms  p99 {p99:.2f} ms")
            for kind in ("champion", "serve"):
                on, off = results[(f"{kind} publish=True", rows)][0], results[(f"{kind} publish=False", rows)][0]
                cost = (1 - on / off) * 100
                print(f"  publishing cost ({kind}): {cost:+.1f}% of throughput "
                      f"({'meets' if cost <= 10 else 'misses'} the 10% goal)")
        print(f"\npeak RSS of this process: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
