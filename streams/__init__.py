"""Driftline's monitor: a faust-streaming application (``driftline monitor``).

Design
------
Stage 1, join (:mod:`driftline.streams.join`, :mod:`driftline.streams.stage1`, agent ``join``): consumes ``predictions``
and ``labels``, both keyed by ``event_id`` so a prediction and its label share
a partition (co-partitioned; equal partition counts are checked at start).
Bad records go to ``dead-letter`` with the reason (per element for bulk
messages). Join state per ``event_id`` lives in a changelog-backed faust
table whose store is :mod:`driftline.streams.join_store` (RocksDB on disk by default,
reused after a restart; or memory); unmatched predictions expire after the
model's ``label_ttl_s`` (counted for label coverage), joined/expired markers
are kept one TTL more.
Joined pairs go to ``labeled`` keyed by model (the retraining data);
predictions, joined pairs and expirations are forwarded, keyed by model, to
the internal topic ``<app id>-observations`` together with their source
coordinates (partition, offset, index in a bulk message).

Stage 2, per model (:mod:`driftline.streams.stage2`, agent ``models``): the observations
topic is partitioned by model, so exactly one process owns a model and
combines all of its results; it drives :class:`driftline.streams.model_monitor.ModelMonitor`,
publishes alerts, retrain requests and periodic ``metrics`` snapshots.

No loss, no double counting: stage 1 writes a state change only after the
outputs it stands for are on the broker, and faust commits input offsets only
after flushing the producer. Stage 2 checkpoints (monitor state + per-source
watermarks + re-join guards by event_id) into a changelog-backed table before
it acknowledges observations (:mod:`driftline.streams.checkpoint`); replayed
observations at or below a watermark are skipped, and so is a redelivered
observation message (its offset is at or below the model's observation
watermark). The re-join guards only need to cover stage 1's replays, so a
checkpoint drops those whose inputs stage 1 has committed.

Recovery: faust restores both tables from their changelogs when partitions
are assigned, reading to end offsets verified by a fetch
(:mod:`driftline.streams.offsets`): tansu's ListOffsets answer stops at the start of
the last record batch, which would lose the newest checkpoints and join
states (``bench/tansu_end_offsets.py`` reproduces it). Stage 1 writes join
state straight to the table's store and changelog (same records faust
writes, sent as one record batch per changelog partition and input batch;
faust flushes the producer before committing input offsets). Stage 1
validates every record once; join state, ``labeled`` records and
observations are encoded with orjson from the validated dicts, and stage 2
trusts its internal topic (no second validation).

Scale out: run more processes with the same ``--group-id``; Kafka spreads the
input partitions (by ``event_id``) and the observation partitions (by model).
"""
