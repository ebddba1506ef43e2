"""The registry's store contract: every query and update the
:class:`~driftline.registry.core.Registry` runs, one method each.

:class:`MetadataStore` is the contract (as MLflow's abstract model-registry
store); :class:`SQLMetadataStore` implements it once, in the plain SQL both
backends run (:mod:`driftline.registry.backends` keeps the dialect
differences: placeholders, how a write transaction locks, the DDL). The
client holds the rules and no SQL.

Methods take the running transaction (``tx``) from :meth:`MetadataStore.transaction`,
so one rule's reads and writes commit together, as before.

Examples
--------
>>> import shutil, tempfile
>>> from pathlib import Path
>>> from driftline.registry.backends import SQLiteBackend
>>> tmp = tempfile.mkdtemp()
>>> store = SQLMetadataStore(SQLiteBackend(Path(tmp) / "registry.db"))
>>> store.init_schema()
>>> with store.transaction(write=True) as tx:
...     store.insert_model(tx, "churn", "who leaves"), store.insert_model(tx, "churn")
(True, False)
>>> with store.transaction() as tx:
...     [m.name for m in store.models(tx)], store.model_exists(tx, "fraud")
(['churn'], False)
>>> store.close(); shutil.rmtree(tmp)
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from typing import Any

from driftline.policy import Policy

from .backends import Backend, Tx
from .models import Model, ModelVersion

__all__ = ["MetadataStore", "SQLMetadataStore"]

_VERSION_COLUMNS = (
    "model, version, status, created_at, metrics, params, tags, lineage, profile, "
    "artifact_sha256, request_id, reason, artifact_size, artifact_path, trusted_types"
)


class MetadataStore(ABC):
    """Where the registry's models, versions, aliases and policies live.

    Write methods must run in a ``transaction(write=True)``; :meth:`lock_model`
    serialises writers of one model until that transaction ends.
    """

    # -- housekeeping -----------------------------------------------------------------
    @abstractmethod
    def transaction(self, write: bool = False) -> AbstractContextManager[Any]:
        """One transaction: commits on success, rolls back on any error."""
        raise NotImplementedError

    @abstractmethod
    def init_schema(self) -> None:
        """Create the tables if needed; refuse a newer schema."""
        raise NotImplementedError

    @abstractmethod
    def describe(self) -> str:
        """Where the store is, printable (no password)."""
        raise NotImplementedError

    @abstractmethod
    def close(self) -> None:
        raise NotImplementedError

    # -- models ------------------------------------------------------------------------
    @abstractmethod
    def lock_model(self, tx: Any, name: str) -> bool:
        """Lock the model's row until the transaction ends; ``False`` if there is no such model."""
        raise NotImplementedError

    @abstractmethod
    def insert_model(self, tx: Any, name: str, description: str = "") -> bool:
        """Create the model unless it exists; ``True`` if it was created."""
        raise NotImplementedError

    @abstractmethod
    def model_exists(self, tx: Any, name: str) -> bool:
        raise NotImplementedError

    @abstractmethod
    def models(self, tx: Any, name: str | None = None) -> list[Model]:
        """Every model (or just ``name``), by name, with its aliases."""
        raise NotImplementedError

    # -- versions ----------------------------------------------------------------------
    @abstractmethod
    def insert_version(self, tx: Any, name: str, row: dict[str, Any]) -> int:
        """Take the model's next version number and insert the version's row
        (``row``: the ``versions`` columns but ``model`` and ``version``,
        metadata as JSON text, ``trusted_types`` a list); returns the number.
        The model must exist."""
        raise NotImplementedError

    @abstractmethod
    def versions(self, tx: Any, name: str, version: int | None = None) -> list[ModelVersion]:
        """The model's versions (or just ``version``), oldest first."""
        raise NotImplementedError

    @abstractmethod
    def versions_by_request(self, tx: Any, name: str, request_id: str) -> list[ModelVersion]:
        """The versions registered for retrain request ``request_id``, oldest first."""
        raise NotImplementedError

    @abstractmethod
    def version_numbers(self, tx: Any, name: str) -> list[int]:
        raise NotImplementedError

    @abstractmethod
    def ready_versions(self, tx: Any, name: str) -> set[int]:
        """The numbers of the model's versions whose status is ``ready``."""
        raise NotImplementedError

    @abstractmethod
    def version_status(self, tx: Any, name: str, version: int) -> str | None:
        """The version's status, ``None`` if there is no such version."""
        raise NotImplementedError

    @abstractmethod
    def artifact(self, tx: Any, name: str, version: int) -> tuple[str, str, list[str] | None] | None:
        """(artifact path, SHA-256, trusted types recorded at registration), or ``None``."""
        raise NotImplementedError

    @abstractmethod
    def artifact_paths(self, tx: Any) -> set[str]:
        """Every artifact a version references."""
        raise NotImplementedError

    @abstractmethod
    def profile_and_tags(self, tx: Any, name: str, version: int) -> tuple[dict | None, dict] | None:
        """The version's profile (``None`` if none) and tags, or ``None`` if no such version."""
        raise NotImplementedError

    @abstractmethod
    def delete_version(self, tx: Any, name: str, version: int) -> None:
        raise NotImplementedError

    # -- aliases -----------------------------------------------------------------------
    @abstractmethod
    def alias_version(self, tx: Any, name: str, alias: str) -> int | None:
        """The version ``alias`` points at, ``None`` if it is not set."""
        raise NotImplementedError

    @abstractmethod
    def aliases(self, tx: Any, name: str, version: int | None = None) -> list[str]:
        """The model's alias names (or those pointing at ``version``), sorted."""
        raise NotImplementedError

    @abstractmethod
    def move_alias(self, tx: Any, name: str, alias: str, version: int | None, previous: int | None,
                   action: str, at: float, request_id: str | None) -> None:
        """Point ``alias`` at ``version`` (``None``: remove it; ``previous``:
        where it points now) and record the move in its history."""
        raise NotImplementedError

    @abstractmethod
    def alias_history(self, tx: Any, name: str, alias: str | None = None) -> list[tuple]:
        """Every move of ``alias`` (or of all the model's aliases), oldest first:
        (alias, version, previous_version, action, at, request_id)."""
        raise NotImplementedError

    # -- policies ----------------------------------------------------------------------
    @abstractmethod
    def get_policy(self, tx: Any, name: str) -> tuple[bool, Policy | None]:
        """(whether the model exists, its stored policy or ``None``)."""
        raise NotImplementedError

    @abstractmethod
    def set_policy(self, tx: Any, name: str, policy_json: str, at: float) -> None:
        """Store the model's policy and record it in its history."""
        raise NotImplementedError


