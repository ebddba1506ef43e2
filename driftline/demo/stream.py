"""The demo's data: River's Agrawal generator [1]_ before and after a concept
drift, and the demo's policy (small windows, short waits).

References
----------
.. [1] Agrawal, R., Imielinski, T. and Swami, A. (1993). Database mining: A
   performance perspective. IEEE Transactions on Knowledge and Data
   Engineering, 5(6), 914-925.
"""

from __future__ import annotations

from typing import Any, Iterator

__all__ = ["DEMO_MODEL", "DEMO_POLICY", "FEATURES", "BEFORE_FUNCTION", "AFTER_FUNCTION", "agrawal_rows",
           "agrawal_frame"]

DEMO_MODEL = "agrawal"
FEATURES = ("salary", "commission", "age", "elevel", "car", "zipcode", "hvalue", "hyears", "loan")
BEFORE_FUNCTION, AFTER_FUNCTION = 0, 2

#: The demo's policy: small windows and short waits so detection and
#: retraining happen within seconds; the worker retrains on the last few
#: seconds of labels, i.e. on data from after the drift (debounce_s and
#: window_s together make sure of that).
DEMO_POLICY: dict[str, Any] = {
    "monitor": {
        "task": "classification",
        "window": 500,
        "warmup": 200,
        "label_ttl_s": 60,
        "cooldown_s": 30,
        "drift_window": 300,
        "concept_drift": {"name": "adwin", "params": {"delta": 0.002}},
        "metric_thresholds": {"accuracy": 0.8},
        "retrain_on": ["concept_drift", "metric"],
        "retrain_cooldown_s": 20,
    },
    "retrain": {
        "window_rows": 2000,
        "window_s": 4,
        "min_rows": 300,
        "holdout_fraction": 0.2,
        "promotion_metric": "accuracy",
        "margin": 0.02,
        "debounce_s": 4,
        "estimator": "gradient_boosting",
    },
}


def agrawal_rows(function: int, seed: int) -> Iterator[tuple[dict[str, Any], int]]:
    """Endless ``(features, label)`` pairs of River's Agrawal generator.

    >>> x, y = next(agrawal_rows(0, seed=1))
    >>> sorted(x) == sorted(FEATURES), y in (0, 1)
    (True, True)
    """
    from river.datasets import synth

    for x, y in synth.Agrawal(classification_function=function, seed=seed):
        yield {name: (float(v) if isinstance(v, float) else int(v)) for name, v in x.items()}, int(y)


def agrawal_frame(function: int, rows: int, seed: int):
    """A pandas frame of ``rows`` Agrawal rows with a ``label`` column."""
    import pandas as pd

    stream = agrawal_rows(function, seed)
    data = [dict(x, label=y) for x, y in (next(stream) for _ in range(rows))]
    return pd.DataFrame(data)
