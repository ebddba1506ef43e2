"""The SDK takes what scikit-learn, NumPy and pandas return: predictions,
probabilities, labels and pandas rows from real fitted pipelines go through
the real broker and come back as the plain values the contract holds; NaN
and infinity are still refused with the contract's message."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from driftline.events import Label, Prediction, ValidationError
from driftline.sdk import Publisher, class_key, normalise_fields
from tests.kafka_helpers import read_records


@pytest.fixture(scope="module")
def cancer():
    data = load_breast_cancer(as_frame=True)
    return data.data, data.target.to_numpy()


# the same labels as int, float, bool and str classes
CLASSES = {
    "int": (lambda y: y, {"0", "1"}, int),
    "float": (lambda y: y.astype(float), {"0", "1"}, float),
    "bool": (lambda y: y.astype(bool), {"false", "true"}, bool),
    "str": (lambda y: np.where(y == 1, "benign", "malignant"), {"benign", "malignant"}, str),
}


def _fit(X, y):
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)


def test_numpy_and_pandas_values_round_trip(settings, cancer):
    X, y0 = cancer
    rows = X.iloc[:5]
    sent = {}
    with Publisher(settings) as publisher:
        for kind, (convert, keys, plain_type) in CLASSES.items():
            y = convert(y0)
            model = _fit(X, y)
            predicted = model.predict(rows)
            proba = model.predict_proba(rows)
            assert type(predicted[0]).__module__ == "numpy"  # what a new user passes along
            for i in range(len(rows)):
                event_id = f"{kind}-{i}"
                publisher.publish_prediction(
                    event_id=event_id, model="cancer", model_version=np.int64(1),
                    features=rows.iloc[i],                                         # a pandas row
                    prediction=predicted[i],                                       # a NumPy scalar
                    probabilities=dict(zip(model.classes_, proba[i])),             # NumPy keys and values
                    latency_ms=np.float32(1.5), timestamp=np.float64(1_700_000_000.0 + i))
                publisher.publish_label(event_id=event_id, model="cancer", label=y[i], timestamp=np.array(1.7e9))
                sent[event_id] = (predicted[i].item(), proba[i].tolist(), list(model.classes_), y[i].item(),
                                  plain_type, keys, rows.iloc[i].to_dict())
        # bulk, with NumPy values in the dicts
        publisher.publish_predictions([{"event_id": "bulk-0", "model": "cancer", "model_version": np.int32(2),
                                        "timestamp": 1.7e9, "features": {"a": np.float64(0.25), "b": np.str_("x")},
                                        "prediction": np.bool_(True), "probabilities": {np.bool_(True): np.float64(1.0)}}])
    predictions = {p.event_id: p for p in read_records(settings, "predictions", Prediction,
                                                        until=lambda m: len(m) >= len(sent) + 1)}
    labels = {l.event_id: l for l in read_records(settings, "labels", Label, until=lambda m: len(m) >= len(sent))}
    assert len(predictions) == len(sent) + 1 and len(labels) == len(sent)
    for event_id, (prediction, proba, classes, label, plain_type, keys, features) in sent.items():
        got = predictions[event_id]
        assert type(got.prediction) is plain_type and got.prediction == prediction
        assert got.probabilities == {class_key(c.item() if hasattr(c, "item") else c): p
                                     for c, p in zip(classes, proba)}
        assert set(got.probabilities) == keys
        assert got.features == features and all(type(v) is float for v in got.features.values())
        assert got.model_version == 1 and got.latency_ms == 1.5
        assert type(labels[event_id].label) is plain_type and labels[event_id].label == label
        assert labels[event_id].timestamp == 1.7e9
    bulk = predictions["bulk-0"]
    assert (bulk.model_version, bulk.prediction, bulk.probabilities, bulk.features) == (
        2, True, {"true": 1.0}, {"a": 0.25, "b": "x"})


def test_nan_and_infinity_are_refused_with_the_contracts_message(settings, cancer):
    X, y = cancer
    model = _fit(X, y)
    row = X.iloc[0].copy()
    proba = model.predict_proba(X.iloc[:1])[0]
    base = dict(event_id="e-1", model="cancer", model_version=1, features=row,
                prediction=model.predict(X.iloc[:1])[0], probabilities=dict(zip(model.classes_, proba)))
    with Publisher(settings) as publisher:
        cases = [
            ("probabilities", {np.int64(0): np.float64("nan"), np.int64(1): proba[1]}, "probabilities.0", math.nan),
            ("probabilities", {np.int64(0): np.float64(1.5), np.int64(1): proba[1]}, "probabilities.0", 1.5),
            ("prediction", np.float64("inf"), "prediction", math.inf),
            ("latency_ms", np.float64("-inf"), "latency_ms", -math.inf),
            ("features", row.where(row.index != "mean radius", np.nan), "features.mean radius", math.nan),
        ]
        for name, value, field, shown in cases:
            with pytest.raises(ValidationError) as caught:
                publisher.publish_prediction(**{**base, name: value})
            error = caught.value
            assert error.field == field
            assert type(error.value) is float  # plain after conversion, so the message shows the value
            assert (math.isnan(error.value) if math.isnan(shown) else error.value == shown)
            assert field in str(error) and repr(float(shown)) in str(error)
            assert "np." not in str(error)
        with pytest.raises(ValidationError) as caught:
            publisher.publish_label(event_id="e-1", model="cancer", label=np.float32("nan"))
        assert caught.value.field == "label" and "nan" in str(caught.value)
        # a frame built from an array has integer column names: refused by name, not a crash
        with pytest.raises(ValidationError) as caught:
            publisher.publish_prediction(**{**base, "features": pd.Series([1.0, 2.0])})
        assert caught.value.field == "features" and "feature names must be strings" in str(caught.value)
        publisher.publish_prediction(**base)  # the valid one still goes out
    got = read_records(settings, "predictions", Prediction, until=lambda m: len(m) >= 1, quiet_s=1.0)
    assert [p.event_id for p in got] == ["e-1"]


def test_normalise_fields_converts_without_inventing():
    out = normalise_fields({"prediction": np.str_("yes"), "features": pd.Series({"x": np.int8(3), "y": pd.NA}),
                            "probabilities": pd.Series({"yes": np.float32(0.5), "no": np.float32(0.5)}),
                            "timestamp": pd.Timestamp("2024-01-01T00:00:00")})
    assert out == {"prediction": "yes", "features": {"x": 3, "y": None}, "probabilities": {"yes": 0.5, "no": 0.5},
                   "timestamp": 1704067200.0}
    assert type(out["prediction"]) is str and type(out["features"]["x"]) is int
