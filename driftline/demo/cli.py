"""``driftline demo``: the sub-command (loaded by :mod:`driftline.cli`)."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers) -> None:
    """Add ``demo`` (imports nothing heavy until it runs)."""
    demo = subparsers.add_parser("demo", help="run the whole loop on a drifting benchmark stream")
    demo.add_argument("--events", type=int, default=None, help="events to replay (default: see driftline.demo)")
    demo.add_argument("--report-dir", default="demo-report", help="where to write index.html (default demo-report)")
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument("--plain", action="store_true", help="line output even on a terminal")
    demo.set_defaults(handler=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .run import run_demo

    return run_demo(events=args.events, report_dir=args.report_dir, seed=args.seed, plain=args.plain)
