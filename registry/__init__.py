"""Driftline's model registry: versions, aliases, safe artifacts, reference
profiles, lineage, per-model policies and model events.

>>> from driftline import registry # doctest: +SKIP
>>> registry.load("models:/churn@champion").estimator    # settings from the environment  # doctest: +SKIP
>>> from driftline.registry import open_registry        # doctest: +SKIP
>>> reg = open_registry(settings, publish=True)          # doctest: +SKIP
>>> model = reg.load("churn@champion")                   # doctest: +SKIP
>>> model.estimator.predict(X), model.version.version    # doctest: +SKIP
"""

from .core import CHAMPION, MODELS_URI, Registry, load, open_registry, parse_ref
from .errors import (
    ArtifactError,
    ArtifactIntegrityError,
    ConflictError,
    NotFoundError,
    PublishError,
    RegistryError,
    UntrustedArtifactError,
)
from .models import AliasMove, LoadedModel, Model, ModelVersion

__all__ = [
    "CHAMPION",
    "Registry",
    "open_registry",
    "load",
    "MODELS_URI",
    "parse_ref",
    "RegistryError",
    "NotFoundError",
    "ConflictError",
    "ArtifactError",
    "ArtifactIntegrityError",
    "UntrustedArtifactError",
    "PublishError",
    "Model",
    "ModelVersion",
    "AliasMove",
    "LoadedModel",
]
