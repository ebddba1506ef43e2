"""Alert messages are true: a concept-drift alert reports ADWIN's own
estimate of the recent error (the mean of its window after the cut) and of
the level it rose from (the mean of the part it dropped), checked against
River's ADWIN fed the same stream; a policy_changed event says what changed."""

from __future__ import annotations

import numpy as np
import pytest
from river.drift import ADWIN

from driftline.events import LabeledRecord
from driftline.policy import DetectorSpec, MonitorPolicy, Policy
from driftline.streams.drift import ConceptDriftDetector
from driftline.streams.model_monitor import ModelMonitor

MODEL = "churn"


def _error_stream(seed=3):
    rng = np.random.default_rng(seed)
    # 3% errors, then 60%: the concept changed
    return np.concatenate([(rng.random(3000) < 0.03), (rng.random(1500) < 0.6)]).astype(float)


def test_adwin_levels_are_the_window_means_river_reports():
    errors = _error_stream()
    det = ConceptDriftDetector(DetectorSpec("adwin", {"delta": 0.002}), "classification")
    hits = det.update(errors)
    assert hits and hits[0] >= 3000  # nothing before the change
    # River's ADWIN on the same stream, cut by cut
    river, fed_since_cut, at_hits = ADWIN(delta=0.002), [], {}
    for i, x in enumerate(errors):
        river.update(x)
        fed_since_cut.append(x)
        if river.drift_detected:
            kept = int(river.width)
            dropped = fed_since_cut[:len(fed_since_cut) - kept]
            at_hits[i] = (river.estimation, float(np.mean(dropped)), kept)
            fed_since_cut = []
    increases = [i for i in sorted(at_hits) if at_hits[i][0] > at_hits[i][1]]
    assert increases == hits
    for i, (recent, before, n) in zip(hits, det.levels):
        assert recent == pytest.approx(at_hits[i][0]) and before == pytest.approx(at_hits[i][1])
        assert n == at_hits[i][2]
        # the window after the cut is the stream's last n errors: its mean, not a 0
        assert recent == pytest.approx(errors[i - n + 1:i + 1].mean())
        assert recent > 3 * before and before < 0.05


def test_concept_drift_alert_reports_the_estimate_not_a_zero():
    errors = _error_stream()
    policy = MonitorPolicy(task="classification", warmup=500, window=300, cooldown_s=1e9,
                           concept_drift=DetectorSpec("adwin", {"delta": 0.002}))
    mon = ModelMonitor(MODEL, policy, lambda v: None)
    records = [LabeledRecord(f"e{i}", MODEL, 1, {"x": 1.0}, 1, 0 if e else 1, 100.0 + i, 101.0 + i, None, None)
               for i, e in enumerate(errors)]
    alerts = []
    for start in range(0, len(records), 250):
        alerts += mon.observe_joined(records[start:start + 250], now=1000.0 + start).alerts
    alerts += mon.flush(now=9999.0).alerts
    drift = [a for a in alerts if a.kind == "concept_drift"]
    assert len(drift) == 1
    alert = drift[0]
    # River's ADWIN after the warm-up's errors are skipped, as the monitor feeds it
    river, since, expected = ADWIN(delta=0.002), [], None
    for x in errors[500:]:
        river.update(x)
        since.append(x)
        if river.drift_detected:
            kept = int(river.width)
            before = float(np.mean(since[:len(since) - kept]))
            since = []
            if river.estimation > before:
                expected = (river.estimation, before, kept)
                break
    assert expected is not None
    assert alert.value == pytest.approx(expected[0]) and alert.threshold == pytest.approx(expected[1])
    assert alert.value > 3 * alert.threshold > 0
    assert f"error rate {expected[0]:.4g} over the last {expected[2]} labeled predictions" in alert.message
    assert f"vs {expected[1]:.4g} before the change" in alert.message


def test_policy_changed_event_and_demo_line_say_what_changed(tmp_path):
    from driftline.demo.watch import describe_policy_change as _describe_policy_change
    from driftline.registry import open_registry
    from tests.registry_fixtures import registry_settings_for

    class Collect:  # the events the registry publishes (validated as the real publisher does)
        enabled = True

        def __init__(self):
            self.events = []

        def publish(self, event):
            self.events.append(event)

        def close(self):
            pass

    with open_registry(registry_settings_for("sqlite", tmp_path)) as reg:
        reg.publisher = Collect()
        reg.create_model(MODEL)
        reg.set_policy(MODEL, Policy.from_dict({"monitor": {"window": 200}}))
        reg.set_policy(MODEL, Policy.from_dict({"monitor": {"window": 200, "warmup": 50}}))
        sent = reg.publisher.events
    changed = [e.details["changed"] for e in sent if e.event == "policy_changed"]
    assert changed == [{"monitor.window": [1000, 200]}, {"monitor.warmup": [Policy().monitor.warmup, 50]}]
    assert _describe_policy_change(sent[-1].details) == f"monitor.warmup {Policy().monitor.warmup} -> 50"
