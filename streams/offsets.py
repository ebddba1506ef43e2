"""End offsets that do not trust the broker's ListOffsets answer.

faust recovers a table by reading its changelog up to the partition's end
offset as reported by ListOffsets ("latest"). The embedded ``tansu`` broker
reports there the *base offset of the last record batch + 1*: after a batch
of ten records at offsets 1..10 it answers 2, while a Fetch from offset 1
returns all ten records and a correct high watermark of 11
(reproduction: ``bench/tansu_end_offsets.py``). A table recovered with that
answer misses the tail of its changelog — for the monitor, the newest
checkpoint headers and join states, i.e. state whose input offsets may
already be committed.

:func:`verified_end_offsets` therefore fetches from ``listed - 1`` and takes
the largest of the listed offset, the last offset read + 1 and the Fetch
response's high watermark. On Apache Kafka the listed offset is right and
the extra fetch reads one record per partition.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping

__all__ = ["verified_end_offsets", "kafka_error"]

log = logging.getLogger("driftline.monitor")


def kafka_error() -> type[BaseException]:
    """aiokafka's base error class (imported when asked: the CLI does not need aiokafka)."""
    from aiokafka.errors import KafkaError

    return KafkaError


async def verified_end_offsets(
    bootstrap_servers: str,
    listed: Mapping[Any, int | None],
    security: Mapping[str, Any] | None = None,
    timeout_s: float = 10.0,
    quiet: bool = False,
) -> dict[Any, int | None]:
    """Correct end offsets for the partitions in ``listed``.

    Parameters
    ----------
    bootstrap_servers
        Kafka bootstrap servers.
    listed
        ``{TopicPartition-like (topic, partition): end offset from ListOffsets}``.
    security
        Extra aiokafka client options (SASL/TLS).
    timeout_s
        Give up after this long and keep what was verified so far (never
        lower than ``listed``).
    quiet
        Do not log the corrections (for periodic checks).

    Returns
    -------
    dict
        Same keys; values never below the listed ones.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    result = dict(listed)
    # faust's TP and aiokafka's TopicPartition are both (topic, partition) tuples
    todo = {TopicPartition(key[0], key[1]): (key, end) for key, end in listed.items() if end}
    if not todo:
        return result
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False,
                                client_id="driftline-monitor-end-offsets", **dict(security or {}))
    await consumer.start()
    try:
        consumer.assign(list(todo))
        for tp, (_key, end) in todo.items():
            consumer.seek(tp, end - 1)
        waiting = set(todo)
        deadline = time.monotonic() + timeout_s
        while waiting and time.monotonic() < deadline:
            batches = await consumer.getmany(*waiting, timeout_ms=200, max_records=10_000)
            for tp, records in batches.items():
                key, _end = todo[tp]
                if records:
                    result[key] = max(result[key] or 0, records[-1].offset + 1)
            for tp in list(waiting):
                key, _end = todo[tp]
                highwater = consumer.highwater(tp)
                if highwater is not None:
                    result[key] = max(result[key] or 0, highwater)
                    if await consumer.position(tp) >= highwater:
                        waiting.discard(tp)
        if waiting:
            log.warning("could not verify the end offsets of %s", sorted(map(str, waiting)))
    finally:
        await consumer.stop()
    corrected = {str(k): (listed[k], v) for k, v in result.items() if v != listed[k]}
    if corrected and not quiet:
        log.info("end offsets corrected (listed, verified): %s", corrected)
    return result
