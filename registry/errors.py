"""Errors of the model registry.

Every error a user (or a caller such as the retraining worker) can cause is a
:class:`RegistryError`, itself a :class:`driftline.model_store.ModelStoreError`
(what the SDK's champion catches) and so a
:class:`driftline.errors.DriftlineError`: the ``driftline`` command prints its
message on one line and exits 1.
"""

from __future__ import annotations

from driftline.model_store import ModelStoreError

__all__ = [
    "RegistryError",
    "NotFoundError",
    "ConflictError",
    "ArtifactError",
    "ArtifactIntegrityError",
    "UntrustedArtifactError",
    "PublishError",
]


class RegistryError(ModelStoreError):
    """Something the registry refused; the message says what and why."""


class NotFoundError(RegistryError, LookupError):
    """A model, version or alias does not exist."""


class ConflictError(RegistryError):
    """The operation conflicts with the registry's state (for example
    deleting a version that an alias points at)."""


class ArtifactError(RegistryError):
    """A stored artifact is missing or cannot be read."""


class ArtifactIntegrityError(ArtifactError):
    """A stored artifact's SHA-256 differs from the one recorded at
    registration: it was changed or corrupted, and is not loaded."""


class UntrustedArtifactError(ArtifactError):
    """An artifact needs a type or function outside the trusted list (or is
    not a skops file at all); it is refused and nothing in it is executed."""


class PublishError(RegistryError):
    """The registry change was committed, but its model event could not be
    published to Kafka."""
