"""``driftline``: one console script, with a sub-command per job.

Each package adds its own sub-commands through a ``register(subparsers)``
function in its ``cli`` module (``driftline.streams.cli``, ``driftline.retrain.cli``,
``driftline.registry.cli``, ``driftline.demo.cli``). They are named here, not
imported: the core depends on no service, the services plug into it. This
module owns the shared ones (``broker``, ``topics``, ``schema``) and the error
handling: a user error prints one line and exits 1, never a traceback (set
``DRIFTLINE_DEBUG=1`` to see one).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from typing import Callable, Sequence

from . import logs, redact
from .errors import DriftlineError

__all__ = ["main", "build_parser"]

# Packages that contribute sub-commands, in help order.
_PLUGINS = ("driftline.streams.cli", "driftline.retrain.cli", "driftline.registry.cli", "driftline.usercli",
            "driftline.demo.cli", "driftline.serve", "driftline.deadletters")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftline",
        description="Keep machine-learning models healthy in production: monitor, alert, retrain.",
    )
    parser.add_argument("--log-level", default=os.environ.get("DRIFTLINE_LOG_LEVEL", "INFO"),
                        help="logging level (default INFO, or $DRIFTLINE_LOG_LEVEL); the Kafka and faust "
                             "libraries log WARNING and above unless it is DEBUG")
    parser.add_argument("--log-format", choices=("logfmt", "json"),
                        default=os.environ.get("DRIFTLINE_LOG_FORMAT", "logfmt"),
                        help="log lines as logfmt key=value (default, or $DRIFTLINE_LOG_FORMAT) or JSON")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    broker = sub.add_parser("broker", help="run the embedded Kafka-protocol broker (tansu)")
    broker.add_argument("--port", type=int, default=9092, help="TCP port on 127.0.0.1 (default 9092)")
    broker.add_argument("--topics", action="store_true", help="also create the Driftline topics")
    broker.add_argument("--partitions", type=int, default=4, help="partitions per topic with --topics")
    broker.set_defaults(handler=_run_broker)

    topics = sub.add_parser("topics", help="manage Driftline's Kafka topics")
    topics_sub = topics.add_subparsers(dest="topics_command", metavar="ACTION", required=True)
    create = topics_sub.add_parser("create", help="create all Driftline topics (idempotent)")
    create.add_argument("--partitions", type=int, default=4, help="partitions per topic (default 4)")
    create.add_argument("--replication-factor", type=int, default=1)
    create.set_defaults(handler=_create_topics)

    schema = sub.add_parser("schema", help="print the event contract as JSON Schema (for producers in any language)")
    schema.set_defaults(handler=_print_schema)

    for module_name in _PLUGINS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:  # a real import error inside the plug-in
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        logs.configure(args.log_level, args.log_format)
    except ValueError as error:
        parser.error(str(error))
    # Before any client library logs: credentials are masked in every record.
    redact.install()
    handler: Callable[[argparse.Namespace], int | None] = args.handler
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except DriftlineError as error:
        print(redact.redact(f"driftline: error: {error}"), file=sys.stderr)
        return 1
    except Exception as error:  # the command's one error policy: never a traceback for users
        if os.environ.get("DRIFTLINE_DEBUG"):
            raise
        print(redact.redact(f"driftline: error: {type(error).__name__}: {error}"), file=sys.stderr)
        return 1


def wait_for_stop_signal() -> int:
    """Block until SIGINT or SIGTERM; return the signal number."""
    received: list[int] = []
    stop = threading.Event()

    def on_signal(signum, _frame):
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    return received[0]


def schema_text() -> str:
    """The JSON Schema document ``driftline schema`` prints (the committed
    ``schema/driftline-events.schema.json`` holds the same text)."""
    import json

    from .events import json_schema

    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def _print_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(schema_text())
    return 0


def _run_broker(args: argparse.Namespace) -> int:
    from .broker import EmbeddedBroker

    broker = EmbeddedBroker(port=args.port)
    broker.start()
    try:
        if args.topics:
            from .config import load_settings
            from .topics import create_topics

            create_topics(load_settings(bootstrap_servers=broker.bootstrap_servers), partitions=args.partitions)
        print(broker.bootstrap_servers, flush=True)
        wait_for_stop_signal()
    finally:
        broker.stop()
    return 0


def _create_topics(args: argparse.Namespace) -> int:
    from .config import load_settings
    from .topics import create_topics

    result = create_topics(load_settings(), partitions=args.partitions, replication_factor=args.replication_factor)
    for name, state in sorted(result.items()):
        print(f"{name}\t{state}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
