"""Performance estimation before labels (streams/estimation.py): how far the
estimate is from the realized value, and what it costs the monitor.

Run: ``.venv/bin/python bench/monitor_estimation.py [--windows 10] [--events 20000]``

Estimation error: per data set (River's Bananas and Phishing, scikit-learn's
digits; a logistic regression fitted on 40 % of the rows, its calibration map
on 30 %, windows drawn from the other 30 %), windows through a real
:class:`ModelMonitor` before any label, against scikit-learn's accuracy on the
same window; "shifted": windows resampled toward the hard region (covariate
shift), "flipped": labels where the most varied feature is above its mean moved to
the next class (concept drift, which estimation cannot see). Regression: scikit-learn's diabetes with a
ridge model and its direct loss estimator, windows shifted toward high BMI.

Cost: the same prediction (and joined) events through the monitor with the
version's profile with and without its estimation map, in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from sklearn.datasets import load_diabetes, load_digits  # noqa: E402
from sklearn.linear_model import LogisticRegression, Ridge  # noqa: E402
from sklearn.metrics import accuracy_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from bench._util import row  # noqa: E402
from driftline.events import LabeledRecord, Prediction  # noqa: E402
from driftline.policy import MonitorPolicy  # noqa: E402
from driftline.registry.calibration import fit_estimation  # noqa: E402
from driftline.registry.profile import build_profile  # noqa: E402
from driftline.streams.model_monitor import ModelMonitor  # noqa: E402
from tests.estimation_data import bananas, logistic_regression  # noqa: E402


def _split(n: int, seed: int = 0):
    idx = np.random.default_rng(seed).permutation(n)
    return idx[:int(0.4 * n)], idx[int(0.4 * n):int(0.7 * n)], idx[int(0.7 * n):]


def datasets():
    from river import datasets as rd

    X, y, train, holdout, pool = bananas()
    yield "bananas (River)", X, y, train, holdout, pool, logistic_regression(X.iloc[train], y[train]), 500
    rows = list(rd.Phishing())
    X = pd.DataFrame([x for x, _ in rows]).astype(float)
    y = np.array([int(v) for _, v in rows])
    train, holdout, pool = _split(len(y))
    yield "phishing (River)", X, y, train, holdout, pool, \
        make_pipeline(StandardScaler(), LogisticRegression()).fit(X.iloc[train], y[train]), 200
    d = load_digits(as_frame=True)
    X, y = d.data, d.target.to_numpy()
    train, holdout, pool = _split(len(y))
    yield "digits (scikit-learn, 10 classes)", X, y, train, holdout, pool, \
        make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000)).fit(X.iloc[train], y[train]), 250


def _events(model, X, rows, name, prefix):
    frame = X.iloc[rows]
    proba = model.predict_proba(frame)
    classes = [str(int(c)) for c in model.classes_]
    predicted = model.classes_[proba.argmax(axis=1)]
    preds = [Prediction(f"{prefix}{i}", name, 1, 1.0 + i, {k: float(v) for k, v in f.items()}, int(c),
                        dict(zip(classes, map(float, p))), 5.0)
             for i, (f, p, c) in enumerate(zip(frame.to_dict("records"), proba, predicted))]
    return preds, predicted


def _estimate(profile, preds, window):
    monitor = ModelMonitor("m", MonitorPolicy(window=window, warmup=1), lambda v: profile)
    monitor.observe_predictions(preds, now=1.0)
    return monitor.snapshots(now=2.0)[0].stats["estimated"]["accuracy"]


def estimation_error(windows: int) -> None:
    print("Estimation error: |estimated - realized accuracy| per window (mean / max over windows)")
    for name, X, y, train, holdout, pool, model, window in datasets():
        estimation = fit_estimation(model, X.iloc[holdout], y[holdout], "classification")
        profile = {"estimation": estimation}
        p_top = model.predict_proba(X.iloc[pool]).max(axis=1)
        feature = X.iloc[pool].var().idxmax()
        results = {"unshifted": [], "shifted": [], "flipped": []}
        realized_levels = {k: [] for k in results}
        for seed in range(windows):
            rng = np.random.default_rng(seed)
            for case in results:
                if case == "shifted":
                    weight = (1.0 - p_top) + 0.05
                    rows = pool[rng.choice(len(pool), window, replace=False, p=weight / weight.sum())]
                else:
                    rows = pool[rng.choice(len(pool), window, replace=False)]
                labels = y[rows].copy()
                if case == "flipped":  # concept drift: new labels where the most varied feature is above its mean
                    region = X.iloc[rows][feature].to_numpy() > X.iloc[pool][feature].mean()
                    labels[region] = np.roll(np.unique(y), 1)[np.searchsorted(np.unique(y), labels[region])]
                preds, predicted = _events(model, X, rows, "m", f"{case}{seed}-")
                realized = accuracy_score(labels, predicted)
                results[case].append(abs(_estimate(profile, preds, window) - realized))
                realized_levels[case].append(realized)
        print(f"  {name}: window {window}, calibration {estimation['method']}, ECE {estimation['ece']:.3f}")
        for case, gaps in results.items():
            print(f"    {case:<10} realized accuracy {np.mean(realized_levels[case]):.3f}   "
                  f"error mean {np.mean(gaps):.3f}  max {np.max(gaps):.3f}")

    d = load_diabetes(as_frame=True)
    X, y = d.data, d.target.to_numpy()
    train, holdout, pool = _split(len(y))
    model = Ridge().fit(X.iloc[train], y[train])
    profile = {"estimation": fit_estimation(model, X.iloc[holdout], y[holdout], "regression")}
    bmi = X.iloc[pool]["bmi"].to_numpy()
    weight = np.exp(2 * (bmi - bmi.mean()) / bmi.std())
    rel = []
    for seed in range(windows):
        rows = pool[np.random.default_rng(seed).choice(len(pool), 70, replace=False, p=weight / weight.sum())]
        yhat = model.predict(X.iloc[rows])
        preds = [Prediction(f"r{i}", "m", 1, 1.0, {k: float(v) for k, v in f.items()}, float(p))
                 for i, (f, p) in enumerate(zip(X.iloc[rows].to_dict("records"), yhat))]
        monitor = ModelMonitor("m", MonitorPolicy(window=100, warmup=1, task="regression"), lambda v: profile)
        monitor.observe_predictions(preds, now=1.0)
        est = monitor.snapshots(2.0)[0].stats["estimated"]["mae"]
        realized = float(np.mean(np.abs(y[rows] - yhat)))
        rel.append(abs(est - realized) / realized)
    print(f"  diabetes (scikit-learn, ridge + DLE), windows of 70 toward high BMI: |est - realized| / realized MAE "
          f"mean {np.mean(rel):.1%}  max {np.max(rel):.1%}")


def cost(n_events: int, repeats: int) -> None:
    X, y, train, holdout, pool = bananas()
    model = logistic_regression(X.iloc[train], y[train])
    frame = X.iloc[train].assign(label=y[train])
    base = build_profile(frame, target="label", predictions=list(model.predict(X.iloc[train])))
    with_est = dict(base, estimation=fit_estimation(model, X.iloc[holdout], y[holdout], "classification"))
    rows = np.resize(pool, n_events)
    preds, _ = _events(model, X, rows, "m", "c")
    joined = [LabeledRecord(p.event_id, "m", 1, p.features, p.prediction, int(lbl), p.timestamp, p.timestamp + 1,
                            p.probabilities, 5.0) for p, lbl in zip(preds, y[rows])]

    def run(profile, records, kind):
        monitor = ModelMonitor("m", MonitorPolicy(), lambda v: profile)
        observe = monitor.observe_predictions if kind == "predictions" else monitor.observe_joined
        start_time = time.perf_counter()
        for start in range(0, len(records), 500):  # the pipeline's message size
            observe(records[start:start + 500], now=1.0 + start)
        monitor.flush(now=1e9)
        monitor.snapshots(now=1e9)
        return (time.perf_counter() - start_time) / len(records) * 1e6

    print(f"\nCost per event ({n_events:,} events, best of {repeats}, runs interleaved; baseline: the same "
          "monitor and profile without the estimation map)")
    for kind, records in (("predictions", preds), ("joined", joined)):
        baseline = estimated = float("inf")
        for _ in range(repeats):  # interleaved, so load from other work hits both alike
            baseline = min(baseline, run(base, records, kind))
            estimated = min(estimated, run(with_est, records, kind))
        print(row(f"{kind}: without estimation", baseline, "us/event"))
        print(row(f"{kind}: with CBPE", estimated, "us/event", baseline))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--windows", type=int, default=10)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    t0 = time.perf_counter()
    estimation_error(args.windows)
    cost(args.events, args.repeats)
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
