"""Where the registry's rows live: one small interface, two implementations.

:class:`SQLiteBackend` (the embedded default, one file next to the
artifacts) and :class:`PostgresBackend` (several workers or hosts). Both run
the same plain SQL (:mod:`driftline.registry.store`), written with ``?``
placeholders; the differences are confined here: placeholders, how a write transaction takes its lock, and
the DDL of an auto-increment column.

Write transactions are serialised per model: SQLite's ``BEGIN IMMEDIATE``
takes the database write lock; PostgreSQL locks the model's row with
``SELECT ... FOR UPDATE`` (:meth:`Backend.lock_model`). Version numbers come
from a counter on that row, bumped in the same transaction as the version's
insert, so they have no gaps or collisions and are never reused.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from driftline.extras import require

from .errors import RegistryError

__all__ = ["Backend", "SQLiteBackend", "PostgresBackend", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1

# {serial} is the auto-increment primary key column type of each backend.
_DDL = [
    """CREATE TABLE IF NOT EXISTS registry_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS models (
        name TEXT PRIMARY KEY,
        description TEXT NOT NULL DEFAULT '',
        created_at DOUBLE PRECISION NOT NULL,
        last_version INTEGER NOT NULL DEFAULT 0,
        policy TEXT,
        policy_updated_at DOUBLE PRECISION)""",
    """CREATE TABLE IF NOT EXISTS versions (
        model TEXT NOT NULL REFERENCES models(name),
        version INTEGER NOT NULL,
        status TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        metrics TEXT NOT NULL,
        params TEXT NOT NULL,
        tags TEXT NOT NULL,
        lineage TEXT NOT NULL,
        profile TEXT,
        artifact_path TEXT NOT NULL,
        artifact_sha256 TEXT NOT NULL,
        artifact_size BIGINT NOT NULL,
        trusted_types TEXT,
        request_id TEXT,
        reason TEXT,
        PRIMARY KEY (model, version))""",
    "CREATE INDEX IF NOT EXISTS versions_request ON versions (model, request_id)",
    """CREATE TABLE IF NOT EXISTS aliases (
        model TEXT NOT NULL REFERENCES models(name),
        alias TEXT NOT NULL,
        version INTEGER NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (model, alias))""",
    """CREATE TABLE IF NOT EXISTS alias_history (
        id {serial},
        model TEXT NOT NULL,
        alias TEXT NOT NULL,
        version INTEGER,
        previous_version INTEGER,
        action TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        request_id TEXT)""",
    "CREATE INDEX IF NOT EXISTS alias_history_model ON alias_history (model, alias, id)",
    """CREATE TABLE IF NOT EXISTS policy_history (
        id {serial},
        model TEXT NOT NULL,
        policy TEXT,
        at DOUBLE PRECISION NOT NULL)""",
]


class Backend:
    """A database the registry runs its SQL on.

    Subclasses provide :meth:`_connect`, :meth:`_begin` and :meth:`lock_model`;
    :meth:`transaction` yields a :class:`Tx` with ``execute``/``one``/``all``.
    One connection per backend, guarded by a lock (a registry may be shared
    by a daemon's threads).
    """

    serial = "INTEGER PRIMARY KEY"
    placeholder = "?"

    def _database_errors(self) -> tuple[type[BaseException], ...]:
        """What the driver raises for a broken or closed connection."""
        return (sqlite3.Error, OSError)

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._conn: Any = None

    # -- subclass hooks ---------------------------------------------------------
    def _connect(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _begin(self, conn: Any, write: bool) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def lock_model(self, tx: "Tx", name: str) -> tuple | None:
        """Lock the model's row until the transaction ends; return
        ``(last_version,)`` or ``None`` if there is no such model."""
        return tx.one("SELECT last_version FROM models WHERE name = ?", (name,))

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------
    def sql(self, statement: str) -> str:
        return statement if self.placeholder == "?" else statement.replace("?", self.placeholder)

    def connection(self) -> Any:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    @contextmanager
    def transaction(self, write: bool = False) -> Iterator["Tx"]:
        """Run a block in one transaction: commit on success, roll back on
        any error (the error propagates)."""
        with self._lock:
            conn = self.connection()
            self._begin(conn, write)
            tx = Tx(self, conn)
            try:
                yield tx
            except BaseException:  # any error, an interrupt too, rolls back; it is re-raised
                self._rollback(conn)
                raise
            else:
                conn.commit()

    def _rollback(self, conn: Any) -> None:
        try:
            conn.rollback()
        except self._database_errors():  # a dead connection: drop it, reconnect next time
            self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except self._database_errors():  # already broken: it is dropped either way
                pass

    def init_schema(self) -> None:
        with self.transaction(write=True) as tx:
            self._init_lock(tx)
            for statement in _DDL:
                tx.execute(statement.replace("{serial}", self.serial))
            # Columns added after a registry may already have been created.
            if not self._has_column(tx, "versions", "trusted_types"):
                tx.execute("ALTER TABLE versions ADD COLUMN trusted_types TEXT")
            row = tx.one("SELECT value FROM registry_meta WHERE key = 'schema_version'")
            if row is None:
                tx.execute("INSERT INTO registry_meta (key, value) VALUES ('schema_version', ?)",
                           (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise RegistryError(
                    f"the registry at {self.describe()} has schema version {row[0]}, newer than this "
                    f"Driftline understands ({SCHEMA_VERSION}); upgrade Driftline"
                )

    def _has_column(self, tx: "Tx", table: str, column: str) -> bool:
        return tx.one(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ? AND column_name = ?", (table, column)) is not None

    def _init_lock(self, tx: "Tx") -> None:
        """Serialise schema creation between processes (SQLite: already by
        BEGIN IMMEDIATE)."""

    def close(self) -> None:
        with self._lock:
            self._drop()


class Tx:
    """A running transaction: plain SQL with ``?`` placeholders."""

    def __init__(self, backend: Backend, conn: Any):
        self.backend = backend
        self.conn = conn

    def execute(self, statement: str, params: Sequence[Any] = ()) -> Any:
        cursor = self.conn.cursor()
        cursor.execute(self.backend.sql(statement), tuple(params))
        return cursor

    def one(self, statement: str, params: Sequence[Any] = ()) -> tuple | None:
        row = self.execute(statement, params).fetchone()
        return None if row is None else tuple(row)

    def all(self, statement: str, params: Sequence[Any] = ()) -> list[tuple]:
        return [tuple(row) for row in self.execute(statement, params).fetchall()]


class SQLiteBackend(Backend):
    """The embedded registry database: one SQLite file (WAL mode).

    Several processes on one host may share it: writers queue on SQLite's
    lock (``busy_timeout``), readers never block.
    """

    serial = "INTEGER PRIMARY KEY AUTOINCREMENT"

    def __init__(self, path: str | Path, busy_timeout_s: float = 60.0):
        super().__init__()
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s

    def describe(self) -> str:
        return str(self.path)

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN ourselves, so a write
            # transaction takes the lock up front (BEGIN IMMEDIATE) instead of
            # failing with SQLITE_BUSY when it upgrades from a read.
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None,
                                   check_same_thread=False)
            self._set_wal(conn)
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
        except (sqlite3.Error, OSError) as error:
            raise RegistryError(f"cannot open the registry database {str(self.path)!r}: {error}") from None
        return conn

    def _set_wal(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL. Switching needs an exclusive lock and SQLite may
        answer "database is locked" at once, without its busy handler, while
        another process creates the same file: retry until the busy timeout."""
        deadline = time.monotonic() + self.busy_timeout_s
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _begin(self, conn: sqlite3.Connection, write: bool) -> None:
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def _has_column(self, tx: Tx, table: str, column: str) -> bool:
        return any(row[1] == column for row in tx.all(f"PRAGMA table_info({table})"))


class PostgresBackend(Backend):
    """The registry in PostgreSQL (psycopg 3), for several workers or hosts.

    Tables live in the connection's current schema, so one database can hold
    several registries (``?options=-csearch_path%3Dmyschema`` in the URL).
    """

    serial = "BIGSERIAL PRIMARY KEY"
    placeholder = "%s"

    def _database_errors(self) -> tuple[type[BaseException], ...]:
        import psycopg

        return (psycopg.Error, OSError)

    def __init__(self, url: str):
        require("psycopg", "postgres", "a PostgreSQL registry")  # up front: the extra it needs, named
        super().__init__()
        self._last_used = 0.0
        # SQLAlchemy-style URLs name the driver; libpq does not accept that.
        self.url = url.replace("postgresql+psycopg://", "postgresql://", 1)

    def describe(self) -> str:
        # Never print a password (user-info or a password= parameter).
        from driftline.redact import location

        return location(self.url)

    def _connect(self) -> Any:
        import psycopg

        try:
            return psycopg.connect(self.url, autocommit=False, connect_timeout=10)
        except psycopg.Error as error:
            raise RegistryError(f"cannot connect to the registry database {self.describe()}: "
                                f"{str(error).strip().splitlines()[0] if str(error).strip() else error}") from None

    #: A connection idle longer than this is pinged before use, so a server
    #: restart or an idle-session timeout costs a reconnect, not an error.
    ping_after_s = 5.0

    def connection(self) -> Any:
        import time

        import psycopg

        conn = self._conn
        if conn is not None and not conn.closed and time.monotonic() - self._last_used > self.ping_after_s:
            try:
                conn.execute("SELECT 1")
                conn.rollback()
            except psycopg.Error:
                self._drop()
        if self._conn is not None and self._conn.closed:
            self._conn = None
        self._last_used = time.monotonic()
        return super().connection()

    def _begin(self, conn: Any, write: bool) -> None:
        # psycopg opens a transaction implicitly on the first statement.
        if conn.info.transaction_status != 0:  # not IDLE: a leftover from a broken block
            conn.rollback()

    def lock_model(self, tx: Tx, name: str) -> tuple | None:
        return tx.one("SELECT last_version FROM models WHERE name = ? FOR UPDATE", (name,))

    def _init_lock(self, tx: Tx) -> None:
        # CREATE TABLE IF NOT EXISTS races between sessions in PostgreSQL;
        # an advisory lock keyed by the schema serialises it.
        schema = tx.one("SELECT current_schema()")
        if schema is None or schema[0] is None:
            raise RegistryError(f"the registry database {self.describe()} has no usable schema "
                                "(does the schema in search_path exist?)")
        tx.execute("SELECT pg_advisory_xact_lock(?)", (zlib.crc32(f"driftline-registry:{schema[0]}".encode()),))
