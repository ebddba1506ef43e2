"""glibc's malloc in the monitor process: few arenas, free memory given back.

What the monitor frees (a read's records, decoded events, outputs sent)
stays with glibc's malloc, in the arena of the thread that allocated it
(the event loop, faust's consumer thread, RocksDB's threads): measured with
``bench/monitor.py --only memory --memtrace DIR`` (1,000,000 events), malloc
held 277 MB of which 134 MB were free, and the free part grew with the
traffic. :func:`limit_arenas` keeps the arenas few (one per thread by
default, up to 8 per core); :func:`trim` hands free memory back to the
kernel (``malloc_trim``: whole free pages, anywhere in the arenas), which the
monitor does on a timer. Elsewhere than glibc both do nothing.

Examples
--------
>>> trim() in (True, False)
True
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["limit_arenas", "trim", "ARENAS", "TRIM_INTERVAL_S"]

#: malloc arenas at most (glibc's M_ARENA_MAX): the event loop's, one for the other threads
ARENAS = 2
#: seconds between two :func:`trim` calls in the monitor (one takes a few milliseconds)
TRIM_INTERVAL_S = 5.0

_M_ARENA_MAX = -8  # glibc's malloc.h


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim, libc.mallopt  # glibc's; musl and others lack them
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def limit_arenas(arenas: int = ARENAS) -> bool:
    """At most ``arenas`` malloc arenas from now on (call it before the
    process starts its threads); True when glibc took it."""
    return bool(_LIBC is not None and _LIBC.mallopt(_M_ARENA_MAX, arenas) == 1)


def trim() -> bool:
    """Return malloc's free pages to the kernel; True when some were."""
    return bool(_LIBC is not None and _LIBC.malloc_trim(0))
