"""glibc's malloc in the monitor process: few arenas, free memory given back.

What the monitor frees (a read's records, decoded events, outputs sent)
stays with glibc's malloc, in the arena of the thread that allocated it
(the event loop, faust's consumer thread, RocksDB's threads): measured with
``bench/monitor.py --only memory --memtrace DIR`` (1,000,000 events), malloc
held 277 MB of which 134 MB were free, and the free part grew with the
traffic. :func:`limit_arenas` keeps the arenas few (one per thread by
default, up to 8 per core) and every block of :data:`MMAP_THRESHOLD` bytes
or more in a mapping of its own, returned to the kernel when freed (glibc
raises that threshold as the process frees large blocks, up to 32 MB, and
the monitor's large blocks -- bulk messages, observation and ``labeled``
payloads of 100 KB to 1 MB -- then stayed in the arenas, freed but held);
:func:`trim` hands free memory back to the kernel (``malloc_trim``: whole
free pages, anywhere in the arenas), which the monitor does on a timer.
Elsewhere than glibc they do nothing.

Examples
--------
>>> limit_arenas()  # (glibc)
True
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["limit_arenas", "trim", "ARENAS", "MMAP_THRESHOLD", "TRIM_INTERVAL_S"]

#: malloc arenas at most (glibc's M_ARENA_MAX): the event loop's, one for the other threads
ARENAS = 2
#: blocks from this size on get a mapping of their own (glibc's M_MMAP_THRESHOLD, its initial value, fixed)
MMAP_THRESHOLD = 128 * 1024
#: seconds between two :func:`trim` calls in the monitor (one takes a few milliseconds)
TRIM_INTERVAL_S = 5.0

_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8  # glibc's malloc.h


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim, libc.mallopt  # glibc's; musl and others lack them
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def limit_arenas(arenas: int = ARENAS, mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """At most ``arenas`` malloc arenas from now on, blocks of
    ``mmap_threshold`` bytes or more mapped on their own (call it before the
    process starts its threads); True when glibc took both."""
    if _LIBC is None:
        return False
    return _LIBC.mallopt(_M_ARENA_MAX, arenas) == 1 and _LIBC.mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1


def trim() -> bool:
    """Return malloc's free pages to the kernel; True when some were."""
    return bool(_LIBC is not None and _LIBC.malloc_trim(0))
