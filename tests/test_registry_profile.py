"""Reference profiles: exact values against NumPy/pandas, JSON-safe."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from driftline.registry.profile import BINS, MAX_CATEGORIES, QUANTILES, build_profile


def test_numeric_summary_matches_numpy():
    rng = np.random.default_rng(1)
    values = rng.normal(10, 3, size=997)
    frame = pd.DataFrame({"x": np.concatenate([values, [np.nan, np.nan, np.inf]])})
    x = build_profile(frame)["features"]["x"]
    assert x["type"] == "numeric" and x["count"] == 997
    assert x["missing_share"] == pytest.approx(3 / 1000)
    assert (x["min"], x["max"]) == (values.min(), values.max())
    assert x["mean"] == pytest.approx(values.mean(), rel=1e-12)
    assert x["std"] == pytest.approx(values.std(ddof=1), rel=1e-12)
    assert len(x["quantiles"]) == QUANTILES
    np.testing.assert_allclose(x["quantiles"], np.quantile(values, np.linspace(0, 1, QUANTILES)))
    counts, edges = np.histogram(values, bins=BINS, range=(values.min(), values.max()))
    assert x["histogram"] == {"edges": edges.tolist(), "counts": counts.tolist()}
    assert sum(x["histogram"]["counts"]) == 997


def test_categorical_bool_target_and_predictions():
    frame = pd.DataFrame({"plan": ["pro", "free", "free", None, "free"], "active": [True, False, True, True, True],
                          "label": ["yes", "no", "no", "yes", "no"]})
    profile = build_profile(frame, target="label", predictions=np.array([1, 0, 0, 0, 1]))
    assert profile["rows"] == 5 and sorted(profile["features"]) == ["active", "plan"]
    plan = profile["features"]["plan"]
    assert plan == {"type": "categorical", "count": 4, "missing_share": 0.2, "frequencies": {"free": 0.75, "pro": 0.25}}
    assert profile["features"]["active"]["frequencies"] == {"True": 0.8, "False": 0.2}
    assert profile["target"]["frequencies"] == {"no": 0.6, "yes": 0.4}
    assert profile["prediction"]["type"] == "numeric" and profile["prediction"]["mean"] == 0.4


def test_edge_cases_stay_json_safe():
    frame = pd.DataFrame({"empty": [np.nan] * 3, "constant": [2.0, 2.0, 2.0], "ignored": ["a", "b", "c"]})
    profile = build_profile(frame, feature_columns=["empty", "constant"])
    assert sorted(profile["features"]) == ["constant", "empty"]
    json.dumps(profile, allow_nan=False)  # raises on NaN/inf
    assert profile["features"]["empty"]["count"] == 0 and profile["features"]["empty"]["quantiles"] == []
    constant = profile["features"]["constant"]
    assert constant["std"] == 0.0 and constant["quantiles"] == [2.0] * QUANTILES
    assert sum(constant["histogram"]["counts"]) == 3


def test_rare_categories_are_folded():
    values = [f"c{i}" for i in range(MAX_CATEGORIES + 10)]
    frequencies = build_profile(pd.DataFrame({"id": values}))["features"]["id"]["frequencies"]
    assert len(frequencies) == MAX_CATEGORIES + 1
    assert frequencies["__other__"] == pytest.approx(10 / (MAX_CATEGORIES + 10))
    assert sum(frequencies.values()) == pytest.approx(1.0)


def test_bad_columns_are_named():
    frame = pd.DataFrame({"a": [1.0]})
    with pytest.raises(ValueError, match="target column 'y'"):
        build_profile(frame, target="y")
    with pytest.raises(ValueError, match="feature column.*'b'|b are not"):
        build_profile(frame, feature_columns=["a", "b"])
