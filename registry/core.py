"""The model registry: models, versions, aliases, artifacts, policies.

Examples
--------
>>> import shutil, tempfile
>>> tmp = tempfile.mkdtemp()
>>> from sklearn.linear_model import LogisticRegression
>>> from driftline.config import load_settings
>>> from driftline.registry import open_registry
>>> reg = open_registry(load_settings(environ={}, registry=tmp), publish=False)
>>> v1 = reg.register_version("churn", LogisticRegression().fit([[0.0], [1.0]], [0, 1]), metrics={"accuracy": 1.0})
>>> v2 = reg.register_version("churn", LogisticRegression(C=0.5).fit([[0.0], [1.0]], [0, 1]))
>>> v1.version, v2.version
(1, 2)
>>> _ = reg.promote("churn", 1); _ = reg.promote("churn", 2)
>>> estimator, version = reg.load("churn@champion")
>>> version.version, estimator.predict([[1.0]]).tolist()
(2, [1])
>>> reg.rollback("churn").version
1
>>> reg.resolve("models:/churn/1").version, reg.resolve("models:/churn@champion").version
(1, 1)
>>> reg.resolve("churn/3")
Traceback (most recent call last):
...
driftline.registry.errors.NotFoundError: model 'churn' has no version 3 (versions: 1, 2)
>>> reg.close(); shutil.rmtree(tmp)
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from driftline.config import ConfigError, Settings, load_settings
from driftline.events import ModelEvent, validate_name
from driftline.policy import Policy, PolicyError, policy_changes

from . import artifacts
from .artifacts import ArtifactStore
from .backends import Backend, PostgresBackend, SQLiteBackend
from .errors import ArtifactError, ConflictError, NotFoundError, RegistryError, UntrustedArtifactError
from .models import VERSION_STATUSES, AliasMove, LoadedModel, Model, ModelVersion
from .publish import EventPublisher, NullPublisher
from .store import MetadataStore, SQLMetadataStore
from .values import _MAX_TEXT, _check_metrics, _check_tags, _json, _looks_like_pickle, _optional_text, _version_number

__all__ = ["Registry", "open_registry", "parse_ref", "load", "CHAMPION", "MODELS_URI"]

log = logging.getLogger(__name__)

#: The alias serving loads and the worker promotes.
CHAMPION = "champion"

#: MLflow's spelling of a reference, accepted too: ``models:/churn@champion``, ``models:/churn/3``.
MODELS_URI = "models:/"
_REF = re.compile(r"^(?P<model>[^@/]+)(?:@(?P<alias>[^@/]+)|/(?P<version>[^@/]+))$")


def open_registry(settings: Settings, publish: bool = False, *, publish_timeout_s: float = 30.0) -> "Registry":
    """Open (and create, if needed) the registry named by ``settings.registry``.

    Parameters
    ----------
    settings
        ``settings.registry`` is a directory (SQLite ``registry.db`` plus
        ``artifacts/``) or a ``postgresql://`` URL; then artifacts go under
        ``settings.registry_artifacts``, which is required.
    publish
        Publish model events to ``settings.topics.model_events``. With
        ``False`` the registry needs no broker.
    publish_timeout_s
        How long publishing one event may take before :class:`PublishError`.
    """
    if settings.registry_is_database:
        if not settings.registry_artifacts:
            raise ConfigError(
                "DRIFTLINE_REGISTRY_ARTIFACTS is not set: a PostgreSQL registry needs a directory "
                "(shared by every worker) for its model artifacts"
            )
        backend: Backend = PostgresBackend(settings.registry)
        artifact_root = Path(settings.registry_artifacts)
    else:
        root = Path(settings.registry)
        if root.exists() and not root.is_dir():
            raise ConfigError(f"DRIFTLINE_REGISTRY={settings.registry!r} is not a directory")
        backend = SQLiteBackend(root / "registry.db")
        artifact_root = Path(settings.registry_artifacts) if settings.registry_artifacts else root / "artifacts"
    publisher = EventPublisher(settings, timeout_s=publish_timeout_s) if publish else NullPublisher()
    return Registry(backend, ArtifactStore(artifact_root), publisher)


def open_for_serving(settings: Settings) -> "Registry":
    """The registry as the core's model store (:mod:`driftline.model_store`):
    open for reading, publishing nothing. Registered as the
    ``driftline.model_stores`` entry point ``registry``."""
    return open_registry(settings, publish=False)


def load(ref: str, settings: Settings | None = None) -> LoadedModel:
    """Load the model behind ``ref`` from the registry the environment names
    (``DRIFTLINE_REGISTRY``; see :func:`driftline.config.load_settings`).

    ``ref`` is ``churn@champion``, ``churn/3``, ``models:/churn@champion`` or
    ``models:/churn/3``. Publishes nothing and needs no broker.

    >>> from driftline import registry # doctest: +SKIP
    >>> model = registry.load("models:/churn@champion")    # doctest: +SKIP
    >>> model.estimator.predict(X), model.version.version  # doctest: +SKIP
    """
    with open_registry(settings if settings is not None else load_settings(), publish=False) as reg:
        return reg.load(ref)


def parse_ref(ref: str) -> tuple[str, str | None, int | None]:
    """Split ``name@alias`` or ``name/version`` (optionally prefixed with
    ``models:/``, as in MLflow) into (name, alias, version).

    >>> parse_ref("churn@champion"), parse_ref("churn/3")
    (('churn', 'champion', None), ('churn', None, 3))
    >>> parse_ref("models:/churn@champion"), parse_ref("models:/churn/3")
    (('churn', 'champion', None), ('churn', None, 3))
    """
    text = ref[len(MODELS_URI):] if isinstance(ref, str) and ref.startswith(MODELS_URI) else ref
    match = _REF.match(text) if isinstance(text, str) else None
    if match is None:
        raise RegistryError(f"model reference {ref!r} is invalid: expected NAME@ALIAS, NAME/VERSION, "
                            "models:/NAME@ALIAS or models:/NAME/VERSION")
    name = validate_name(match["model"], "model")
    if match["alias"] is not None:
        return name, validate_name(match["alias"], "alias"), None
    return name, None, _version_number(match["version"])


def _with_estimation(profile: Mapping[str, Any] | None, tags: Mapping[str, str] | None,
                     estimation: Mapping[str, Any] | None) -> tuple[Any, Any]:
    """Profile with the estimation map, tags with its checksum."""
    if estimation is None:
        return profile, tags
    from .calibration import TAG, payload_sha256

    profile = dict(profile or {})
    profile["estimation"] = dict(estimation)
    return profile, {**dict(tags or {}), TAG: payload_sha256(profile["estimation"])}


class Registry:
    """The model registry (see :func:`open_registry`).

    Parameters
    ----------
    backend
        Where rows live (:class:`driftline.registry.backends.SQLiteBackend` or
        :class:`driftline.registry.backends.PostgresBackend`).
    store
        Where artifacts live.
    publisher
        Where model events go (:class:`driftline.registry.publish.EventPublisher`, or
        :class:`driftline.registry.publish.NullPublisher` to publish nothing).

    Its rows are read and written through :attr:`metadata`
    (:class:`driftline.registry.store.MetadataStore`, SQL over ``backend``);
    the registry itself holds the rules: validation, artifacts, events.
    """

    def __init__(self, backend: Backend, store: ArtifactStore, publisher: EventPublisher | NullPublisher | None = None):
        self.backend = backend
        self.metadata: MetadataStore = SQLMetadataStore(backend)
        self.store = store
        self.publisher = publisher or NullPublisher()
        # Test hook: called inside the registration transaction, after the
        # version's row is inserted and before it commits.
        self._before_commit: Callable[[int], None] | None = None
        self.metadata.init_schema()

    # -- models ---------------------------------------------------------------------
    def create_model(self, name: str, description: str = "", exist_ok: bool = True) -> Model:
        """Create a model (no versions yet); with ``exist_ok`` an existing
        model is returned unchanged."""
        validate_name(name, "model")
        if not isinstance(description, str) or len(description) > _MAX_TEXT:
            raise RegistryError(f"description must be a string of at most {_MAX_TEXT} characters")
        with self.metadata.transaction(write=True) as tx:
            created = self.metadata.insert_model(tx, name, description)
        if not created and not exist_ok:
            raise ConflictError(f"model {name!r} already exists")
        return self.get_model(name)

    def get_model(self, name: str) -> Model:
        validate_name(name, "model")
        with self.metadata.transaction() as tx:
            models = self.metadata.models(tx, name)
        if not models:
            raise NotFoundError(self._missing_model_message(name))
        return models[0]

    def list_models(self) -> list[Model]:
        """Every model, by name."""
        with self.metadata.transaction() as tx:
            return self.metadata.models(tx)

    def _missing_model_message(self, name: str) -> str:
        return f"model {name!r} is not registered"

    # -- versions ---------------------------------------------------------------------
    def register_version(
        self,
        name: str,
        estimator: Any,
        *,
        metrics: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        lineage: Mapping[str, Any] | None = None,
        profile: Mapping[str, Any] | None = None,
        status: str = "ready",
        request_id: str | None = None,
        reason: str | None = None,
        estimation: Mapping[str, Any] | None = None,
    ) -> ModelVersion:
        """Store ``estimator`` as the next version of model ``name``.

        The model is created if needed. The artifact is written (atomically)
        first; the version's row commits last, in one transaction that also
        takes the next version number, so a version is visible only once
        complete. Publishes ``registered`` (or ``rejected``, with ``reason``).

        Parameters
        ----------
        estimator
            A fitted scikit-learn object (stored with skops).
        metrics
            Name -> finite number (or ``None``).
        params, lineage
            JSON objects (values that are not JSON are stored as text).
        tags
            Name -> string.
        profile
            Reference profile of the training data (see :mod:`driftline.registry.profile`).
        status
            ``ready`` or ``rejected`` (kept for the record, never promoted).
        request_id
            The retrain request behind this version (see :meth:`find_version_by_request`).
        reason
            Why it was rejected.
        estimation
            Performance-estimation map (:func:`driftline.registry.calibration.fit_estimation`),
            kept in the profile with its checksum in the tags.
        """
        validate_name(name, "model")
        profile, tags = _with_estimation(profile, tags, estimation)
        fields = self._version_fields(metrics, params, tags, lineage, profile, status, request_id, reason)
        data, trusted = artifacts.dumps_checked(estimator)
        return self._store_version(name, data, trusted, fields)

    def register_artifact(
        self,
        name: str,
        data: bytes,
        *,
        reference: Any = None,
        target: str | None = None,
        metrics: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        lineage: Mapping[str, Any] | None = None,
    ) -> ModelVersion:
        """Register a skops file trained elsewhere (a notebook, another team)
        as the next version of ``name``, byte for byte.

        The file passes the same audit as every version before anything in it
        is constructed (:func:`driftline.registry.artifacts.trusted_types`: a pickle or
        a type outside the trusted list is refused with
        :class:`UntrustedArtifactError`); then it is loaded, must predict on
        the reference data, and is stored with its SHA-256 and a reference
        profile. Publishes ``registered``.

        Parameters
        ----------
        data
            The skops file's bytes (``skops.io.dump(model, path)``).
        reference
            A pandas DataFrame the model was trained on (or data like it):
            features are all columns but ``target``; profiled together with
            the model's predictions on them.
        target
            The label column of ``reference``, profiled as the target.
        metrics, params, tags, lineage
            As for :meth:`register_version`.

        Examples
        --------
        >>> import shutil, tempfile, pandas as pd, skops.io as sio
        >>> from sklearn.linear_model import LogisticRegression
        >>> from driftline.config import load_settings
        >>> tmp = tempfile.mkdtemp()
        >>> df = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "y": [0, 0, 1, 1]})
        >>> data = sio.dumps(LogisticRegression().fit(df[["x"]], df["y"]))
        >>> reg = open_registry(load_settings(environ={}, registry=tmp))
        >>> v = reg.register_artifact("churn", data, reference=df, target="y")
        >>> v.version, sorted(v.profile["features"]), v.artifact_sha256 == artifacts.sha256(data)
        (1, ['x'], True)
        >>> reg.register_artifact("churn", b"\\x80\\x04K\\x01.")
        Traceback (most recent call last):
        ...
        driftline.registry.errors.UntrustedArtifactError: the artifact is a pickle (or joblib) file: ...
        >>> reg.close(); shutil.rmtree(tmp)
        """
        validate_name(name, "model")
        if not isinstance(data, (bytes, bytearray)):
            raise RegistryError(f"artifact must be bytes (got {type(data).__name__})")
        data = bytes(data)
        fields = self._version_fields(metrics, params, tags, lineage, None, "ready", None, None)
        if _looks_like_pickle(data):
            raise UntrustedArtifactError(
                "the artifact is a pickle (or joblib) file: Driftline never loads pickles, because loading "
                "one runs whatever code it names; save the model with skops.io.dump(model, 'model.skops')"
            )
        trusted = artifacts.trusted_types(data)  # the audit: nothing is constructed before it passes
        estimator = artifacts.loads(data, artifacts.sha256(data), trusted)
        if not callable(getattr(estimator, "predict", None)):
            raise RegistryError(f"the artifact holds a {type(estimator).__name__}, which has no predict method: "
                                "expected a fitted scikit-learn estimator or pipeline")
        if reference is not None:
            from .profile import build_profile

            if target is not None and target not in reference.columns:
                raise RegistryError(f"target column {target!r} is not in the reference data (columns: "
                                    f"{', '.join(map(str, reference.columns[:20]))})")
            features = reference.drop(columns=[target]) if target is not None else reference
            if features.shape[1] == 0:
                raise RegistryError("the reference data has no feature columns besides the target")
            try:
                predictions = estimator.predict(features)
            # scikit-learn reports wrong columns, types or an unfitted model with these
            except (ValueError, KeyError, TypeError, AttributeError, IndexError) as error:
                raise RegistryError(
                    f"the model cannot predict on the reference data ({type(error).__name__}: "
                    f"{' '.join(str(error).split())}); "
                    "the reference must hold the model's feature columns (and the target, named by --target)"
                ) from None
            profile = build_profile(reference, target=target, predictions=predictions)
            if target is not None:
                from .calibration import fit_estimation

                task = "classification" if callable(getattr(estimator, "predict_proba", None)) else "regression"
                estimation = fit_estimation(estimator, features, reference[target].to_numpy(), task)
                profile, tags = _with_estimation(profile, tags, estimation)
                fields["tags_json"] = _json(_check_tags(tags), "tags")
            fields["profile_json"] = _json(profile, "profile")
        return self._store_version(name, data, trusted, fields)

    def _version_fields(self, metrics, params, tags, lineage, profile, status, request_id, reason) -> dict[str, Any]:
        """Validate a version's metadata before any artifact is written."""
        if status not in VERSION_STATUSES:
            raise RegistryError(f"status {status!r} is invalid: expected one of {', '.join(VERSION_STATUSES)}")
        metrics_json = _json(_check_metrics(metrics), "metrics")
        params_json = _json(dict(params or {}), "params", lenient=True)
        tags_json = _json(_check_tags(tags), "tags")
        lineage = dict(lineage or {})
        lineage_json = _json(lineage, "lineage", lenient=True)
        if profile is not None and not isinstance(profile, Mapping):
            raise RegistryError(f"profile must be a JSON object or None (got {type(profile).__name__})")
        profile_json = None if profile is None else _json(dict(profile), "profile")
        request_id = _optional_text(request_id, "request_id")
        reason = _optional_text(reason, "reason")
        return dict(metrics_json=metrics_json, params_json=params_json, tags_json=tags_json, lineage=lineage,
                    lineage_json=lineage_json, profile_json=profile_json, status=status, request_id=request_id,
                    reason=reason)

    def _store_version(self, name: str, data: bytes, trusted: list[str], fields: dict[str, Any]) -> ModelVersion:
        """Write the artifact, then commit the version's row, then publish."""
        status, request_id, reason, lineage = fields["status"], fields["request_id"], fields["reason"], fields["lineage"]
        digest = artifacts.sha256(data)
        relative = self.store.write(name, data)
        created_at = time.time()
        try:
            with self.metadata.transaction(write=True) as tx:
                self.metadata.insert_model(tx, name)
                version = self.metadata.insert_version(tx, name, dict(
                    status=status, created_at=created_at, metrics=fields["metrics_json"],
                    params=fields["params_json"], tags=fields["tags_json"], lineage=fields["lineage_json"],
                    profile=fields["profile_json"], artifact_sha256=digest, request_id=request_id, reason=reason,
                    artifact_size=len(data), artifact_path=relative, trusted_types=trusted,
                ))
                if self._before_commit is not None:
                    self._before_commit(version)
        except BaseException:  # whatever stopped it (an interrupt too), re-raised: only the orphan goes
            self.store.remove(relative)  # never committed: the file is an orphan
            raise
        registered = self.get_version(name, version)
        self._publish(
            "rejected" if status == "rejected" else "registered",
            name,
            version=version,
            metrics=registered.metrics,
            request_id=request_id,
            reason=reason,
            details={"status": status, "artifact_sha256": digest,
                     "parent_version": lineage.get("parent_version")},
        )
        return registered

    def get_version(self, name: str, version: int) -> ModelVersion:
        """One version; :class:`NotFoundError` if it does not exist."""
        validate_name(name, "model")
        version = _version_number(version)
        with self.metadata.transaction() as tx:
            found = self.metadata.versions(tx, name, version)
            if not found:
                raise NotFoundError(self._missing_version_message(tx, name, version))
        return found[0]

    def list_versions(self, name: str) -> list[ModelVersion]:
        """Every version of model ``name``, oldest first."""
        validate_name(name, "model")
        with self.metadata.transaction() as tx:
            if not self.metadata.model_exists(tx, name):
                raise NotFoundError(self._missing_model_message(name))
            return self.metadata.versions(tx, name)

    def _missing_version_message(self, tx: Any, name: str, version: int) -> str:
        if not self.metadata.model_exists(tx, name):
            return self._missing_model_message(name)
        known = self.metadata.version_numbers(tx, name)
        shown = ", ".join(map(str, known[-20:])) if known else "none"
        return f"model {name!r} has no version {version} (versions: {shown})"

    def find_version_by_request(self, name: str, request_id: str) -> ModelVersion | None:
        """The newest version registered for retrain request ``request_id``
        (the worker's idempotency check), or ``None``."""
        validate_name(name, "model")
        with self.metadata.transaction() as tx:
            found = self.metadata.versions_by_request(tx, name, request_id)
        return found[-1] if found else None

    def get_profile(self, name: str, version: int) -> dict | None:
        """The reference profile stored with a version (``None`` if none was).

        Its performance-estimation map (``estimation``) is kept only if it
        matches the checksum recorded with the version; otherwise it is
        removed (and logged), the rest of the profile stays usable."""
        profile, tags = self._profile_and_tags(name, version)
        if profile is not None and "estimation" in profile:
            from .calibration import TAG, load as load_estimation

            try:
                load_estimation(profile["estimation"], tags.get(TAG))
            except ArtifactError as error:
                log.error("estimation map of %s/%s refused: %s", name, version, error)
                del profile["estimation"]
        return profile

    def get_estimation(self, name: str, version: int) -> Any:
        """The version's loaded, checked performance-estimation map
        (:mod:`driftline.registry.calibration`), or ``None`` if it has none; raises
        :class:`ArtifactIntegrityError` if it was changed."""
        from .calibration import TAG, load as load_estimation

        profile, tags = self._profile_and_tags(name, version)
        if not profile or "estimation" not in profile:
            return None
        return load_estimation(profile["estimation"], tags.get(TAG))

    def _profile_and_tags(self, name: str, version: int) -> tuple[dict | None, dict]:
        validate_name(name, "model")
        version = _version_number(version)
        with self.metadata.transaction() as tx:
            found = self.metadata.profile_and_tags(tx, name, version)
            if found is None:
                raise NotFoundError(self._missing_version_message(tx, name, version))
        return found

    def delete_version(self, name: str, version: int) -> None:
        """Delete a version and its artifact and publish ``deleted``. A
        version an alias points at cannot be deleted (:class:`ConflictError`);
        its number is never reused."""
        validate_name(name, "model")
        version = _version_number(version)
        with self.metadata.transaction(write=True) as tx:
            if not self.metadata.lock_model(tx, name):
                raise NotFoundError(self._missing_model_message(name))
            found = self.metadata.artifact(tx, name, version)
            if found is None:
                raise NotFoundError(self._missing_version_message(tx, name, version))
            held = self.metadata.aliases(tx, name, version)
            if held:
                raise ConflictError(
                    f"version {version} of model {name!r} cannot be deleted: alias(es) {', '.join(held)} "
                    "point at it; move them first"
                )
            self.metadata.delete_version(tx, name, version)
        self.store.remove(found[0])
        self._publish("deleted", name, version=version)

    # -- references and loading ---------------------------------------------------------
    def resolve(self, ref: str) -> ModelVersion:
        """The version behind ``name@alias`` or ``name/version`` (either may
        be written ``models:/...``)."""
        name, alias, version = parse_ref(ref)
        if alias is None:
            return self.get_version(name, version)
        with self.metadata.transaction() as tx:
            target = self.metadata.alias_version(tx, name, alias)
            if target is None:
                if not self.metadata.model_exists(tx, name):
                    raise NotFoundError(self._missing_model_message(name))
                known = self.metadata.aliases(tx, name)
                raise NotFoundError(
                    f"model {name!r} has no alias {alias!r} (aliases: {', '.join(known) if known else 'none'})"
                )
            return self.metadata.versions(tx, name, target)[0]

    def load(self, ref: str) -> LoadedModel:
        """Load the estimator behind ``ref`` (``churn@champion``, ``churn/3``,
        ``models:/churn@champion``, ``models:/churn/3``).

        The artifact's SHA-256 must match the registered one and every type
        it needs must be trusted (:func:`driftline.registry.artifacts.trusted_types`);
        otherwise :class:`ArtifactIntegrityError` or
        :class:`UntrustedArtifactError`, and nothing is constructed.
        """
        found = self.resolve(ref)
        with self.metadata.transaction() as tx:
            row = self.metadata.artifact(tx, found.model, found.version)
        if row is None:  # deleted between resolve and now
            raise NotFoundError(f"version {found.version} of model {found.model!r} was deleted")
        try:
            # The trusted list recorded at registration is valid for exactly
            # the bytes the checksum proves unchanged; it saves re-reading
            # the schema, and skops still audits every node against it.
            path, digest, trusted = row
            estimator = artifacts.loads(self.store.read(path), digest, trusted)
        except RegistryError as error:
            raise type(error)(f"{found.ref}: {error}") from None
        return LoadedModel(estimator=estimator, version=found)

    # -- aliases --------------------------------------------------------------------------
    def set_alias(self, name: str, alias: str, version: int, *, request_id: str | None = None,
                  metrics: Mapping[str, Any] | None = None) -> ModelVersion:
        """Point ``alias`` at ``version`` (creating or moving it) and record
        the move. Moving ``champion`` is a promotion: it publishes
        ``promoted``; other aliases publish ``alias_set``."""
        validate_name(name, "model")
        validate_name(alias, "alias")
        version = _version_number(version)
        metrics = _check_metrics(metrics, "metrics")
        request_id = _optional_text(request_id, "request_id")
        action = "promoted" if alias == CHAMPION else "set"
        with self.metadata.transaction(write=True) as tx:
            previous = self._move_alias(tx, name, alias, version, action, request_id)
            target = self.metadata.versions(tx, name, version)[0]
        self._publish(
            "promoted" if alias == CHAMPION else "alias_set", name, version=version, alias=alias,
            metrics=metrics, request_id=request_id, details={"previous_version": previous},
        )
        return target

    def promote(self, name: str, version: int, *, request_id: str | None = None,
                metrics: Mapping[str, Any] | None = None) -> ModelVersion:
        """Make ``version`` the champion; publishes ``promoted`` carrying
        ``metrics`` (for a retrain: candidate and champion scores)."""
        return self.set_alias(name, CHAMPION, version, request_id=request_id, metrics=metrics)

    def _move_alias(self, tx: Any, name: str, alias: str, version: int | None, action: str,
                    request_id: str | None) -> int | None:
        if not self.metadata.lock_model(tx, name):
            raise NotFoundError(self._missing_model_message(name))
        previous = self.metadata.alias_version(tx, name, alias)
        if version is not None:
            status = self.metadata.version_status(tx, name, version)
            if status is None:
                raise NotFoundError(self._missing_version_message(tx, name, version))
            if alias == CHAMPION and status != "ready":
                raise ConflictError(f"version {version} of model {name!r} is {status} and cannot be champion")
            if previous == version:
                return previous  # already there: nothing to record
        elif previous is None:
            raise NotFoundError(f"model {name!r} has no alias {alias!r}")
        self.metadata.move_alias(tx, name, alias, version, previous, action, time.time(), request_id)
        return previous

    def remove_alias(self, name: str, alias: str) -> None:
        """Remove an alias (recorded in its history; publishes ``alias_set``
        with no version)."""
        validate_name(name, "model")
        validate_name(alias, "alias")
        with self.metadata.transaction(write=True) as tx:
            previous = self._move_alias(tx, name, alias, None, "removed", None)
        self._publish("alias_set", name, alias=alias, details={"previous_version": previous, "removed": True})

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasMove]:
        """Every move of ``alias`` (or of all aliases), oldest first."""
        validate_name(name, "model")
        if alias is not None:
            validate_name(alias, "alias")
        with self.metadata.transaction() as tx:
            if not self.metadata.model_exists(tx, name):
                raise NotFoundError(self._missing_model_message(name))
            rows = self.metadata.alias_history(tx, name, alias)
        return [AliasMove(name, *row) for row in rows]

    def rollback(self, name: str, *, request_id: str | None = None) -> ModelVersion:
        """Move ``champion`` back to the previous champion and publish
        ``rolled_back``. Repeated rollbacks walk further back (a stack of
        promotions); versions deleted since are skipped."""
        validate_name(name, "model")
        request_id = _optional_text(request_id, "request_id")
        with self.metadata.transaction(write=True) as tx:
            if not self.metadata.lock_model(tx, name):
                raise NotFoundError(self._missing_model_message(name))
            current = self.metadata.alias_version(tx, name, CHAMPION)
            if current is None:
                raise NotFoundError(f"model {name!r} has no champion to roll back")
            stack: list[int] = []
            for _alias, version, _previous, action, _at, _request in self.metadata.alias_history(tx, name, CHAMPION):
                if action == "rolled_back":
                    while stack and stack[-1] != version:
                        stack.pop()
                    if not stack:
                        stack.append(version)
                elif action == "removed":
                    stack.clear()
                else:
                    stack.append(version)
            existing = self.metadata.ready_versions(tx, name)
            while stack and stack[-1] == current:
                stack.pop()
            while stack and (stack[-1] not in existing or stack[-1] == current):
                stack.pop()
            if not stack:
                raise ConflictError(f"model {name!r} has no previous champion to roll back to "
                                    f"(champion is version {current})")
            target = stack[-1]
            previous = self._move_alias(tx, name, CHAMPION, target, "rolled_back", request_id)
            result = self.metadata.versions(tx, name, target)[0]
        self._publish("rolled_back", name, version=target, alias=CHAMPION, request_id=request_id,
                      details={"previous_version": previous})
        return result

    # -- policy -------------------------------------------------------------------------
    def get_policy(self, name: str, missing_ok: bool = True) -> Policy:
        """The model's policy; defaults when none was set (or, with
        ``missing_ok``, when the model is not registered yet)."""
        validate_name(name, "model")
        with self.metadata.transaction() as tx:
            exists, stored = self.metadata.get_policy(tx, name)
        if not exists and not missing_ok:
            raise NotFoundError(self._missing_model_message(name))
        return Policy() if stored is None else stored

    def set_policy(self, name: str, policy: Policy | Mapping[str, Any]) -> Policy:
        """Validate and store the model's policy (creating the model if
        needed); publishes ``policy_changed`` with the policy in ``details``.
        Raises :class:`driftline.policy.PolicyError` naming a bad setting."""
        validate_name(name, "model")
        if isinstance(policy, Policy):
            policy.check()
            policy = Policy.from_dict(policy.to_dict())  # normalise exactly like a file would be
        elif isinstance(policy, Mapping):
            policy = Policy.from_dict(dict(policy))
        else:
            raise PolicyError(f"<policy>: must be a Policy or an object (got {type(policy).__name__})")
        text = policy.to_json()
        now = time.time()
        with self.metadata.transaction(write=True) as tx:
            self.metadata.insert_model(tx, name)
            self.metadata.lock_model(tx, name)
            _exists, stored = self.metadata.get_policy(tx, name)
            previous = Policy() if stored is None else stored
            self.metadata.set_policy(tx, name, text, now)
        # "changed": what differs from the previous policy (the defaults when there was none)
        self._publish("policy_changed", name, details={"policy": policy.to_dict(),
                                                       "changed": policy_changes(previous, policy)})
        return policy

    # -- events and housekeeping --------------------------------------------------------
    def publish_event(self, event: ModelEvent) -> None:
        """Publish a model event built elsewhere (the worker's ``failed``)."""
        self.publisher.publish(event)

    def _publish(self, kind: str, name: str, **fields: Any) -> None:
        details = {k: v for k, v in (fields.pop("details", None) or {}).items() if v is not None}
        self.publisher.publish(ModelEvent(event=kind, model=name, timestamp=time.time(), details=details, **fields))

    def gc(self, min_age_s: float = 3600.0) -> list[str]:
        """Remove artifact files no version references (left by killed
        registrations) that are older than ``min_age_s`` — younger ones may
        belong to a registration still in progress. Returns what was removed."""
        with self.metadata.transaction() as tx:
            referenced = self.metadata.artifact_paths(tx)
        cutoff = time.time() - min_age_s
        removed = []
        for relative, path in self.store.files():
            try:
                if relative not in referenced and path.stat().st_mtime <= cutoff:
                    path.unlink()
                    removed.append(relative)
            except FileNotFoundError:
                continue
        return removed

    def close(self) -> None:
        try:
            self.publisher.close()
        finally:
            self.metadata.close()

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Registry({self.metadata.describe()!r}, artifacts={str(self.store.root)!r})"
