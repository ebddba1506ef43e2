"""The faust App and Table subclasses the monitor runs on.

Built by functions (faust is imported only when a monitor is built, not by
``driftline --help``). faust's services log under the module that defines
their class: this one (``driftline.streams.faust_types``, quietened by
:mod:`driftline.streams.cli`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from driftline.errors import DriftlineError

from .join_store import JoinStore, faust_store_class
from .offsets import kafka_error, verified_end_offsets

if TYPE_CHECKING:  # pragma: no cover
    from .app import MonitorApp

__all__ = ["app_class", "partitioned_table_class", "join_table_class"]

log = logging.getLogger("driftline.monitor")


def app_class() -> type:
    """faust's App (with batch input) as the monitor needs it."""
    from .batch_input import batch_app_class

    class _App(batch_app_class()):
        """faust's App with the changes the monitor needs.

        * Stage 1 reads its input as record batches (:mod:`driftline.streams.batch_input`).
        * Changelog recovery reads to *verified* end offsets
          (:func:`driftline.streams.offsets.verified_end_offsets`): tansu's ListOffsets
          answer stops short of the last record batch.
        * Stopping checkpoints stage 2 first, while the consumer still runs,
          so its offsets can be committed (and faust need not wait for
          acknowledgements that only a checkpoint gives).
        """

        driftline_monitor: "MonitorApp | None" = None  # (faust's own ``monitor`` is its sensor)

        def _new_consumer(self):
            consumer = super()._new_consumer()
            listed_highwaters = consumer.highwaters
            settings = self.driftline_monitor.settings

            async def highwaters(*partitions):
                listed = await listed_highwaters(*partitions)
                return await verified_end_offsets(settings.bootstrap_servers, listed, settings.aiokafka_security())

            consumer.highwaters = highwaters
            return consumer

        def _crash(self, reason: BaseException) -> None:
            # Any part of faust that crashes (its consumer, fetcher, tables)
            # marks the app crashed here: the monitor's one error policy
            # decides (restart after a broker reset, else one line and exit)
            # instead of faust's orderly stop, which would commit the input in hand.
            if self.driftline_monitor is not None and not self._crashed.is_set():
                self.driftline_monitor.resets.on_faust_crash(reason)
            super()._crash(reason)

        async def on_stop(self) -> None:
            try:
                if self.driftline_monitor is not None:
                    await self.driftline_monitor.before_stop()
            except (kafka_error(), DriftlineError, OSError, asyncio.TimeoutError) as error:  # pragma: no cover
                log.warning("final checkpoint failed: %s", error)  # best effort while stopping
            finally:
                await super().on_stop()

    return _App


def partitioned_table_class() -> type:
    """A faust Table whose writes name their changelog partition."""
    import faust

    class PartitionedTable(faust.Table):
        """A table whose changelog partition is chosen by the caller: stage 1
        writes keys of many source partitions from one batch, and timers
        write outside any event."""

        write_partition: int | None = None

        def partition_for_key(self, key: Any) -> int | None:
            if self.write_partition is not None:
                return self.write_partition
            return super().partition_for_key(key)

        def write(self, partition: int, key: str, value: bytes | None) -> None:
            self.write_partition = partition
            try:
                if value is None:
                    if key in self.data:
                        del self[key]
                else:
                    self[key] = value
            finally:
                self.write_partition = None

    return PartitionedTable


def join_table_class(join_store: JoinStore) -> type:
    """Stage 1's table class, its store ``join_store``."""
    base = partitioned_table_class()
    store_class = faust_store_class()

    class JoinTable(base):
        """Stage 1's table: its store is the monitor's JoinStore, behind
        faust's Store API (faust recovers the changelog into it)."""

        def _new_store(self):
            # (the URL only names the store in faust's log lines)
            return store_class(f"{join_store.kind}://", self.app, self, table_name=self.name,
                               key_type=self.key_type, value_type=self.value_type,
                               key_serializer=self.key_serializer, value_serializer=self.value_serializer,
                               options=self.options, join_store=join_store)

    return JoinTable
