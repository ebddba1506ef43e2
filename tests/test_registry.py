"""Registry core behaviour on both backends (SQLite and PostgreSQL)."""

from __future__ import annotations

import numpy as np
import pytest

from driftline.config import ConfigError, load_settings
from driftline.events import ValidationError
from driftline.policy import Policy, PolicyError
from driftline.registry import ConflictError, NotFoundError, RegistryError, open_registry
from driftline.registry.profile import build_profile
from tests.registry_fixtures import (  # noqa: F401  (fixtures)
    backend,
    pipeline_data,
    pipeline_model,
    reg,
    reg_settings,
    small_model,
)

X_PROBE = np.array([[0.5, 0.5], [2.5, 0.5]])


def test_versions_are_numbered_and_carry_metadata(reg):
    profile = {"rows": 4, "features": {"a": {"type": "categorical", "count": 4, "missing_share": 0.0,
                                             "frequencies": {"x": 1.0}}}}
    v1 = reg.register_version(
        "churn", small_model(1.0), metrics={"accuracy": 0.75, "log_loss": None}, params={"C": 1.0},
        tags={"team": "growth"}, lineage={"rows": 4, "data_sha256": "ab" * 32, "parent_version": None},
        profile=profile, request_id="req-1",
    )
    v2 = reg.register_version("churn", small_model(0.1), reason=None)
    assert (v1.version, v2.version) == (1, 2)
    got = reg.get_version("churn", 1)
    assert got.metrics == {"accuracy": 0.75, "log_loss": None}
    assert got.params == {"C": 1.0} and got.tags == {"team": "growth"}
    assert got.lineage == {"rows": 4, "data_sha256": "ab" * 32, "parent_version": None}
    assert got.profile == profile and reg.get_profile("churn", 1) == profile
    assert reg.get_profile("churn", 2) is None
    assert got.status == "ready" and got.request_id == "req-1" and len(got.artifact_sha256) == 64
    assert [v.version for v in reg.list_versions("churn")] == [1, 2]
    [model] = reg.list_models()
    assert (model.name, model.latest_version, model.aliases) == ("churn", 2, {})
    assert reg.find_version_by_request("churn", "req-1").version == 1
    assert reg.find_version_by_request("churn", "req-9") is None


def test_models_are_independent_and_created_once(reg):
    created = reg.create_model("fraud", description="card fraud")
    assert created.description == "card fraud" and created.latest_version is None
    assert reg.create_model("fraud").description == "card fraud"  # exist_ok keeps it unchanged
    with pytest.raises(ConflictError, match="already exists"):
        reg.create_model("fraud", exist_ok=False)
    reg.register_version("churn", small_model())
    reg.register_version("churn", small_model())
    assert reg.register_version("fraud", small_model()).version == 1
    assert [m.name for m in reg.list_models()] == ["churn", "fraud"]


def test_load_returns_the_fitted_estimator(reg):
    first, second = small_model(1.0), small_model(0.01)
    reg.register_version("churn", first)
    reg.register_version("churn", second)
    reg.promote("churn", 2)
    loaded = reg.load("churn@champion")
    assert loaded.version.version == 2 and loaded.version.aliases == ["champion"]
    np.testing.assert_array_equal(loaded.estimator.predict_proba(X_PROBE), second.predict_proba(X_PROBE))
    estimator, version = reg.load("churn/1")
    assert version.version == 1
    np.testing.assert_array_equal(estimator.predict_proba(X_PROBE), first.predict_proba(X_PROBE))
    assert not np.array_equal(first.predict_proba(X_PROBE), second.predict_proba(X_PROBE))


def test_pipeline_with_trees_round_trips_exactly(reg):
    df, y = pipeline_data()
    model = pipeline_model(df=df, y=y)
    reg.register_version("churn", model, profile=build_profile(df.assign(y=y), target="y"))
    loaded = reg.load("churn/1").estimator
    np.testing.assert_array_equal(loaded.predict_proba(df), model.predict_proba(df))
    assert reg.get_profile("churn", 1)["features"]["x0"]["count"] == len(df)


