"""A faust app on the batch route (driftline.streams.batch_input) for tests/test_batch_input.py.

Handles every record of the test's ``predictions`` and ``labels`` topics by
appending ``topic partition offset`` lines to ``BATCH_LOG``, sleeping
``BATCH_SLEEP`` seconds per batch; ``BATCH_FAIL_AT`` makes the n-th batch raise.
"""

from __future__ import annotations

import asyncio
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def main() -> None:
    import logging

    import faust

    from driftline.config import load_settings
    from driftline.streams.batch_input import batch_app_class

    logging.basicConfig(level=os.environ.get("BATCH_LOGLEVEL", "WARNING"),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = load_settings()
    app = batch_app_class()(os.environ["BATCH_GROUP"], store="memory://", autodiscover=False, web_enabled=False,
                            topic_partitions=4, broker_session_timeout=6.0, broker_heartbeat_interval=1.0,
                            broker_commit_interval=0.5, broker_max_poll_records=100,
                            consumer_auto_offset_reset="earliest", **settings.faust_broker_options())
    topic = app.topic(settings.topics.predictions, settings.topics.labels, key_serializer="raw",
                      value_serializer="raw")
    log = open(os.environ["BATCH_LOG"], "a", buffering=1)
    pause = float(os.environ.get("BATCH_SLEEP", "0"))
    fail_at = int(os.environ.get("BATCH_FAIL_AT", "0"))
    state = {"batches": 0}

    @app.batch_agent(topic)
    async def handle(batches):
        state["batches"] += 1
        if state["batches"] == fail_at:
            raise RuntimeError("injected failure in a batch handler")
        log.write("".join(f"{tp.topic} {tp.partition} {r.offset}\n" for tp, records in batches for r in records))
        if pause:
            await asyncio.sleep(pause)

    faust.Worker(app, loglevel=os.environ.get("BATCH_LOGLEVEL", "WARNING"), quiet=True,
                 override_logging=False).execute_from_commandline()


if __name__ == "__main__":
    main()
