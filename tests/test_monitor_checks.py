"""The alert checks: one class per alert kind, each in the module named after it."""

from __future__ import annotations

from driftline.policy import ALERT_KINDS, MonitorPolicy
from driftline.streams.checks import JOINED_CHECKS, PREDICTION_CHECKS, Check
from driftline.streams import state as state_codec
from driftline.streams.model_monitor import VersionMonitor

MODULES = {"data_drift": "data_drift", "concept_drift": "concept_drift", "prediction_drift": "prediction_drift",
           "metric": "metric", "latency": "latency", "outliers": "outliers", "estimated_performance": "estimated"}


def test_every_alert_kind_has_one_check_in_its_own_module():
    checks = PREDICTION_CHECKS + JOINED_CHECKS
    assert sorted(c.kind for c in checks) == sorted(ALERT_KINDS)
    for check in checks:
        assert issubclass(check, Check) and check.watches in ("predictions", "joined")
        assert check.__module__ == f"driftline.streams.checks.{MODULES[check.kind]}"
    assert {c.watches for c in JOINED_CHECKS} == {"joined"} and {c.watches for c in PREDICTION_CHECKS} == {"predictions"}


def test_a_new_version_runs_every_check_and_its_state_round_trips():
    policy = MonitorPolicy()
    vm = VersionMonitor("m", 1, policy)
    assert list(vm.checks) == [c.kind for c in PREDICTION_CHECKS + JOINED_CHECKS]
    again = VersionMonitor.from_state(vm.to_state(), policy)
    assert state_codec.dumps(again.to_state()) == state_codec.dumps(vm.to_state())  # numpy inside