def test_aliases_move_and_keep_history(reg):
    for c in (1.0, 0.5, 0.1):
        reg.register_version("churn", small_model(c))
    reg.set_alias("churn", "challenger", 3)
    reg.set_alias("churn", "challenger", 2)
    reg.promote("churn", 1, request_id="r-1")
    assert reg.resolve("churn@challenger").version == 2
    assert reg.get_model("churn").aliases == {"champion": 1, "challenger": 2}
    history = reg.alias_history("churn", "challenger")
    assert [(m.previous_version, m.version, m.action) for m in history] == [(None, 3, "set"), (3, 2, "set")]
    [promotion] = reg.alias_history("churn", "champion")
    assert (promotion.version, promotion.action, promotion.request_id) == (1, "promoted", "r-1")
    reg.remove_alias("churn", "challenger")
    with pytest.raises(NotFoundError, match="no alias 'challenger'.*champion"):
        reg.resolve("churn@challenger")
    assert reg.alias_history("churn", "challenger")[-1].action == "removed"


def test_rollback_walks_back_through_previous_champions(reg):
    for c in (1.0, 0.5, 0.1, 0.05):
        reg.register_version("churn", small_model(c))
    with pytest.raises(NotFoundError, match="no champion"):
        reg.rollback("churn")
    reg.promote("churn", 1)
    with pytest.raises(ConflictError, match="no previous champion"):
        reg.rollback("churn")
    reg.promote("churn", 2)
    reg.promote("churn", 3)
    reg.promote("churn", 4)
    assert reg.rollback("churn").version == 3
    reg.delete_version("churn", 2)  # a former champion, no alias now: deletable, skipped by rollback
    assert reg.rollback("churn").version == 1
    assert reg.resolve("churn@champion").version == 1
    with pytest.raises(ConflictError):
        reg.rollback("churn")
    # A new promotion after rollbacks starts from the current champion.
    reg.promote("churn", 4)
    assert reg.rollback("churn").version == 1
    actions = [(m.action, m.version) for m in reg.alias_history("churn", "champion")]
    assert actions == [("promoted", 1), ("promoted", 2), ("promoted", 3), ("promoted", 4), ("rolled_back", 3),
                       ("rolled_back", 1), ("promoted", 4), ("rolled_back", 1)]


def test_aliased_versions_cannot_be_deleted_and_numbers_are_not_reused(reg):
    reg.register_version("churn", small_model())
    reg.register_version("churn", small_model())
    reg.set_alias("churn", "staging", 2)
    with pytest.raises(ConflictError, match="staging"):
        reg.delete_version("churn", 2)
    reg.delete_version("churn", 1)
    assert [v.version for v in reg.list_versions("churn")] == [2]
    with pytest.raises(NotFoundError, match="no version 1"):
        reg.load("churn/1")
    reg.remove_alias("churn", "staging")
    reg.delete_version("churn", 2)
    assert reg.register_version("churn", small_model()).version == 3
    assert len(list(reg.store.files())) == 1  # deleted versions' artifacts are gone


def test_rejected_versions_are_kept_but_never_champion(reg):
    v = reg.register_version("churn", small_model(), status="rejected", reason="worse than champion",
                             metrics={"candidate_accuracy": 0.6})
    assert (v.status, v.reason) == ("rejected", "worse than champion")
    with pytest.raises(ConflictError, match="rejected"):
        reg.promote("churn", 1)
    with pytest.raises(RegistryError, match="status 'bogus'"):
        reg.register_version("churn", small_model(), status="bogus")


