"""``driftline registry ...`` (also ``python -m driftline.registry``).

Sub-commands: ``models``, ``versions MODEL``, ``show REF``, ``register NAME
FILE.skops --reference DATA.csv``, ``alias MODEL ALIAS VERSION``, ``unalias
MODEL ALIAS``, ``history MODEL``, ``rollback MODEL``, ``delete MODEL VERSION``,
``policy set MODEL FILE``, ``policy show MODEL``, ``gc``. Every one takes
``--json`` for scripts.

Also the user commands that read the registry: ``driftline status``
(registry models, champions and latest versions, the worker's last runs,
and which Driftline topics exist on the broker) and ``driftline report MODEL
[--since WHEN] [--out DIR]`` (an HTML report of one model from the output
topics and the registry, :mod:`driftline.report`).

Every command that changes the registry publishes its model event(s) to the
configured broker (``DRIFTLINE_BOOTSTRAP_SERVERS``, default
``localhost:9092``) — that is how the monitor, the worker and serving
processes learn of the change — and prints ``event sent: ...`` or ``event NOT
sent: <reason>`` per event. The change is saved either way, but a command
whose event was not sent exits 1; ``--no-events`` publishes nothing (exit 0).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from driftline.config import Settings

    from .core import Registry

__all__ = ["register", "add_event_options", "EventReport", "open_for_change", "finish_events", "collect_status"]

#: Default for ``--event-timeout-s``: how long one model event may wait for the broker.
EVENT_TIMEOUT_S = 10.0


def add_event_options(parser: argparse.ArgumentParser) -> None:
    """``--no-events`` and ``--event-timeout-s``, for every command that
    changes the registry (also ``driftline train``)."""
    parser.add_argument("--no-events", "--no-publish", dest="no_events", action="store_true",
                        help="do not publish model events (the daemons will not hear of the change)")
    # publishing is always on now; the old flag is still accepted by scripts that pass it
    parser.add_argument("--publish", dest="publish", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--event-timeout-s", type=_positive_float, default=EVENT_TIMEOUT_S,
                        help=f"how long to wait for the broker per event (default {EVENT_TIMEOUT_S:g})")


def register(subparsers: Any) -> None:
    """Add the ``registry`` command to the ``driftline`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    changing = argparse.ArgumentParser(add_help=False, parents=[common])
    add_event_options(changing)

    parser = subparsers.add_parser("registry", help="the model registry: versions, aliases, policies")
    sub = parser.add_subparsers(dest="registry_command", metavar="ACTION", required=True)

    p = sub.add_parser("models", parents=[common], help="list models")
    p.set_defaults(handler=_models)

    p = sub.add_parser("versions", parents=[common], help="list a model's versions")
    p.add_argument("model")
    p.set_defaults(handler=_versions)

    p = sub.add_parser("show", parents=[common], help="show a version: NAME@ALIAS or NAME/VERSION")
    p.add_argument("ref")
    p.add_argument("--profile", action="store_true", help="include the reference profile")
    p.set_defaults(handler=_show)

    p = sub.add_parser(
        "register", parents=[changing], help="register a scikit-learn model trained elsewhere (a skops file)",
        description="Register ARTIFACT (saved with skops.io.dump; never a pickle) as the next version of NAME, "
                    "with a reference profile built from the reference CSV (features: every column but --target).")
    p.add_argument("model", metavar="NAME")
    p.add_argument("artifact", metavar="ARTIFACT.skops")
    p.add_argument("--reference", required=True, metavar="DATA.csv",
                   help="CSV with a header row: data like the training data (the drift reference)")
    p.add_argument("--target", default=None, help="the label column of the reference CSV (profiled as the target)")
    p.add_argument("--promote", action="store_true", help="also make the new version the champion")
    p.add_argument("--metrics", default=None, metavar="JSON", help='scores, e.g. \'{"accuracy": 0.91}\'')
    p.add_argument("--tags", nargs="+", action="extend", default=[], metavar="K=V", help="string tags")
    p.set_defaults(handler=_register)

    p = sub.add_parser("alias", parents=[changing], help="point an alias at a version (champion = promote)")
    p.add_argument("model")
    p.add_argument("alias")
    p.add_argument("version", type=_positive_int)
    p.set_defaults(handler=_alias)

    p = sub.add_parser("unalias", parents=[changing], help="remove an alias")
    p.add_argument("model")
    p.add_argument("alias")
    p.set_defaults(handler=_unalias)

    p = sub.add_parser("history", parents=[common], help="show the history of a model's aliases")
    p.add_argument("model")
    p.add_argument("--alias", default=None)
    p.set_defaults(handler=_history)

    p = sub.add_parser("rollback", parents=[changing], help="move champion back to the previous champion")
    p.add_argument("model")
    p.set_defaults(handler=_rollback)

    p = sub.add_parser("delete", parents=[changing], help="delete a version (not one an alias points at)")
    p.add_argument("model")
    p.add_argument("version", type=_positive_int)
    p.set_defaults(handler=_delete)

    p = sub.add_parser("gc", parents=[common], help="remove artifact files left by interrupted registrations")
    p.add_argument("--min-age-s", type=float, default=3600.0,
                   help="only files older than this (default 3600; younger ones may be in flight)")
    p.set_defaults(handler=_gc)

    policy = sub.add_parser("policy", help="a model's monitoring and retraining policy")
    policy_sub = policy.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    p = policy_sub.add_parser("set", parents=[changing], help="set a model's policy from a JSON file")
    p.add_argument("model")
    p.add_argument("file")
    p.add_argument("--create", action="store_true", help="create the model if it is not registered yet")
    p.set_defaults(handler=_policy_set)
    p = policy_sub.add_parser("show", parents=[common], help="show a model's policy (defaults if unset)")
    p.add_argument("model")
    p.set_defaults(handler=_policy_show)

    _register_overview(subparsers)


def _register_overview(subparsers: Any) -> None:
    """``driftline status`` and ``driftline report MODEL``: the user commands
    that read the registry (with the topics and the worker's status file)."""
    status = subparsers.add_parser("status", help="registry models, champions, latest versions and topics")
    status.add_argument("--json", action="store_true", help="one JSON object per line")
    status.set_defaults(handler=_cmd_status)

    report = subparsers.add_parser("report", help="write an HTML report of a model (metrics, drift, versions)")
    report.add_argument("model", help="the model's name")
    report.add_argument("--since", default=None,
                        help="only what happened since: a duration (30m, 2h, 7d) or an ISO-8601 time "
                             "(default: everything on the topics)")
    report.add_argument("--out", default="driftline-report",
                        help="directory for index.html (default driftline-report)")
    report.add_argument("--quiet-s", type=float, default=2.0,
                        help="stop reading the topics after this many seconds without news (default 2)")
    report.set_defaults(handler=_cmd_report)


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer version, got {text!r}")
    return int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _open(args: argparse.Namespace):
    """A registry for reading: publishes nothing."""
    from driftline.config import load_settings

    from .core import open_registry

    return open_registry(load_settings(), publish=False)


class EventReport:
    """The publisher of a command that changes the registry: publishes each
    model event and records whether it went out, instead of raising, so a
    command of several steps (register, then promote) saves every change and
    reports every event.

    Parameters
    ----------
    inner
        The real publisher (:class:`driftline.registry.publish.EventPublisher`).
    topic
        Where the events go (for the messages).

    Examples
    --------
    >>> from driftline.registry.publish import NullPublisher
    >>> from driftline.events import ModelEvent
    >>> report = EventReport(NullPublisher(), "driftline.model-events")
    >>> report.publish(ModelEvent(event="deleted", model="churn", version=2, timestamp=1.0))
    >>> report.lines()
    ['event sent: deleted churn version 2 (to driftline.model-events)']
    """

    enabled = True

    def __init__(self, inner: Any, topic: str):
        self.inner = inner
        self.topic = topic
        self.outcomes: list[tuple[Any, str | None]] = []  # (event, None if sent else the reason)

    def publish(self, event: Any) -> None:
        from driftline import events

        from .errors import PublishError

        if any(reason is not None for _, reason in self.outcomes):
            events.validate(event)  # a malformed event is still refused
            # The broker already failed once in this command: do not wait for it again.
            self.outcomes.append((event, "not attempted: an earlier event of this command was not sent"))
            return
        try:
            self.inner.publish(event)
        except PublishError as error:
            self.outcomes.append((event, str(error)))
        else:
            self.outcomes.append((event, None))

    @property
    def all_sent(self) -> bool:
        return all(reason is None for _, reason in self.outcomes)

    def lines(self) -> list[str]:
        out = []
        for event, reason in self.outcomes:
            what = _describe(event)
            out.append(f"event sent: {what} (to {self.topic})" if reason is None else
                       f"event NOT sent: {what}: {reason}")
        return out

    def to_list(self) -> list[dict[str, Any]]:
        return [{"event": e.event, "model": e.model, "version": e.version, "alias": e.alias, "sent": r is None,
                 "error": r} for e, r in self.outcomes]

    def close(self) -> None:
        self.inner.close()


def _describe(event: Any) -> str:
    text = f"{event.event} {event.model}"
    if event.alias is not None:
        text += f"@{event.alias}"
    if event.version is not None:
        text += f" version {event.version}"
    return text


def open_for_change(settings: "Settings", args: argparse.Namespace) -> "tuple[Registry, EventReport | None]":
    """A registry for a command that changes it: ``(registry, report)``.

    Events go to ``settings.bootstrap_servers`` (the default address too,
    like ``driftline train``), unless ``args.no_events``; then ``report`` is
    ``None`` and nothing is attempted.
    """
    import logging

    from .core import open_registry

    if args.no_events:
        return open_registry(settings, publish=False), None
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        # kafka-python logs every failed connection attempt; the outcome is
        # reported once per event on stdout instead.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    reg = open_registry(settings, publish=True, publish_timeout_s=args.event_timeout_s)
    report = EventReport(reg.publisher, settings.topics.model_events)
    reg.publisher = report
    return reg, report


def finish_events(report: "EventReport | None", json_output: bool = False) -> int:
    """Print what happened to the command's events; the exit code: 1 when an
    event was not sent (the change is saved, but the daemons did not hear of
    it), else 0."""
    if report is None:
        if not json_output:
            print("model events off (--no-events): the monitor, the worker and serving processes were not told")
        return 0
    if not json_output:
        for line in report.lines():
            print(line)
    if report.all_sent:
        return 0
    print("driftline: error: the change is saved, but not every model event was sent; the monitor, the worker "
          "and serving processes have not heard of it (check DRIFTLINE_BOOTSTRAP_SERVERS, or pass --no-events)",
          file=sys.stderr)
    return 1


def _change(args: argparse.Namespace):
    from driftline.config import load_settings

    return open_for_change(load_settings(), args)


def _result(args: argparse.Namespace, report: "EventReport | None", data: dict[str, Any], text: str) -> int:
    if args.json:
        data["events"] = None if report is None else report.to_list()
        _print_json(data)
    else:
        print(text)
    return finish_events(report, args.json)


def _time(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def _table(rows: list[list[Any]], header: list[str]) -> None:
    cells = [header] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def _metrics(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items()))


def _models(args: argparse.Namespace) -> int:
    with _open(args) as reg:
        models = reg.list_models()
    if args.json:
        _print_json([m.to_dict() for m in models])
    elif not models:
        print("no models registered")
    else:
        _table([[m.name, m.latest_version, ", ".join(f"{a}={v}" for a, v in m.aliases.items()),
                 "set" if m.has_policy else "default", _time(m.created_at)] for m in models],
               ["MODEL", "LATEST", "ALIASES", "POLICY", "CREATED"])
    return 0


def _versions(args: argparse.Namespace) -> int:
    with _open(args) as reg:
        versions = reg.list_versions(args.model)
    if args.json:
        _print_json([v.to_dict(profile=False) for v in versions])
    elif not versions:
        print(f"model {args.model!r} has no versions")
    else:
        _table([[v.version, v.status, ",".join(v.aliases), _metrics(v.metrics), _time(v.created_at)]
                for v in versions], ["VERSION", "STATUS", "ALIASES", "METRICS", "CREATED"])
    return 0


def _show(args: argparse.Namespace) -> int:
    with _open(args) as reg:
        version = reg.resolve(args.ref)
    data = version.to_dict(profile=args.profile)
    if args.json:
        _print_json(data)
        return 0
    for key in ("model", "version", "status", "aliases", "created_at", "artifact_sha256", "artifact_size",
                "request_id", "reason", "metrics", "params", "tags", "lineage"):
        value = data[key]
        if key == "created_at":
            value = _time(value)
        elif isinstance(value, (dict, list)):
            value = json.dumps(value, sort_keys=True, default=str)
        print(f"{key}: {'-' if value is None else value}")
    if args.profile:
        print("profile: " + json.dumps(data["profile"], sort_keys=True))
    else:
        profile = version.profile
        print("profile: " + ("-" if profile is None else f"{len(profile.get('features', {}))} features, "
                             f"{profile.get('rows')} rows (--profile to show)"))
    return 0


def _register(args: argparse.Namespace) -> int:
    import hashlib
    from pathlib import Path

    import pandas as pd

    from driftline.errors import DriftlineError

    from .core import CHAMPION

    artifact = Path(args.artifact)
    try:
        data = artifact.read_bytes()
    except OSError as error:
        raise DriftlineError(f"cannot read artifact {args.artifact!r}: {error.strerror}") from None
    reference_path = Path(args.reference)
    try:
        reference_bytes = reference_path.read_bytes()
        reference = pd.read_csv(reference_path)
    except OSError as error:
        raise DriftlineError(f"cannot read --reference {args.reference!r}: {error.strerror}") from None
    except (ValueError, UnicodeDecodeError) as error:  # pandas' parser errors are ValueErrors
        raise DriftlineError(f"cannot read --reference {args.reference!r} as CSV: {error}") from None
    metrics = _parse_metrics(args.metrics)
    tags = _parse_tags(args.tags)
    lineage = {"source": "external", "artifact_file": artifact.name, "reference_file": reference_path.name,
               "reference_rows": int(len(reference)), "reference_sha256": hashlib.sha256(reference_bytes).hexdigest(),
               "target": args.target, "parent_version": None}
    reg, report = _change(args)
    with reg:
        version = reg.register_artifact(args.model, data, reference=reference, target=args.target,
                                        metrics=metrics, tags=tags, lineage=lineage)
        if args.promote:
            reg.promote(args.model, version.version)
    features = len((version.profile or {}).get("features", {}))
    text = (f"{args.model}: version {version.version} registered from {artifact.name} "
            f"(sha256 {version.artifact_sha256[:12]}, profile of {features} features, {len(reference)} rows"
            + (f", target {args.target}" if args.target else "") + ")"
            + (f"; promoted to {CHAMPION}" if args.promote else ""))
    return _result(args, report, {"model": args.model, "version": version.version,
                                  "artifact_sha256": version.artifact_sha256, "promoted": args.promote}, text)


def _parse_metrics(text: str | None) -> dict[str, Any]:
    from driftline.errors import DriftlineError

    if text is None:
        return {}
    try:
        value = json.loads(text)
    except ValueError as error:
        raise DriftlineError(f"--metrics {text!r} is not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise DriftlineError(f"--metrics must be a JSON object of name -> number (got {text!r})")
    return value


def _parse_tags(items: list[str]) -> dict[str, str]:
    from driftline.errors import DriftlineError

    tags = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DriftlineError(f"--tags {item!r} is invalid: expected KEY=VALUE")
        tags[key] = value
    return tags


def _alias(args: argparse.Namespace) -> int:
    reg, report = _change(args)
    with reg:
        version = reg.set_alias(args.model, args.alias, args.version)
    return _result(args, report, {"model": args.model, "alias": args.alias, "version": version.version},
                   f"{args.model}@{args.alias} -> version {version.version}")


def _unalias(args: argparse.Namespace) -> int:
    reg, report = _change(args)
    with reg:
        reg.remove_alias(args.model, args.alias)
    return _result(args, report, {"model": args.model, "alias": args.alias, "version": None},
                   f"{args.model}@{args.alias} removed")


def _history(args: argparse.Namespace) -> int:
    with _open(args) as reg:
        moves = reg.alias_history(args.model, args.alias)
    if args.json:
        _print_json([m.to_dict() for m in moves])
    elif not moves:
        print(f"model {args.model!r} has no alias history")
    else:
        _table([[_time(m.at), m.alias, m.action, m.previous_version, m.version, m.request_id] for m in moves],
               ["AT", "ALIAS", "ACTION", "FROM", "TO", "REQUEST"])
    return 0


def _rollback(args: argparse.Namespace) -> int:
    reg, report = _change(args)
    with reg:
        version = reg.rollback(args.model)
    return _result(args, report, {"model": args.model, "alias": "champion", "version": version.version},
                   f"{args.model}@champion rolled back to version {version.version}")


def _delete(args: argparse.Namespace) -> int:
    reg, report = _change(args)
    with reg:
        reg.delete_version(args.model, args.version)
    return _result(args, report, {"model": args.model, "deleted": args.version},
                   f"deleted version {args.version} of {args.model}")


def _gc(args: argparse.Namespace) -> int:
    with _open(args) as reg:
        removed = reg.gc(min_age_s=args.min_age_s)
    if args.json:
        _print_json({"removed": removed})
    else:
        print(f"removed {len(removed)} unreferenced artifact file(s)")
        for path in removed:
            print(path)
    return 0


def _policy_set(args: argparse.Namespace) -> int:
    from driftline.policy import load_policy_file

    from .errors import NotFoundError

    policy = load_policy_file(args.file)  # PolicyError names the bad setting
    reg, report = _change(args)
    with reg:
        if not args.create:
            try:
                reg.get_model(args.model)
            except NotFoundError as error:
                # a typo in the name would otherwise create a model nobody monitors
                raise NotFoundError(f"{error}; pass --create to set the policy of a new model") from None
        stored = reg.set_policy(args.model, policy)
    return _result(args, report, {"model": args.model, "policy": stored.to_dict()},
                   f"policy of {args.model} updated")


def _policy_show(args: argparse.Namespace) -> int:
    with _open(args) as reg:
        policy = reg.get_policy(args.model, missing_ok=False)
    if args.json:
        _print_json(policy.to_dict())
    else:
        print(policy.to_json())
    return 0


# -- driftline status ---------------------------------------------------------------------------


def collect_status(settings: "Settings") -> dict[str, Any]:
    """Topics present on the broker, the registry's models and the worker's
    last run per model (from its status file, :mod:`driftline.worker_status`)."""
    from kafka.errors import KafkaError

    from driftline.errors import DriftlineError
    from driftline.kafka import existing_topics
    from driftline.redact import redact
    from driftline.worker_status import last_runs, read_status, status_path

    from .core import open_registry

    status: dict[str, Any] = {"bootstrap_servers": settings.bootstrap_servers, "registry": settings.registry_location}
    try:
        existing = existing_topics(settings)
        status["topics"] = {name: name in existing for name in settings.topics.all()}
        status["broker_error"] = None
    except KafkaError as error:  # status must still show the registry
        status["topics"] = {}
        status["broker_error"] = redact(f"{type(error).__name__}: {error}")
    status["models"] = []
    status["registry_error"] = None
    if not settings.registry_is_database and not Path(settings.registry).exists():
        status["registry_error"] = f"no registry at {settings.registry_location} yet"
        return status
    try:
        reg = open_registry(settings, publish=False)
    except (DriftlineError, OSError) as error:  # a bad location, an unreachable database, a missing extra
        status["registry_error"] = redact(f"{type(error).__name__}: {error}")
        return status
    runs = last_runs(read_status(status_path(settings)))
    try:
        for model in reg.list_models():
            name = getattr(model, "name", model)
            versions = sorted(reg.list_versions(name), key=lambda v: v.version)
            champion = next((v for v in versions if "champion" in (v.aliases or [])), None)
            latest = versions[-1] if versions else None
            status["models"].append({
                "model": name,
                "versions": len(versions),
                "champion": champion.version if champion else None,
                "champion_metrics": dict(champion.metrics or {}) if champion else {},
                "latest": latest.version if latest else None,
                "latest_status": latest.status if latest else None,
                "latest_created_at": _as_epoch(latest.created_at) if latest else None,
                "latest_reason": getattr(latest, "reason", None) if latest else None,
                "last_run": runs.get(name),
            })
    finally:
        reg.close()
    return status


def _as_epoch(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.timestamp()
    return value


def _cmd_status(args: argparse.Namespace) -> int:
    from driftline.config import load_settings
    from driftline.kafka import quiet_kafka_logs
    from driftline.report.page import format_number as _num
    from driftline.usercli import local_time, print_json_line

    quiet_kafka_logs()
    status = collect_status(load_settings())
    if args.json:
        print_json_line({"type": "broker", "bootstrap_servers": status["bootstrap_servers"],
                         "error": status["broker_error"]})
        for topic, present in status["topics"].items():
            print_json_line({"type": "topic", "topic": topic, "present": present})
        print_json_line({"type": "registry", "registry": status["registry"], "error": status["registry_error"]})
        for model in status["models"]:
            print_json_line({"type": "model", **model})
        return 0
    print(f"broker    {status['bootstrap_servers']}"
          + (f"  UNREACHABLE: {status['broker_error']}" if status["broker_error"] else ""))
    for topic, present in status["topics"].items():
        print(f"  topic   {topic:<40} {'ok' if present else 'MISSING'}")
    print(f"registry  {status['registry']}" + (f"  ({status['registry_error']})" if status["registry_error"] else ""))
    if not status["models"] and not status["registry_error"]:
        print("  no models registered yet")
    for m in status["models"]:
        champion = f"v{m['champion']}" if m["champion"] is not None else "none"
        shown = ", ".join(f"{k}={_num(v)}" for k, v in sorted(m["champion_metrics"].items())[:4])
        created = local_time(m["latest_created_at"]) if isinstance(m["latest_created_at"], (int, float)) else (
            m["latest_created_at"] or "-")
        print(f"  model   {m['model']:<20} champion {champion:<5} versions {m['versions']:<3} "
              f"latest v{m['latest']} {m['latest_status']} at {created}" + (f"  [{shown}]" if shown else ""))
        run = m.get("last_run")
        if run:
            ended = local_time(run["ended_at"]) if isinstance(run.get("ended_at"), (int, float)) else "-"
            print(f"          last run: {run.get('outcome')} (trigger {run.get('trigger')}, "
                  f"{_num(run.get('duration_s'))}s, {run.get('rows')} rows) at {ended}"
                  + (f": {run['reason']}" if run.get("reason") else ""))
    missing = [t for t, present in status["topics"].items() if not present]
    return 1 if status["broker_error"] or missing else 0


# -- driftline report -----------------------------------------------------------------------------


def _cmd_report(args: argparse.Namespace) -> int:
    from driftline.config import load_settings
    from driftline.errors import DriftlineError
    from driftline.events import validate_name
    from driftline.kafka import quiet_kafka_logs
    from driftline.report import gather, parse_since, write_report

    validate_name(args.model, "model")
    since = parse_since(args.since) if args.since is not None else None
    settings = load_settings()
    quiet_kafka_logs()
    registry, registry_error = _open_registry_for_reading(settings)
    try:
        data = gather(settings, args.model, registry=registry, since=since, quiet_s=args.quiet_s)
    finally:
        if registry is not None:
            registry.close()
    data.registry_error = data.registry_error or registry_error
    if not data.snapshots and not data.versions:
        raise DriftlineError(f"nothing known about model {args.model!r}: no metrics on "
                             f"{settings.topics.metrics} and no versions in the registry")
    path = write_report(data, args.out)
    print(f"report of {args.model}: {len(data.snapshots)} snapshot(s), {len(data.alerts)} alert(s), "
          f"{len(data.versions)} version(s); drifted features: {', '.join(data.drifted_features) or 'none'}")
    print(path.resolve())
    return 0


def _open_registry_for_reading(settings: "Settings") -> "tuple[Registry | None, str | None]":
    """The registry, or ``None`` and why not (a report still shows the topics)."""
    from driftline.redact import redact

    from .core import open_registry
    from .errors import RegistryError

    if not settings.registry_is_database and not Path(settings.registry).exists():
        return None, f"no registry at {settings.registry_location}"
    try:
        return open_registry(settings, publish=False), None
    except RegistryError as error:
        return None, redact(str(error))