class SQLMetadataStore(MetadataStore):
    """The contract in plain SQL (``?`` placeholders), on a
    :class:`~driftline.registry.backends.Backend` (SQLite or PostgreSQL)."""

    def __init__(self, backend: Backend):
        self.backend = backend

    def transaction(self, write: bool = False) -> AbstractContextManager[Tx]:
        return self.backend.transaction(write=write)

    def init_schema(self) -> None:
        self.backend.init_schema()

    def describe(self) -> str:
        return self.backend.describe()

    def close(self) -> None:
        self.backend.close()

    # -- models ------------------------------------------------------------------------
    def lock_model(self, tx: Tx, name: str) -> bool:
        return self.backend.lock_model(tx, name) is not None

    def insert_model(self, tx: Tx, name: str, description: str = "") -> bool:
        cursor = tx.execute(
            "INSERT INTO models (name, description, created_at, last_version) VALUES (?, ?, ?, 0) "
            "ON CONFLICT (name) DO NOTHING",
            (name, description, time.time()),
        )
        return cursor.rowcount == 1

    def model_exists(self, tx: Tx, name: str) -> bool:
        return tx.one("SELECT 1 FROM models WHERE name = ?", (name,)) is not None

    def models(self, tx: Tx, name: str | None = None) -> list[Model]:
        where, params = ("WHERE m.name = ?", (name,)) if name is not None else ("", ())
        rows = tx.all(
            "SELECT m.name, m.description, m.created_at, m.policy IS NOT NULL, "
            "(SELECT MAX(v.version) FROM versions v WHERE v.model = m.name) "
            f"FROM models m {where} ORDER BY m.name",
            params,
        )
        alias_rows = tx.all(
            "SELECT model, alias, version FROM aliases" + (" WHERE model = ?" if name is not None else ""), params
        )
        aliases: dict[str, dict[str, int]] = {}
        for model, alias, version in alias_rows:
            aliases.setdefault(model, {})[alias] = version
        return [
            Model(name=r[0], description=r[1], created_at=r[2], has_policy=bool(r[3]), latest_version=r[4],
                  aliases=dict(sorted(aliases.get(r[0], {}).items())))
            for r in rows
        ]

    # -- versions ----------------------------------------------------------------------
    def insert_version(self, tx: Tx, name: str, row: dict[str, Any]) -> int:
        (last,) = self.backend.lock_model(tx, name)
        version = last + 1
        tx.execute("UPDATE models SET last_version = ? WHERE name = ?", (version, name))
        tx.execute(
            f"INSERT INTO versions ({_VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (name, version, row["status"], row["created_at"], row["metrics"], row["params"], row["tags"],
             row["lineage"], row["profile"], row["artifact_sha256"], row["request_id"], row["reason"],
             row["artifact_size"], row["artifact_path"], json.dumps(row["trusted_types"])),
        )
        return version

    def versions(self, tx: Tx, name: str, version: int | None = None) -> list[ModelVersion]:
        return self._versions(tx, name, version)

    def versions_by_request(self, tx: Tx, name: str, request_id: str) -> list[ModelVersion]:
        return self._versions(tx, name, where="request_id = ?", params=(request_id,))

    def _versions(self, tx: Tx, name: str, version: int | None = None, where: str = "",
                  params: tuple = ()) -> list[ModelVersion]:
        clause, args = "model = ?", [name]
        if version is not None:
            clause += " AND version = ?"
            args.append(version)
        if where:
            clause += " AND " + where
            args.extend(params)
        rows = tx.all(f"SELECT {_VERSION_COLUMNS} FROM versions WHERE {clause} ORDER BY version", args)
        if not rows:
            return []
        aliases: dict[int, list[str]] = {}
        for alias, target in tx.all("SELECT alias, version FROM aliases WHERE model = ? ORDER BY alias", (name,)):
            aliases.setdefault(target, []).append(alias)
        return [self._version_from_row(row, aliases.get(row[1], [])) for row in rows]

    @staticmethod
    def _version_from_row(row: tuple, aliases: list[str]) -> ModelVersion:
        return ModelVersion(
            model=row[0], version=row[1], status=row[2], created_at=row[3], metrics=json.loads(row[4]),
            params=json.loads(row[5]), tags=json.loads(row[6]), lineage=json.loads(row[7]),
            profile=None if row[8] is None else json.loads(row[8]), artifact_sha256=row[9], request_id=row[10],
            reason=row[11], aliases=aliases, artifact_size=row[12],
        )

    def version_numbers(self, tx: Tx, name: str) -> list[int]:
        return [r[0] for r in tx.all("SELECT version FROM versions WHERE model = ? ORDER BY version", (name,))]

    def ready_versions(self, tx: Tx, name: str) -> set[int]:
        return {r[0] for r in tx.all("SELECT version FROM versions WHERE model = ? AND status = 'ready'", (name,))}

    def version_status(self, tx: Tx, name: str, version: int) -> str | None:
        row = tx.one("SELECT status FROM versions WHERE model = ? AND version = ?", (name, version))
        return None if row is None else row[0]

    def artifact(self, tx: Tx, name: str, version: int) -> tuple[str, str, list[str] | None] | None:
        row = tx.one("SELECT artifact_path, artifact_sha256, trusted_types FROM versions "
                     "WHERE model = ? AND version = ?", (name, version))
        if row is None:
            return None
        return row[0], row[1], None if row[2] is None else json.loads(row[2])

    def artifact_paths(self, tx: Tx) -> set[str]:
        return {r[0] for r in tx.all("SELECT artifact_path FROM versions")}

    def profile_and_tags(self, tx: Tx, name: str, version: int) -> tuple[dict | None, dict] | None:
        row = tx.one("SELECT profile, tags FROM versions WHERE model = ? AND version = ?", (name, version))
        if row is None:
            return None
        return (None if row[0] is None else json.loads(row[0])), (json.loads(row[1]) if row[1] else {})

    def delete_version(self, tx: Tx, name: str, version: int) -> None:
        tx.execute("DELETE FROM versions WHERE model = ? AND version = ?", (name, version))

    # -- aliases -----------------------------------------------------------------------
    def alias_version(self, tx: Tx, name: str, alias: str) -> int | None:
        row = tx.one("SELECT version FROM aliases WHERE model = ? AND alias = ?", (name, alias))
        return None if row is None else row[0]

    def aliases(self, tx: Tx, name: str, version: int | None = None) -> list[str]:
        if version is None:
            return [r[0] for r in tx.all("SELECT alias FROM aliases WHERE model = ? ORDER BY alias", (name,))]
        return [r[0] for r in tx.all("SELECT alias FROM aliases WHERE model = ? AND version = ? ORDER BY alias",
                                     (name, version))]

    def move_alias(self, tx: Tx, name: str, alias: str, version: int | None, previous: int | None,
                   action: str, at: float, request_id: str | None) -> None:
        if version is None:
            tx.execute("DELETE FROM aliases WHERE model = ? AND alias = ?", (name, alias))
        elif previous is None:
            tx.execute("INSERT INTO aliases (model, alias, version, updated_at) VALUES (?, ?, ?, ?)",
                       (name, alias, version, at))
        else:
            tx.execute("UPDATE aliases SET version = ?, updated_at = ? WHERE model = ? AND alias = ?",
                       (version, at, name, alias))
        tx.execute(
            "INSERT INTO alias_history (model, alias, version, previous_version, action, at, request_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (name, alias, version, previous, action, at, request_id),
        )

    def alias_history(self, tx: Tx, name: str, alias: str | None = None) -> list[tuple]:
        where, params = ("model = ?", [name]) if alias is None else ("model = ? AND alias = ?", [name, alias])
        return tx.all(
            f"SELECT alias, version, previous_version, action, at, request_id FROM alias_history "
            f"WHERE {where} ORDER BY id",
            params,
        )

    # -- policies ----------------------------------------------------------------------
    def get_policy(self, tx: Tx, name: str) -> tuple[bool, Policy | None]:
        row = tx.one("SELECT policy FROM models WHERE name = ?", (name,))
        if row is None:
            return False, None
        return True, None if row[0] is None else Policy.from_json(row[0])

    def set_policy(self, tx: Tx, name: str, policy_json: str, at: float) -> None:
        tx.execute("UPDATE models SET policy = ?, policy_updated_at = ? WHERE name = ?", (policy_json, at, name))
        tx.execute("INSERT INTO policy_history (model, policy, at) VALUES (?, ?, ?)", (name, policy_json, at))