def test_missing_things_give_clear_errors(reg):
    with pytest.raises(NotFoundError, match="model 'nope' is not registered"):
        reg.resolve("nope@champion")
    with pytest.raises(NotFoundError, match="model 'nope' is not registered"):
        reg.list_versions("nope")
    reg.register_version("churn", small_model())
    with pytest.raises(NotFoundError, match=r"model 'churn' has no version 7 \(versions: 1\)"):
        reg.get_version("churn", 7)
    with pytest.raises(NotFoundError, match="no alias 'champion'"):
        reg.load("churn@champion")
    with pytest.raises(NotFoundError):
        reg.set_alias("churn", "champion", 5)
    with pytest.raises(NotFoundError):
        reg.delete_version("churn", 5)
    with pytest.raises(NotFoundError):
        reg.get_profile("churn", 5)


@pytest.mark.parametrize("name", ["../etc", "a/b", "a\\b", "", ".hidden", "x" * 129, "a..b", "with space"])
def test_bad_names_are_refused(reg, name):
    with pytest.raises(ValidationError, match="model"):
        reg.register_version(name, small_model())
    assert list(reg.store.files()) == []  # nothing was written anywhere


@pytest.mark.parametrize("ref", ["churn", "churn@", "churn/x", "churn/0", "churn@a/1", "churn@../x"])
def test_bad_references_are_refused(reg, ref):
    with pytest.raises((RegistryError, ValidationError)):
        reg.resolve(ref)


def test_bad_metadata_is_refused_before_anything_is_stored(reg):
    with pytest.raises(RegistryError, match="metrics.accuracy"):
        reg.register_version("churn", small_model(), metrics={"accuracy": float("nan")})
    with pytest.raises(RegistryError, match="tags.team"):
        reg.register_version("churn", small_model(), tags={"team": 3})
    with pytest.raises(RegistryError, match="profile"):
        reg.register_version("churn", small_model(), profile={"rows": float("inf")})
    assert list(reg.store.files()) == []
    with pytest.raises(NotFoundError):
        reg.get_model("churn")  # not even the model was created
    reg.create_model("churn")
    with pytest.raises(ValidationError, match="alias"):
        reg.set_alias("churn", "../x", 1)


def test_policy_defaults_validation_and_storage(reg):
    assert reg.get_policy("churn") == Policy()  # unknown model: defaults
    reg.register_version("churn", small_model())
    assert reg.get_policy("churn", missing_ok=False) == Policy()
    stored = reg.set_policy("churn", {"monitor": {"cooldown_s": 60}, "retrain": {"promotion_metric": "f1"}})
    again = reg.get_policy("churn")
    assert again == stored and again.monitor.cooldown_s == 60.0 and again.retrain.promotion_metric == "f1"
    with pytest.raises(PolicyError, match="retrain.margin"):
        reg.set_policy("churn", {"retrain": {"margin": -1}})
    assert reg.get_policy("churn") == stored  # a refused policy changes nothing
    with pytest.raises(NotFoundError):
        reg.get_policy("other", missing_ok=False)
    assert reg.get_model("churn").has_policy


def test_postgres_needs_an_artifact_directory():
    settings = load_settings(environ={}, registry="postgresql://postgres@127.0.0.1:5432/test")
    with pytest.raises(ConfigError, match="DRIFTLINE_REGISTRY_ARTIFACTS"):
        open_registry(settings)


def test_registry_reopens_with_its_data(reg_settings):
    with open_registry(reg_settings) as first:
        first.register_version("churn", small_model())
        first.promote("churn", 1)
    with open_registry(reg_settings) as second:
        assert second.resolve("churn@champion").version == 1
        assert second.register_version("churn", small_model()).version == 2


def test_postgres_reconnects_after_the_server_drops_the_connection(tmp_path, request):
    import psycopg

    from tests.registry_fixtures import PG_URL, registry_settings_for

    settings = registry_settings_for("postgres", tmp_path, request=request)
    with open_registry(settings) as reg:
        reg.register_version("churn", small_model())
        reg.backend.ping_after_s = 0.0  # ping before every use (default: after 5 s idle)
        pid = reg.backend.connection().info.backend_pid
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
        assert reg.register_version("churn", small_model()).version == 2
        assert reg.backend.connection().info.backend_pid != pid
