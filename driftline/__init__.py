"""Driftline's shared core: configuration, the event contract, topics, the
embedded broker, the publishing SDK and :class:`Champion` (serve the
registry's champion and follow its promotions). ``streams`` (the monitor),
``retrain`` (the worker) and ``registry`` (the model registry) all build on it."""

__version__ = "0.1.0"

__all__ = ["Champion", "Predictions"]


def __getattr__(name: str):
    # Lazily: ``import driftline`` stays cheap for every sub-package.
    if name in ("Champion", "Predictions"):
        from . import champion

        return getattr(champion, name)
    raise AttributeError(f"module 'driftline' has no attribute {name!r}")
