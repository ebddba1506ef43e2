"""Estimated performance end to end: a calibrated model in the registry, a
real ``python -m driftline.streams`` process on the real broker; the ``metrics`` topic
carries the estimate before any label is published, the alert fires on it,
and once the labels come the gap series shows estimated minus realized."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score

from driftline.events import Alert, MetricsSnapshot, decode
from driftline.policy import Policy
from driftline.sdk import Publisher
from driftline.registry.calibration import fit_estimation
from tests.estimation_data import bananas, events, hard_window, logistic_regression
from tests.kafka_helpers import read_records, read_topic
from tests.test_monitor_pipeline import monitors  # noqa: F401  (fixture)

WINDOW = 500
MODEL = "bananas"


def _newest_snapshot(settings, want) -> MetricsSnapshot:
    newest: list[MetricsSnapshot] = []

    def done(messages) -> bool:
        while done.seen < len(messages):
            newest.extend(s for s in decode(MetricsSnapshot, messages[done.seen].value) if s.model == MODEL)
            done.seen += 1
        return bool(newest) and want(newest[-1])

    done.seen = 0
    read_topic(settings, settings.topics.metrics, until=done, timeout_s=90)
    assert newest and want(newest[-1]), newest[-1].stats if newest else None
    return newest[-1]


def test_estimate_before_labels_alert_and_gap_through_the_broker(settings, monitors):  # noqa: F811
    from driftline.registry import open_registry

    X, y, train, holdout, pool = bananas()
    model = logistic_regression(X.iloc[train], y[train])
    with open_registry(settings, publish=False) as reg:
        reg.create_model(MODEL, exist_ok=True)
        reg.set_policy(MODEL, Policy.from_dict({"monitor": {
            "window": WINDOW, "warmup": 1, "estimated_thresholds": {"accuracy": 0.8},
            "retrain_on": ["estimated_performance"]}}))
        reg.register_version(MODEL, model, estimation=fit_estimation(model, X.iloc[holdout], y[holdout],
                                                                     "classification"))
    rows = hard_window(model, X, pool, WINDOW, seed=1)
    preds, joined, predicted = events(model, X, rows, y[rows], MODEL)
    realized = accuracy_score(y[rows], predicted)

    monitors("one")
    with Publisher(settings) as publisher:
        publisher.publish_predictions([p.to_dict() for p in preds], bulk=True)
    snap = _newest_snapshot(settings, lambda s: s.stats.get("predictions") == WINDOW)
    assert snap.stats["joined"] == 0  # no label was published
    est = snap.stats["estimated"]
    assert est["n"] == WINDOW and abs(est["accuracy"] - realized) <= 0.03, (est["accuracy"], realized)
    assert est["accuracy"] < 0.8

    # More predictions from the same region: a window wholly after the warm-up, so the alert comes.
    more, _, _ = events(model, X, rows[:50], y[rows[:50]], MODEL, prefix="m")
    with Publisher(settings) as publisher:
        publisher.publish_predictions([p.to_dict() for p in more], bulk=True)
    alerts = read_records(settings, "alerts", Alert, until=lambda m: len(m) >= 1, timeout_s=60)
    assert [(a.kind, a.subject, a.detector) for a in alerts] == [("estimated_performance", "accuracy", "cbpe")]
    assert alerts[0].value < 0.8 and alerts[0].threshold == 0.8

    # The labels arrive: realized accuracy, and the gap over the same 500 joined pairs.
    with Publisher(settings) as publisher:
        publisher.publish_labels([{"event_id": r.event_id, "model": MODEL, "label": r.label,
                                   "timestamp": r.label_timestamp} for r in joined], bulk=True)
    snap = _newest_snapshot(settings, lambda s: s.stats.get("joined") == WINDOW)
    assert snap.rolling["accuracy"] == pytest.approx(realized)
    [gap] = snap.stats["estimation_gap"]["windows"]
    assert abs(gap) <= 0.03
    # over the same rows: the mean calibrated confidence of the predicted class minus the realized accuracy
    assert gap == pytest.approx(est["accuracy"] - realized, abs=1e-9)
    assert np.isfinite(snap.stats["estimated"]["roc_auc"])
