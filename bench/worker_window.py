"""Benchmark: the run's training-data read, segment store vs full topic scan, in one run.

    .venv/bin/python bench/worker_window.py [--rows 20000] [--others 10] [--quiet-ms 300] [--repeats 3]

Starts the embedded broker (or uses $DRIFTLINE_BOOTSTRAP_SERVERS), publishes
OTHERS x ROWS joined records of ten other models and ROWS records of model
``bench`` (10 features, bulk messages of 500) to ``labeled``, lets the
store writer (:class:`driftline.retrain.store.StoreWriter`) ingest them, then times
reading the window of ROWS rows of ``bench``:

- from the store (:class:`driftline.retrain.store.StoreWindowReader` without a writer
  to sync: the read itself), best of REPEATS;
- by the old full scan of every partition (:class:`driftline.retrain.data.LabeledReader`),
  which ends only after QUIET_MS without news; printed with and without
  that wait.

Both must return the same rows (checked). The writer's one-off ingest cost
is printed too: it is paid once per record as traffic arrives, not per run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kafka import KafkaProducer  # noqa: E402

from bench._util import best_of, peak_rss_mb  # noqa: E402
from bench.worker import make_rows  # noqa: E402
from driftline import events  # noqa: E402
from driftline.broker import EmbeddedBroker  # noqa: E402
from driftline.config import load_settings  # noqa: E402
from driftline.topics import create_topics  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="window rows (and rows of the model)")
    parser.add_argument("--others", type=int, default=10, help="other models' rows, as a multiple of --rows")
    parser.add_argument("--quiet-ms", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from driftline.retrain.data import LabeledReader
    from driftline.retrain.store import StoreWindowReader, StoreWriter, TrainingStore

    broker = None
    bootstrap = os.environ.get("DRIFTLINE_BOOTSTRAP_SERVERS")
    if not bootstrap:
        broker = EmbeddedBroker().start()
        bootstrap = broker.bootstrap_servers
    tmp = tempfile.TemporaryDirectory(prefix="dl-bench-window-")
    try:
        settings = load_settings(environ={}, bootstrap_servers=bootstrap, topic_prefix=f"b{uuid.uuid4().hex[:8]}.",
                                 registry=str(Path(tmp.name) / "registry"))
        create_topics(settings, partitions=4)
        now = events.now()
        n_other = args.rows * args.others
        producer = KafkaProducer(bootstrap_servers=settings.bootstrap_list, acks="all", linger_ms=20,
                                 batch_size=1 << 20, max_request_size=events.MAX_MESSAGE_BYTES)
        t = time.perf_counter()
        per_model = n_other // 10
        for m in range(10):  # older traffic of ten other models
            rows = make_rows(per_model, seed=100 + m, start_ts=now - 50_000 + m * 1000)
            rows = [r.__class__(**{**r.to_dict(), "model": f"other{m}", "event_id": f"o{m}-{i}"})
                    for i, r in enumerate(rows)]
            for start in range(0, len(rows), 500):
                producer.send(settings.topics.labeled, events.encode_many(rows[start:start + 500], validate=False))
        window_rows = make_rows(args.rows, seed=1, start_ts=now - args.rows * 0.001 - 10)
        for start in range(0, len(window_rows), 500):
            producer.send(settings.topics.labeled, events.encode_many(window_rows[start:start + 500], validate=False))
        producer.flush(120)
        producer.close(10)
        publish_s = time.perf_counter() - t

        store = TrainingStore(Path(tmp.name) / "registry" / "training-data")
        writer = StoreWriter(settings, store, "bench-store", quiet_ms=args.quiet_ms, flush_interval_s=2.0,
                             session_timeout_ms=6000, heartbeat_interval_ms=1000)
        t = time.perf_counter()
        writer.start()
        if not writer.sync(600):
            print("the store writer did not catch up within 10 minutes", file=sys.stderr)
            return 1
        ingest_s = time.perf_counter() - t
        writer.stop()
        total = n_other + args.rows
        assert writer.rows_written == total, (writer.rows_written, total)

        reader = StoreWindowReader(store, topic=settings.topics.labeled)
        store_window = reader.read("bench", window_rows=args.rows)
        store_s = best_of(args.repeats, lambda: reader.read("bench", window_rows=args.rows))

        scan = LabeledReader(settings, quiet_ms=args.quiet_ms)
        t = time.perf_counter()
        scan_window = scan.read("bench", window_rows=args.rows)
        scan_s = time.perf_counter() - t
        assert [r.record.event_id for r in scan_window.rows] == [r.record.event_id for r in store_window.rows]
        assert len(store_window.rows) == args.rows
    finally:
        if broker is not None:
            broker.stop()
        tmp.cleanup()

    quiet = args.quiet_ms / 1000
    print(f"window={args.rows} rows of model bench; topic holds {total} rows ({n_other} of 10 other models), "
          f"4 partitions, messages of 500 records")
    print(f"publish:                                   {publish_s:8.2f} s")
    print(f"store writer ingest (one-off, all models): {ingest_s:8.2f} s  "
          f"({total / ingest_s:,.0f} rows/s, includes group join and the {quiet:.1f} s quiet wait)")
    print(f"run read from the store (best of {args.repeats}):      {store_s:8.3f} s  "
          f"rows read {store_window.rows_read}, segments {len(store_window.segments)} of "
          f"{store_window.segments_listed}")
    print(f"run read by full topic scan:               {scan_s:8.3f} s  "
          f"({scan_s - quiet:.3f} s without the {quiet:.1f} s quiet wait); messages read {scan_window.messages}")
    print(f"-> the store read is {scan_s / store_s:5.1f}x faster ({(scan_s - quiet) / store_s:5.1f}x without "
          f"the scan's quiet wait); same {len(store_window.rows)} rows")
    print(f"peak RSS {peak_rss_mb():.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
