"""The registry's records: models, versions, alias moves, loaded models."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Model", "ModelVersion", "AliasMove", "LoadedModel", "VERSION_STATUSES"]

#: ``ready`` versions can be promoted and served; ``rejected`` ones are kept
#: for the record (a retrain candidate that lost against the champion).
VERSION_STATUSES = ("ready", "rejected")


@dataclass(frozen=True)
class Model:
    """A registered model: a name that versions, aliases and a policy hang on.

    ``aliases`` maps alias -> version; ``latest_version`` is ``None`` before
    the first registration.
    """

    name: str
    description: str
    created_at: float
    latest_version: int | None = None
    aliases: dict[str, int] = field(default_factory=dict)
    has_policy: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModelVersion:
    """One registered version of a model and everything known about it.

    Parameters
    ----------
    model, version
        The model name and its version number (1, 2, 3, ...).
    status
        ``ready`` or ``rejected``.
    created_at
        Registration time, epoch seconds.
    metrics, params, tags
        Scores, training parameters and free-form string tags.
    lineage
        Where the version came from: training data window, row count, data
        hash, the retrain request and the parent version (keys as given).
    profile
        Reference profile of the training data (:func:`driftline.registry.profile.build_profile`).
    artifact_sha256
        SHA-256 of the skops artifact, checked on every load.
    request_id
        The retrain request that produced this version, if any.
    reason
        Why the version was rejected, if it was.
    aliases
        Aliases pointing at this version right now.
    """

    model: str
    version: int
    status: str
    created_at: float
    metrics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] | None = None
    artifact_sha256: str = ""
    request_id: str | None = None
    reason: str | None = None
    aliases: list[str] = field(default_factory=list)
    artifact_size: int = 0

    @property
    def ref(self) -> str:
        """``name/version``, accepted by :meth:`driftline.registry.Registry.resolve`."""
        return f"{self.model}/{self.version}"

    def to_dict(self, profile: bool = True) -> dict[str, Any]:
        data = asdict(self)
        if not profile:
            data.pop("profile")
        return data


@dataclass(frozen=True)
class AliasMove:
    """One entry of an alias's history.

    ``action`` is ``set``, ``promoted``, ``rolled_back`` or ``removed``;
    ``version`` is where the alias points afterwards (``None`` once removed),
    ``previous_version`` where it pointed before.
    """

    model: str
    alias: str
    version: int | None
    previous_version: int | None
    action: str
    at: float
    request_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LoadedModel:
    """What :meth:`driftline.registry.Registry.load` returns: the fitted estimator,
    ready to predict, and the metadata of its version."""

    estimator: Any
    version: ModelVersion

    def __iter__(self):  # allows ``estimator, version = reg.load(ref)``
        yield self.estimator
        yield self.version
