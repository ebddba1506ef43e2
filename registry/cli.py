"""``driftline registry ...`` (also ``python -m registry``).

Sub-commands: ``models``, ``versions MODEL``, ``show REF``, ``alias MODEL
ALIAS VERSION``, ``unalias MODEL ALIAS``, ``history MODEL``, ``rollback
MODEL``, ``delete MODEL VERSION``, ``policy set MODEL FILE``, ``policy show
MODEL``, ``gc``. Every one takes ``--json`` for scripts. Changes publish model
events when a broker is configured (``DRIFTLINE_BOOTSTRAP_SERVERS`` set, or
``--publish``); ``--no-publish`` turns that off.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``registry`` command to the ``driftline`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    publish = common.add_mutually_exclusive_group()
    publish.add_argument("--publish", dest="publish", action="store_true", default=None,
                         help="publish model events (default: when DRIFTLINE_BOOTSTRAP_SERVERS is set)")
    publish.add_argument("--no-publish", dest="publish", action="store_false", help="do not publish model events")

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

    p = sub.add_parser("alias", parents=[common], help="point an alias at a version (champion = promote)")
    p.add_argument("model")
    p.add_argument("alias")
    p.add_argument("version", type=_positive_int)
    p.set_defaults(handler=_alias)

    p = sub.add_parser("unalias", parents=[common], help="remove an alias")
    p.add_argument("model")
    p.add_argument("alias")
    p.set_defaults(handler=_unalias)

    p = sub.add_parser("history", parents=[common], help="show the history of a model's aliases")
    p.add_argument("model")
    p.add_argument("--alias", default=None)
    p.set_defaults(handler=_history)

    p = sub.add_parser("rollback", parents=[common], help="move champion back to the previous champion")
    p.add_argument("model")
    p.set_defaults(handler=_rollback)

    p = sub.add_parser("delete", parents=[common], help="delete a version (not one an alias points at)")
    p.add_argument("model")
    p.add_argument("version", type=_positive_int)
    p.set_defaults(handler=_delete)

    p = sub.add_parser("gc", parents=[common], help="remove artifact files left by interrupted registrations")
    p.add_argument("--min-age-s", type=float, default=3600.0,
                   help="only files older than this (default 3600; younger ones may be in flight)")
    p.set_defaults(handler=_gc)

    policy = sub.add_parser("policy", help="a model's monitoring and retraining policy")
    policy_sub = policy.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    p = policy_sub.add_parser("set", parents=[common], help="set a model's policy from a JSON file")
    p.add_argument("model")
    p.add_argument("file")
    p.set_defaults(handler=_policy_set)
    p = policy_sub.add_parser("show", parents=[common], help="show a model's policy (defaults if unset)")
    p.add_argument("model")
    p.set_defaults(handler=_policy_show)


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer version, got {text!r}")
    return int(text)


def _open(args: argparse.Namespace):
    from driftline.config import load_settings

    from .core import open_registry

    publish = args.publish
    if publish is None:
        publish = bool(os.environ.get("DRIFTLINE_BOOTSTRAP_SERVERS"))
    return open_registry(load_settings(), publish=publish)


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


def _alias(args: argparse.Namespace) -> int:
    with _open(args) as reg:
        version = reg.set_alias(args.model, args.alias, args.version)
    if args.json:
        _print_json({"model": args.model, "alias": args.alias, "version": version.version})
    else:
        print(f"{args.model}@{args.alias} -> version {version.version}")
    return 0


def _unalias(args: argparse.Namespace) -> int:
    with _open(args) as reg:
        reg.remove_alias(args.model, args.alias)
    if args.json:
        _print_json({"model": args.model, "alias": args.alias, "version": None})
    else:
        print(f"{args.model}@{args.alias} removed")
    return 0


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
    with _open(args) as reg:
        version = reg.rollback(args.model)
    if args.json:
        _print_json({"model": args.model, "alias": "champion", "version": version.version})
    else:
        print(f"{args.model}@champion rolled back to version {version.version}")
    return 0


def _delete(args: argparse.Namespace) -> int:
    with _open(args) as reg:
        reg.delete_version(args.model, args.version)
    if args.json:
        _print_json({"model": args.model, "deleted": args.version})
    else:
        print(f"deleted version {args.version} of {args.model}")
    return 0


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

    policy = load_policy_file(args.file)  # PolicyError names the bad setting
    with _open(args) as reg:
        stored = reg.set_policy(args.model, policy)
    if args.json:
        _print_json({"model": args.model, "policy": stored.to_dict()})
    else:
        print(f"policy of {args.model} updated")
    return 0


def _policy_show(args: argparse.Namespace) -> int:
    with _open(args) as reg:
        policy = reg.get_policy(args.model, missing_ok=False)
    if args.json:
        _print_json(policy.to_dict())
    else:
        print(policy.to_json())
    return 0
