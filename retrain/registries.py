"""One open registry per thread: SQLite connections are not shared between
threads, and a registry whose database or broker failed is dropped and
opened afresh on the next use."""

from __future__ import annotations

import threading
from typing import Any, Callable

from .resilience import dependency_errors

__all__ = ["ThreadRegistries"]


class ThreadRegistries:
    """The registries of the worker's threads.

    Parameters
    ----------
    open_registry
        Opens a new registry (called once per thread, and again after
        :meth:`drop`).
    """

    def __init__(self, open_registry: Callable[[], Any]):
        self._open = open_registry
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open_ones: list = []

    def get(self) -> Any:
        """This thread's registry, opened on first use."""
        reg = getattr(self._local, "registry", None)
        if reg is None:
            reg = self._open()
            self._local.registry = reg
            with self._lock:
                self._open_ones.append(reg)
        return reg

    def drop(self) -> None:
        """Forget this thread's registry (after its database or broker
        failed): the next :meth:`get` opens a fresh one."""
        reg = getattr(self._local, "registry", None)
        self._local.registry = None
        if reg is None:
            return
        with self._lock:
            if reg in self._open_ones:
                self._open_ones.remove(reg)
        _close(reg)

    def close_all(self) -> None:
        """Close every thread's registry (at shutdown)."""
        with self._lock:
            for reg in self._open_ones:
                _close(reg)


def _close(reg: Any) -> None:
    try:
        reg.close()
    except dependency_errors():  # a broken connection may fail to close; it is dropped either way
        pass
