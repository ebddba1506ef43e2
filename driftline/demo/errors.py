"""The demo's error."""

from __future__ import annotations

from ..errors import DriftlineError

__all__ = ["DemoError"]


class DemoError(DriftlineError):
    """The demo could not run (or the loop did not complete)."""
