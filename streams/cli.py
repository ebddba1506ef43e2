"""``driftline monitor`` (also ``python -m driftline.streams``): run the monitor."""

from __future__ import annotations

import argparse

__all__ = ["register", "build_parser", "run"]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    from .options import STATE_STORES, option_default as default

    def seconds(flag: str, field: str, what: str) -> None:
        parser.add_argument(flag, type=float, default=default(field), help=f"{what} (default {default(field):g})")

    parser.add_argument("--group-id", default=default("group_id"),
                        help="consumer group / faust app id shared by all monitor processes "
                             "(default: <topic prefix>monitor)")
    parser.add_argument("--metrics-port", type=int, default=default("metrics_port"),
                        help="serve Prometheus /metrics here (0: off)")
    parser.add_argument("--data-dir", default=default("data_dir"), help="faust data directory")
    seconds("--snapshot-interval", "snapshot_interval", "seconds between metric snapshots")
    seconds("--checkpoint-interval", "checkpoint_interval", "seconds between state checkpoints")
    parser.add_argument("--checkpoint-events", type=int, default=default("checkpoint_events"),
                        help=f"observation messages between checkpoints (default {default('checkpoint_events')})")
    parser.add_argument("--batch-size", type=int, default=default("batch_size"),
                        help="stage 1 reads and joins up to this many input messages at a time "
                             f"(default {default('batch_size')})")
    parser.add_argument("--batch-events", type=int, default=default("batch_events"),
                        help="stage 1 joins at most this many events at a time (a read of bulk messages is "
                             f"split into parts of whole messages; default {default('batch_events'):,})")
    parser.add_argument("--web-port", type=int, default=default("web_port"),
                        help="faust web server port (default: off)")
    seconds("--session-timeout", "session_timeout", "consumer-group session timeout in seconds")
    seconds("--policy-refresh-s", "policy_refresh_interval",
            "seconds between re-reads of the models' policies from the registry")
    seconds("--reset-check-s", "reset_check_interval",
            "seconds between checks for a broker that lost the monitor's data")
    seconds("--series-grace-s", "series_grace_s",
            "seconds a model version that is no longer served keeps its Prometheus series after its last event")
    parser.add_argument("--state", choices=STATE_STORES, default=default("state"),
                        help="where the join state lives: rocksdb (under --data-dir, reused after a restart: "
                             "only the changelog's tail is read again) or memory (rebuilt from the whole "
                             f"changelog at each start); default {default('state')}")
    parser.add_argument("--state-memory-mb", type=int, default=default("state_memory_mb"),
                        help="RocksDB's memory for the join state: block cache and write buffers "
                             f"(default {default('state_memory_mb')})")
    parser.add_argument("--reset-state", action="store_true",
                        help="delete the monitor's state (join state, model checkpoints, data directory) "
                             "before starting; stop every monitor of the group first")


def run(args: argparse.Namespace) -> int:
    import logging

    from driftline.config import load_settings

    from .app import create_monitor
    from .options import MonitorOptions

    options = MonitorOptions(
        group_id=args.group_id, data_dir=args.data_dir, metrics_port=args.metrics_port,
        web_port=args.web_port, snapshot_interval=args.snapshot_interval,
        checkpoint_interval=args.checkpoint_interval, checkpoint_events=args.checkpoint_events,
        session_timeout=args.session_timeout, batch_size=args.batch_size,
        batch_events=args.batch_events,
        heartbeat_interval=min(1.0, args.session_timeout / 3), policy_refresh_interval=args.policy_refresh_s,
        reset_check_interval=args.reset_check_s, reset_state=args.reset_state,
        series_grace_s=args.series_grace_s, state=args.state, state_memory_mb=args.state_memory_mb,
    )
    root_level = logging.getLogger().getEffectiveLevel()
    if root_level > logging.DEBUG:
        # faust, mode and the Kafka clients log every rebalance step and
        # producer-buffer flush at INFO/WARNING: keep them for --log-level DEBUG.
        # "driftline.streams.faust_types" is faust's own service logger for the app and
        # tables defined there ("[^-_App]: Starting..."); the monitor's is driftline.monitor.
        for name in ("faust", "mode", "aiokafka", "kafka", "driftline.streams.faust_types"):
            logging.getLogger(name).setLevel(max(root_level, logging.WARNING))
        logging.getLogger("faust.transport.producer").setLevel(max(root_level, logging.ERROR))
    monitor = create_monitor(load_settings(), options)
    level = logging.getLevelName(root_level)
    return monitor.run(loglevel=level if isinstance(level, str) else "INFO")


def register(subparsers) -> None:
    """Add ``monitor`` to the ``driftline`` command."""
    parser = subparsers.add_parser("monitor", help="run the monitor: join, metrics, drift, alerts (faust)")
    _add_arguments(parser)
    parser.set_defaults(handler=run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m driftline.streams", description="Run the Driftline monitor.")
    parser.add_argument("--log-level", default="INFO")
    _add_arguments(parser)
    parser.set_defaults(handler=run)
    return parser
