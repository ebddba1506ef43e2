"""Benchmark: retrain request consumed -> new version promoted, against a
plain scikit-learn fit of the same pipeline on the same data, in one run.

    .venv/bin/python bench/worker.py [--rows 50000] [--estimator gradient_boosting] [--quiet-ms 1000]

Starts the embedded broker (or uses $DRIFTLINE_BOOTSTRAP_SERVERS), a
temporary registry, publishes ROWS joined records with 10 features (8
numeric, 2 categorical) to the ``labeled`` topic, registers a champion
(trained on 2,000 other rows), then runs the real :class:`driftline.retrain.worker.Worker`
in this process and sends one retrain request. The clock starts when the
worker logs the request as consumed and stops when the run that promoted the
new version ends. The baseline clones the champion's pipeline and fits it on
exactly the rows the worker trained on (the window minus the holdout), and
also on the whole window. Goal: worker time without its cross-validation
(``--cv-folds``, default 5 as in the policy) <= 1.3x the baseline fit.
Before the request the worker's segment store ingests the topic (printed
apart: a one-off cost paid as traffic arrives, not per run).
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from kafka import KafkaProducer  # noqa: E402
from sklearn.base import clone  # noqa: E402

from driftline import events  # noqa: E402
from driftline.broker import EmbeddedBroker  # noqa: E402
from driftline.config import load_settings  # noqa: E402
from driftline.events import LabeledRecord, RetrainRequest  # noqa: E402
from driftline.topics import create_topics  # noqa: E402


def make_rows(n: int, seed: int, start_ts: float) -> list[LabeledRecord]:
    rng = np.random.default_rng(seed)
    num = rng.normal(size=(n, 8))
    cat_a = rng.choice(["red", "green", "blue", "grey"], size=n)
    cat_b = rng.choice([f"s{i}" for i in range(12)], size=n)
    logit = num[:, 0] + 0.7 * num[:, 1] - 0.5 * num[:, 2] * num[:, 3] + (cat_a == "red") * 0.8
    labels = (logit + rng.normal(0, 0.7, n) > 0).astype(int)
    out = []
    for i in range(n):
        features = {f"n{j}": float(num[i, j]) for j in range(8)}
        features["color"] = str(cat_a[i])
        features["segment"] = str(cat_b[i])
        ts = start_ts + i * 0.001
        out.append(LabeledRecord(event_id=f"b{seed}-{i}", model="bench", model_version=1, features=features,
                                 prediction=int(labels[i]), label=int(labels[i]), prediction_timestamp=ts,
                                 label_timestamp=ts))
    return out


class Clock(logging.Handler):
    """Captures when the worker logged the events we time."""

    def __init__(self):
        super().__init__()
        self.seen: dict[str, float] = {}
        self.lines: list[str] = []
        self.done = threading.Event()

    def emit(self, record):
        message = record.getMessage()
        for key in ("event=request_received", "event=window_read", "event=run_ended", "event=run_started"):
            if message.startswith(key):
                self.seen.setdefault(key, record.created)
                self.lines.append(message)
                if key == "event=run_ended":
                    self.done.set()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--estimator", default="gradient_boosting")
    parser.add_argument("--quiet-ms", type=int, default=1000)
    parser.add_argument("--cv-folds", type=int, default=5, help="retrain.cv_folds (0: no cross-validation)")
    args = parser.parse_args()

    from driftline.registry import open_registry
    from driftline.retrain.trainer import train_frame
    from driftline.retrain.worker import Worker, WorkerOptions

    clock = Clock()
    for name in ("driftline.retrain.worker", "driftline.retrain.trainer", "driftline.retrain.data"):
        logging.getLogger(name).addHandler(clock)
        logging.getLogger(name).setLevel(logging.INFO)

    broker = None
    import os

    bootstrap = os.environ.get("DRIFTLINE_BOOTSTRAP_SERVERS")
    if not bootstrap:
        broker = EmbeddedBroker().start()
        bootstrap = broker.bootstrap_servers
    tmp = tempfile.TemporaryDirectory(prefix="dl-bench-worker-")
    worker = None
    try:
        settings = load_settings(environ={}, bootstrap_servers=bootstrap, topic_prefix=f"b{uuid.uuid4().hex[:8]}.",
                                 registry=str(Path(tmp.name) / "registry"))
        create_topics(settings, partitions=4)
        now = events.now()
        rows = make_rows(args.rows, seed=1, start_ts=now - args.rows * 0.001 - 10)
        seed_rows = make_rows(2000, seed=2, start_ts=now - 100_000)
        reg = open_registry(settings, publish=True)
        reg.set_policy("bench", {"retrain": {"estimator": args.estimator, "debounce_s": 0.0,
                                             "window_rows": max(args.rows, 200), "min_rows": 200,
                                             "cv_folds": args.cv_folds}})
        seed_frame = pd.DataFrame([{**r.features, "label": r.label} for r in seed_rows])
        train_frame(reg, "bench", seed_frame, "label")
        champion = reg.load("bench@champion").estimator

        t = time.perf_counter()
        producer = KafkaProducer(bootstrap_servers=settings.bootstrap_list, acks="all", linger_ms=20,
                                 batch_size=1 << 20, max_request_size=events.MAX_MESSAGE_BYTES)
        for start in range(0, len(rows), 2000):
            chunk = rows[start:start + 2000]
            producer.send(settings.topics.labeled, events.encode_many(chunk), key=chunk[0].event_id.encode())
        producer.flush(60)
        publish_s = time.perf_counter() - t

        worker = Worker(settings, WorkerOptions(group_id="bench-worker", session_timeout_ms=6000,
                                                heartbeat_interval_ms=1000, quiet_ms=args.quiet_ms))
        worker.start()
        thread = threading.Thread(target=worker.serve, daemon=True)
        thread.start()
        t = time.perf_counter()
        if worker.store_writer is not None:  # the one-off ingest into the segment store is not the run's cost
            worker.store_writer.sync(600)
        ingest_s = time.perf_counter() - t
        request = RetrainRequest(request_id="bench-1", model="bench", reason="manual", timestamp=events.now())
        producer.send(settings.topics.retrain_requests, events.encode(request))
        producer.flush(30)
        producer.close(10)
        if not clock.done.wait(1800):
            print("worker run did not end within 30 minutes", file=sys.stderr)
            return 1
        v2 = reg.find_version_by_request("bench", "bench-1")
        worker_s = clock.seen["event=run_ended"] - clock.seen["event=request_received"]
        import json as _json

        end_line = next(line for line in clock.lines if line.startswith("event=run_ended"))
        timings = _json.loads(end_line.split("timings=", 1)[1].split(" duration_s=")[0])
        assert v2 is not None and "champion" in v2.aliases, v2

        # baseline: the same pipeline on the same rows, plain scikit-learn
        frame = pd.DataFrame([r.features for r in rows])
        frame = frame.reindex(columns=sorted(frame.columns))
        y = [r.label for r in rows]
        cut = v2.lineage["train_rows"]
        assert cut + v2.lineage["holdout_rows"] == len(rows)
        t = time.perf_counter()
        clone(champion).fit(frame.iloc[:cut], y[:cut])
        fit_train_s = time.perf_counter() - t
        t = time.perf_counter()
        clone(champion).fit(frame, y)
        fit_all_s = time.perf_counter() - t
    finally:
        if worker is not None:
            worker.stop_event.set()
            time.sleep(1.0)
        if broker is not None:
            broker.stop()
        tmp.cleanup()

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"rows={len(rows)} features=10 (8 numeric, 2 categorical) estimator={args.estimator} "
          f"quiet_ms={args.quiet_ms}")
    print(f"publish to labeled:                 {publish_s:8.2f} s")
    print(f"store writer ingest (one-off):      {ingest_s:8.2f} s  (before the request; includes its group join)")
    print(f"worker: request consumed -> promoted {worker_s:8.2f} s")
    print("  phases: " + ", ".join(f"{k}={v:.2f}s" for k, v in timings.items())
          + f"  (reading includes the {args.quiet_ms / 1000:.1f} s quiet wait)")
    fit_s = timings.get("training", 0.0)
    cv_s = timings.get("cross_validating", 0.0)
    print(f"  worker minus its own fit and CV:   {worker_s - fit_s - cv_s:8.2f} s  "
          f"-> vs its own fit {worker_s / fit_s if fit_s else float('nan'):5.2f}x "
          f"({args.cv_folds}-fold cross-validation: {cv_s:.2f} s)")
    print(f"  worker without its CV:             {worker_s - cv_s:8.2f} s   -> vs baseline fit "
          f"{(worker_s - cv_s) / fit_train_s:5.2f}x (goal <= 1.3x)")
    print(f"baseline fit, same {cut} train rows: {fit_train_s:8.2f} s   -> overhead {worker_s / fit_train_s:5.2f}x "
          f"(fit + cross-validation + the rest)")
    print(f"baseline fit, all {len(rows)} rows:     {fit_all_s:8.2f} s   -> ratio    {worker_s / fit_all_s:5.2f}x")
    print(f"candidate accuracy={v2.metrics.get('candidate_accuracy'):.4f} "
          f"champion accuracy={v2.metrics.get('champion_accuracy'):.4f} version={v2.version}")
    print(f"peak RSS {rss_mb:.0f} MiB (whole process: broker client, worker, baseline)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
