"""The models' policies and reference profiles, read from the registry and cached."""

from __future__ import annotations

import logging
import sqlite3
from typing import Callable

from driftline.config import Settings
from driftline.errors import DriftlineError
from driftline.policy import Policy

from .supervision import describe_error

__all__ = ["PolicySource"]

log = logging.getLogger("driftline.monitor")


def _registry_errors() -> tuple[type[BaseException], ...]:
    """What reading the registry raises when it is missing, unreachable or
    holds bad data: its own errors, and its databases' (not wrapped)."""
    errors: list[type[BaseException]] = [DriftlineError, OSError, ValueError, sqlite3.Error]
    try:
        import psycopg
    except ImportError:  # no PostgreSQL driver: no PostgreSQL registry either
        pass
    else:
        errors.append(psycopg.Error)
    return tuple(errors)


class PolicySource:
    """Policies and reference profiles from the registry, cached per model.

    Falls back to the default policy (and no profile) when the registry is
    unavailable or does not know the model: monitoring never stops for it.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self._registry = None
        self._policies: dict[str, Policy] = {}
        self._profiles: dict[tuple[str, int], dict | None] = {}
        self._opened = False
        self._unregistered: set[str] = set()  # told once each
        self._errors: tuple[type[BaseException], ...] = (DriftlineError, OSError, ValueError, sqlite3.Error)

    def _open(self):
        if not self._opened:
            self._opened = True
            self._errors = _registry_errors()
            try:
                from driftline.registry import open_registry

                self._registry = open_registry(self.settings, publish=False)
            except (ImportError, *self._errors) as error:  # registry missing or unreadable: defaults
                log.warning("registry unavailable, using default policies: %s", error)
        return self._registry

    def policy(self, model: str) -> Policy:
        policy = self._policies.get(model)
        if policy is None:
            policy = Policy()
            registry = self._open()
            if registry is not None:
                try:
                    policy = registry.get_policy(model, missing_ok=False)
                except LookupError:  # the registry's NotFoundError: predictions of a model never registered
                    if model not in self._unregistered:
                        self._unregistered.add(model)
                        log.warning("model %s has predictions but no registry entry: monitored with the default "
                                    "policy, drift against its own past ('driftline registry register' or "
                                    "'driftline train' gives it one)", model)
                except self._errors as error:  # registry trouble must not stop monitoring: defaults
                    log.warning("no policy for %s (%s): defaults", model, describe_error(error))
            self._policies[model] = policy
        return policy

    def profile_for(self, model: str) -> Callable[[int], dict | None]:
        def lookup(version: int) -> dict | None:
            key = (model, version)
            if key not in self._profiles:
                profile = None
                registry = self._open()
                if registry is not None:
                    try:
                        profile = registry.get_profile(model, version)
                    except self._errors as error:  # no profile: drift against the model's own past
                        log.debug("no profile for %s/%s (%s)", model, version, error)
                self._profiles[key] = profile
            return self._profiles[key]

        return lookup

    def label_ttl(self, model: str) -> float:
        return self.policy(model).monitor.label_ttl_s

    def refresh(self) -> list[str]:
        """Re-read the cached models' policies; returns the models whose
        policy changed (their profiles are read again too)."""
        changed = []
        for model, old in list(self._policies.items()):
            self._policies.pop(model)
            if self.policy(model) != old:
                changed.append(model)
                self._forget_profiles(model)
        return changed

    def invalidate(self, model: str) -> None:
        self._policies.pop(model, None)
        self._forget_profiles(model)

    def _forget_profiles(self, model: str) -> None:
        for key in [k for k in self._profiles if k[0] == model]:
            del self._profiles[key]

    def close(self) -> None:
        if self._registry is not None:
            try:
                self._registry.close()
            except self._errors as error:  # pragma: no cover - best effort on shutdown
                log.debug("closing the registry failed: %s", describe_error(error))
