"""The live view: a refreshing table on a terminal, plain lines otherwise."""

from __future__ import annotations

import os
import sys
from typing import Any

from .watch import Watcher

__all__ = ["View", "show", "fmt"]


class View:
    """A refreshing table on a terminal, plain lines otherwise."""

    def __init__(self, plain: bool, stream=None):
        self.stream = stream or sys.stdout
        self.tty = not plain and self.stream.isatty() and os.environ.get("TERM") != "dumb"
        self.drawn = 0
        self.last_progress = 0.0

    def line(self, text: str) -> None:
        if self.tty:
            self._clear()
        print(text, file=self.stream, flush=True)

    def _clear(self) -> None:
        if self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")
            self.drawn = 0

    def table(self, lines: list[str], progress: str, t: float) -> None:
        if self.tty:
            self._clear()
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
            self.drawn = len(lines)
        elif t - self.last_progress >= 5.0:
            self.last_progress = t
            print(progress, file=self.stream, flush=True)

    def finish(self) -> None:
        self.drawn = 0


def bar(done: int, total: int, width: int = 30) -> str:
    """A progress bar.

    >>> bar(1, 4, width=8)
    '##------'
    """
    filled = int(width * min(1.0, done / max(1, total)))
    return "#" * filled + "-" * (width - filled)


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: ``-`` for nothing, floats rounded.

    >>> fmt(None), fmt(0.91234), fmt(7)
    ('-', '0.912', '7')
    """
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def rolling(truth: list, last: int = 500) -> float | None:
    """Ground-truth accuracy of the ``last`` events served."""
    window = truth[-last:]
    return sum(c for *_, c in window) / len(window) if window else None


def show(view: View, watcher: Watcher, truth: list, sent: int, total: int, version: int, t: float,
          final: bool = False) -> None:
    while not watcher.news.empty():
        happening = watcher.news.get()
        view.line(f"[{happening.t:6.2f}s] {happening.text}")
    serving_acc = rolling(truth)
    progress = (f"[{t:6.2f}s] {sent}/{total} events, serving v{version}, "
                f"accuracy (last 500) {fmt(serving_acc)}")
    with watcher.lock:
        snapshots = sorted(watcher.snapshots.items())
    lines = [
        f"  replay  [{bar(sent, total)}] {sent}/{total} events   serving v{version}   t={t:5.1f}s",
        f"  ground truth accuracy, last 500 events: {fmt(serving_acc)}",
        "",
        "  version   joined   accuracy   rolling   f1       log_loss   coverage   p95 ms   est. acc",
    ]
    for v, snap in snapshots:
        stats = snap.stats or {}
        lines.append(f"  v{v:<8} {stats.get('joined', 0):<8} {fmt(snap.cumulative.get('accuracy')):<10} "
                     f"{fmt(snap.rolling.get('accuracy')):<9} {fmt(snap.rolling.get('f1')):<8} "
                     f"{fmt(snap.rolling.get('log_loss')):<10} {fmt(stats.get('label_coverage')):<10} "
                     f"{fmt(stats.get('latency_p95_ms'), 2):<8} "
                     # estimated from calibrated confidence before labels (streams/estimation.py)
                     f"{fmt((stats.get('estimated') or {}).get('accuracy'))}")
    if not snapshots:
        lines.append("  (waiting for the monitor's first snapshot)")
    view.table(lines, progress, t if not final else 1e9)
