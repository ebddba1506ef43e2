"""``driftline worker`` and ``driftline train`` (heavy imports stay inside the handlers)."""

from __future__ import annotations

import argparse
import json

__all__ = ["register", "run_worker", "run_train", "run_reproduce"]


# WorkerOptions field -> help of its ``driftline worker`` option; the type and
# the default come from WorkerOptions (one copy of each default)
_WORKER_OPTIONS = (
    ("group_id", "consumer group (default {default})"),
    ("metrics_port", "serve Prometheus /metrics here (0: off)"),
    ("concurrency", "runs of different models at once (default {default})"),
    ("session_timeout_ms", "consumer-group session timeout (default {default})"),
    ("heartbeat_interval_ms", "consumer-group heartbeat (default {default})"),
    ("quiet_ms", "training-data read stops after this long without new records (default {default})"),
    ("policy_refresh_s", "re-read every policy this often (also on policy_changed events)"),
    ("shutdown_grace_s", "on SIGTERM/SIGINT wait this long for a running run to end"),
    ("retry_attempts", "tries of a run whose registry database or broker is unreachable (default {default})"),
    ("retry_backoff_s", "pause after the first failed try, doubled after each further one (default {default:g})"),
    ("retry_max_backoff_s", "longest pause between two tries (default {default:g})"),
    ("publish_timeout_s", "how long one delivery of a model event or dead letter may take (default {default:g})"),
    ("broker_log_interval_s", "while the broker is down: one log line per this many seconds (default {default:g})"),
)


def register(subparsers) -> None:
    from .options import WorkerOptions

    worker = subparsers.add_parser(
        "worker", help="run the retraining daemon (retrain requests and schedules -> validated versions)",
        description="Consume retrain requests, run scheduled retrains, train, validate against the champion "
                    "and promote. Status of the last runs: --status (file <registry dir>/worker-status.json).")
    defaults = WorkerOptions()
    for name, text in _WORKER_OPTIONS:
        default = getattr(defaults, name)
        worker.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default,
                            help=text.format(default=default))
    worker.add_argument("--status", action="store_true", help="print the status of the last runs and exit")
    worker.add_argument("--json", action="store_true", help="with --status: print the raw JSON")
    worker.add_argument("--status-file", default=defaults.status_file,
                        help="status file (default <registry dir>/worker-status.json)")
    worker.add_argument("--store-dir", default=None,
                        help="training-data segments (default <registry dir>/training-data)")
    worker.add_argument("--no-store", action="store_true",
                        help="no segment store: every run scans the whole labeled topic (slow)")
    worker.set_defaults(handler=run_worker)

    retrain = subparsers.add_parser(
        "retrain", help="reproduce a version: rebuild its training window from the lineage, refit, compare scores",
        description="Rebuild a version's training window from the training-data store (its lineage names the "
                    "segments and rows), refit with the recorded recipe, seeds and policy, and report whether "
                    "the data hash and every score match. Exit status 0: reproduced; 1: not.")
    retrain.add_argument("model", help="model name")
    retrain.add_argument("--from-lineage", required=True, type=int, metavar="VERSION",
                         help="the version to reproduce")
    retrain.add_argument("--store-dir", default=None,
                         help="training-data segments (default <registry dir>/training-data)")
    retrain.add_argument("--json", action="store_true", help="print the comparison as JSON")
    retrain.set_defaults(handler=run_reproduce)

    train = subparsers.add_parser(
        "train", help="train a model from a CSV file, register it with its reference profile and promote it",
        description="Train the model's recipe on a CSV file and make it the champion (version 1, or the next).")
    train.add_argument("model", help="model name")
    train.add_argument("--data", required=True, help="CSV file with a header row")
    train.add_argument("--target", required=True, help="the label column")
    train.add_argument("--estimator", default=None,
                       help="recipe: logistic_regression, random_forest, gradient_boosting, linear_regression, "
                            "random_forest_regressor, gradient_boosting_regressor (default: the model's policy)")
    train.add_argument("--description", default="", help="model description (new models)")
    from driftline.registry.cli import add_event_options

    add_event_options(train)  # --no-events, --event-timeout-s: like every registry change
    train.set_defaults(handler=run_train)


def run_worker(args: argparse.Namespace) -> int:
    import signal

    from driftline.config import load_settings

    from .resilience import quiet_kafka_logging
    from .options import WorkerOptions
    from .status import format_status, read_status, status_path
    from .worker import Worker

    settings = load_settings()
    if args.status:
        path = status_path(settings, args.status_file)
        data = read_status(path)
        if data is None:
            print(f"no worker status at {path} (has a worker run with this registry?)")
            return 1
        print(json.dumps(data, indent=2, sort_keys=True) if args.json else format_status(data))
        return 0
    options = WorkerOptions(**{name: getattr(args, name) for name, _ in _WORKER_OPTIONS},
                            status_file=args.status_file, store=not args.no_store, store_dir=args.store_dir)
    # kafka-python logs every failed reconnect of every client: at most one of
    # its lines per interval (all of them with --log-level DEBUG)
    quiet_kafka_logging(options.broker_log_interval_s)
    worker = Worker(settings, options)

    def on_signal(signum, _frame):
        worker.stop_event.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    try:
        worker.start()
    except BaseException:
        worker.shutdown()
        raise
    return worker.serve()


def run_reproduce(args: argparse.Namespace) -> int:
    from driftline.config import load_settings
    from driftline.registry import open_registry

    from .lineage import format_reproduction, reproduce

    settings = load_settings()
    reg = open_registry(settings)  # reads only: no model events
    try:
        rep = reproduce(settings, reg, args.model, args.from_lineage, store_dir=args.store_dir)
    finally:
        reg.close()
    print(json.dumps(rep.to_dict(), indent=2, sort_keys=True) if args.json else format_reproduction(rep))
    return 0 if rep.reproduced else 1


def run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    import pandas as pd

    from driftline.config import load_settings
    from driftline.errors import DriftlineError
    from driftline.registry.cli import finish_events, open_for_change

    from .trainer import train_frame

    path = Path(args.data)
    if not path.is_file():
        raise DriftlineError(f"--data {args.data!r} is not a readable file")
    try:
        frame = pd.read_csv(path)
    except (ValueError, OSError, UnicodeDecodeError) as error:
        raise DriftlineError(f"cannot read {args.data!r} as CSV: {error}") from None
    from driftline.extras import error_types

    from .resilience import unavailable

    settings = load_settings()
    reg, report = open_for_change(settings, args)  # events go to settings.bootstrap_servers
    try:
        result = train_frame(reg, args.model, frame, args.target, estimator=args.estimator,
                             description=args.description)
    except error_types("psycopg", "OperationalError", "InterfaceError") as error:
        # the database went away mid-way: one readable line, not the driver's message
        raise DriftlineError(str(unavailable(error, settings))) from None
    finally:
        reg.close()
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(result.metrics.items()))
    cleaning = result.cleaning
    print(f"{args.model}: version {result.version} registered and promoted to champion "
          f"({result.rows} rows used of {cleaning.get('rows_read')}; dropped missing_label="
          f"{cleaning.get('missing_label')} non_finite={cleaning.get('non_finite')}; {metrics})")
    return finish_events(report)
