"""Small helpers shared by the bench/ scripts."""

from __future__ import annotations

import resource
import time
from typing import Callable


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux: KiB units)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def best_of(repeats: int, fn: Callable[[], None]) -> float:
    """Fastest wall time of ``repeats`` runs of ``fn`` (seconds): the least
    disturbed by other work on the machine."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def row(name: str, value: float, unit: str, baseline: float | None = None, ratio_name: str = "x baseline") -> str:
    text = f"  {name:<46} {value:>12,.2f} {unit}"
    if baseline:
        text += f"   ({value / baseline:.2f} {ratio_name})"
    return text
