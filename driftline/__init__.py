"""Driftline's shared core: configuration, the event contract, topics, the
embedded broker and the publishing SDK. ``streams`` (the monitor), ``retrain``
(the worker) and ``registry`` (the model registry) all build on it."""

__version__ = "0.1.0"
