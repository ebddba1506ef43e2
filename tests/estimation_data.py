"""Data for the performance-estimation tests and bench: River's Bananas
(shipped with River), a calibrated logistic regression, and windows under
covariate shift (resampled toward the hard region) or a pure label flip."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler

from driftline.events import LabeledRecord, Prediction


def bananas(seed: int = 0):
    """``(X, y, train, holdout, pool)``: rows split 40/30/30 at random."""
    from river import datasets

    rows = list(datasets.Bananas())
    X = pd.DataFrame([x for x, _ in rows])
    y = np.array([int(v) for _, v in rows])
    idx = np.random.default_rng(seed).permutation(len(y))
    n = len(y)
    return X, y, idx[:int(0.4 * n)], idx[int(0.4 * n):int(0.7 * n)], idx[int(0.7 * n):]


def logistic_regression(X: pd.DataFrame, y: np.ndarray):
    """Logistic regression on cubic features (Bananas is not linearly separable)."""
    return make_pipeline(PolynomialFeatures(3), StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)


def hard_window(model, X: pd.DataFrame, pool: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Rows of ``pool`` drawn (without replacement) with weight growing near
    the decision boundary: covariate shift, ``P(y | x)`` unchanged."""
    p1 = model.predict_proba(X.iloc[pool])[:, 1]
    weight = 1.0 - np.abs(2.0 * p1 - 1.0) + 0.05
    return pool[np.random.default_rng(seed).choice(len(pool), size=size, replace=False, p=weight / weight.sum())]


def flip_labels(X: pd.DataFrame, y: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Concept drift only: the labels of rows with ``x1 > 0`` are swapped, inputs untouched."""
    labels = y[rows].copy()
    region = X.iloc[rows].iloc[:, 0].to_numpy() > 0
    labels[region] = 1 - labels[region]
    return labels


def events(model, X: pd.DataFrame, rows: np.ndarray, labels: np.ndarray, name: str, version: int = 1,
           prefix: str = "e", t0: float = 1_700_000_000.0):
    """Predictions and the joined records of ``rows`` (as the monitor sees them)."""
    frame = X.iloc[rows]
    proba = model.predict_proba(frame)
    predicted = proba.argmax(axis=1)
    feats = frame.to_dict("records")
    preds, joined = [], []
    for i, (f, p, c, label) in enumerate(zip(feats, proba, predicted, labels)):
        probs = {"0": float(p[0]), "1": float(p[1])}
        f = {k: float(v) for k, v in f.items()}
        preds.append(Prediction(f"{prefix}{i}", name, version, t0 + i, f, int(c), probs, 5.0))
        joined.append(LabeledRecord(f"{prefix}{i}", name, version, f, int(c), int(label), t0 + i, t0 + i + 60.0,
                                    probs, 5.0))
    return preds, joined, predicted
