"""Fixtures and helpers shared by the registry tests (tests/test_registry*.py).

``backend`` is parametrised over ``sqlite`` (a directory in tmp_path) and
``postgres`` (a fresh schema per test in the database at
``DRIFTLINE_TEST_POSTGRES_URL``, default ``postgresql://postgres@127.0.0.1:5432/test``,
dropped afterwards, so parallel runs never collide). The PostgreSQL
parameters are skipped, with the reason, only when the server is unreachable.
"""

from __future__ import annotations

import io
import json
import os
import uuid
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from driftline.config import Settings, load_settings

PG_URL = os.environ.get("DRIFTLINE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgres"]


@lru_cache(maxsize=1)
def postgres_unreachable() -> str | None:
    """Why PostgreSQL cannot be used, or ``None`` when it can."""
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as error:  # any failure means: skip, and say why
        return f"PostgreSQL unreachable at {PG_URL}: {type(error).__name__}: {str(error).strip()[:200]}"
    return None


def _pg_schema_url(schema: str) -> str:
    separator = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{separator}options=-csearch_path%3D{schema}"


def registry_settings_for(kind: str, tmp_path: Path, base: Settings | None = None, request=None) -> Settings:
    """Settings whose registry is a fresh SQLite directory or PostgreSQL
    schema (cleaned up through ``request.addfinalizer``)."""
    base = base or load_settings(environ={}, bootstrap_servers="127.0.0.1:1")
    if kind == "sqlite":
        return base.with_overrides(registry=str(tmp_path / "registry"), registry_artifacts=None)
    reason = postgres_unreachable()
    if reason:
        print(reason)
        pytest.skip(reason)
    import psycopg

    schema = f"dlreg_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")

    def drop() -> None:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

    if request is not None:
        request.addfinalizer(drop)
    return base.with_overrides(registry=_pg_schema_url(schema), registry_artifacts=str(tmp_path / "artifacts"))


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def reg_settings(backend, tmp_path, request) -> Settings:
    """Settings with a fresh registry on each backend and no broker."""
    return registry_settings_for(backend, tmp_path, request=request)


@pytest.fixture
def reg(reg_settings):
    from driftline.registry import open_registry

    registry = open_registry(reg_settings, publish=False)
    yield registry
    registry.close()


def small_model(c: float = 1.0):
    """A tiny fitted classifier (fast to store): a different ``c`` gives
    different coefficients, so versions can be told apart by prediction."""
    from sklearn.linear_model import LogisticRegression

    X = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [3.0, 0.0]])
    return LogisticRegression(C=c).fit(X, [0, 0, 1, 1])


def pipeline_data(n: int = 300, seed: int = 0):
    """Ten features (8 numeric, 2 categorical) and a binary target."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    df = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(8)})
    df["c0"] = rng.choice(["a", "b", "c"], size=n)
    df["c1"] = rng.choice(["u", "v"], size=n)
    y = ((df["x0"] + (df["c0"] == "a") * 1.5 + rng.normal(scale=0.5, size=n)) > 0.5).astype(int)
    return df, y


def pipeline_model(n_estimators: int = 20, df=None, y=None):
    """Scaler + one-hot + gradient boosting on ten features (needs
    ``sklearn.tree._tree.Tree`` trusted)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    if df is None:
        df, y = pipeline_data()
    pre = ColumnTransformer([
        ("num", StandardScaler(), [f"x{i}" for i in range(8)]),
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["c0", "c1"]),
    ])
    return Pipeline([("pre", pre), ("gb", GradientBoostingClassifier(n_estimators=n_estimators, random_state=0))]).fit(df, y)


def malicious_skops(marker: str) -> bytes:
    """A skops file whose loading would call ``os.mkdir(marker)``: a live
    payload if ``os.mkdir`` were trusted."""
    import skops.io as sio

    with zipfile.ZipFile(io.BytesIO(sio.dumps((marker,)))) as archive:
        schema = json.loads(archive.read("schema.json"))
    protocol = schema.pop("protocol")
    schema.pop("_skops_version", None)
    evil = {"__class__": "mkdir", "__module__": "os", "__loader__": "ConstructorFromReduceNode",
            "content": schema, "protocol": protocol}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("schema.json", json.dumps(evil))
    return buffer.getvalue()


class _MkdirOnUnpickle:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def malicious_pickle(marker: str) -> bytes:
    """A pickle whose unpickling calls ``os.mkdir(marker)``."""
    import pickle

    return pickle.dumps(_MkdirOnUnpickle(marker))


def replace_artifact(registry, name: str, version: int, data: bytes, fix_checksum: bool) -> None:
    """Overwrite a stored artifact (an attacker or a disk fault); with
    ``fix_checksum`` also the recorded SHA-256, so only the type check is left."""
    from driftline.registry.artifacts import sha256

    with registry.backend.transaction() as tx:
        (relative,) = tx.one("SELECT artifact_path FROM versions WHERE model = ? AND version = ?", (name, version))
    registry.store.path(relative).write_bytes(data)
    if fix_checksum:
        with registry.backend.transaction(write=True) as tx:
            tx.execute("UPDATE versions SET artifact_sha256 = ? WHERE model = ? AND version = ?",
                       (sha256(data), name, version))
