"""Estimator recipes and holdout scoring.

A recipe is what a model gets when there is no champion to clone:
a :class:`~sklearn.compose.ColumnTransformer` (numeric: median imputation +
standard scaling; categorical: constant imputation + one-hot encoding that
ignores unknown categories) in front of the estimator. Steps are named
``preprocess`` and ``model``, so a policy's search grid names parameters
like ``model__max_depth``.

Examples
--------
>>> import pandas as pd
>>> X = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "c": ["a", "b", "a", "b"]})
>>> pipe = build_recipe("logistic_regression", X).fit(X, [0, 1, 0, 1])
>>> score(pipe, X, pd.Series([0, 1, 0, 1]), "accuracy")
1.0
>>> is_improvement(0.30, 0.35, "log_loss", margin=0.01), is_improvement(0.8, 0.85, "accuracy", margin=0.0)
(True, False)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from driftline.catalog import ESTIMATORS, METRICS
from driftline.errors import DriftlineError
from driftline.policy import Policy

if TYPE_CHECKING:
    import pandas as pd
# numpy and pandas are imported where used: the policy loads this module to
# list the estimators, and validating a policy must not load them.

__all__ = [
    "RecipeError",
    "task_of",
    "build_recipe",
    "feature_columns_for",
    "score",
    "is_improvement",
    "meets_minimum",
    "lower_is_better",
    "SEARCH_SCORING",
]

#: Promotion metric -> scikit-learn scorer name for GridSearchCV.
SEARCH_SCORING = {
    "accuracy": "accuracy",
    "precision": "precision_macro",
    "recall": "recall_macro",
    "f1": "f1_macro",
    "log_loss": "neg_log_loss",
    "roc_auc": "roc_auc_ovr",
    "mae": "neg_mean_absolute_error",
    "rmse": "neg_root_mean_squared_error",
    "r2": "r2",
}


class RecipeError(DriftlineError, ValueError):
    """A policy asks for something the worker cannot build."""


def __getattr__(name: str) -> Any:
    # The regression recipes, for the code that imported them from here.
    if name == "REGRESSORS":
        return ESTIMATORS.names(task="regression")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def lower_is_better(metric: str) -> bool:
    """Whether lower values of ``metric`` are better (its ``lower_is_better``
    trait; ``False`` for a name that is not a registered metric).

    >>> lower_is_better("log_loss"), lower_is_better("accuracy")
    (True, False)
    """
    return metric in METRICS and bool(METRICS.get(metric).lower_is_better)


def _metric_task(metric: str) -> str:
    # An unknown name counts as a classification metric, as it did against the regression list.
    return "regression" if metric in METRICS and METRICS.get(metric).task == "regression" else "classification"


def task_of(policy: Policy) -> str:
    """``classification`` or ``regression``: the monitor's task when set,
    else what the promotion metric implies."""
    if policy.monitor.task != "auto":
        return policy.monitor.task
    return _metric_task(policy.retrain.promotion_metric)


def check_policy(policy: Policy) -> None:
    """Refuse policies whose parts contradict each other (raised at start-up)."""
    r = policy.retrain
    task = task_of(policy)
    if (r.estimator in ESTIMATORS.names(task="regression")) != (task == "regression"):
        raise RecipeError(f"retrain.estimator={r.estimator!r} does not fit the {task} task "
                          f"(promotion_metric={r.promotion_metric!r}, monitor.task={policy.monitor.task!r})")
    metric_task = _metric_task(r.promotion_metric)
    if metric_task != task:
        raise RecipeError(f"retrain.promotion_metric={r.promotion_metric!r} is a {metric_task} metric "
                          f"but monitor.task is {task!r}")
    for metric in r.minimums:
        if _metric_task(metric) != task:
            raise RecipeError(f"retrain.minimums.{metric} is not a {task} metric")
    if r.search:
        import pandas as pd

        known = set(build_recipe(r.estimator, pd.DataFrame({"x": [0.0]})).get_params(deep=True))
        for name in r.search["param_grid"]:
            if name not in known:
                raise RecipeError(f"retrain.search.param_grid.{name}: not a parameter of the "
                                  f"{r.estimator} recipe (use names like 'model__<param>')")


@dataclass(frozen=True)
class _SklearnEstimator:
    """Builds a fresh scikit-learn estimator for every run (imported only then)."""

    path: str
    params: dict[str, Any]

    def __call__(self) -> Any:
        import importlib

        module, _, class_name = self.path.rpartition(".")
        return getattr(importlib.import_module(module), class_name)(**self.params)


# The estimators behind the recipes, in the policy's listing order.
for _name, _task, _estimator_class, _params in (
    ("logistic_regression", "classification", "sklearn.linear_model.LogisticRegression", {"max_iter": 1000}),
    ("random_forest", "classification", "sklearn.ensemble.RandomForestClassifier",
     {"n_estimators": 100, "random_state": 0, "n_jobs": 1}),
    ("gradient_boosting", "classification", "sklearn.ensemble.GradientBoostingClassifier", {"random_state": 0}),
    ("linear_regression", "regression", "sklearn.linear_model.Ridge", {"alpha": 1.0}),
    ("random_forest_regressor", "regression", "sklearn.ensemble.RandomForestRegressor",
     {"n_estimators": 100, "random_state": 0, "n_jobs": 1}),
    ("gradient_boosting_regressor", "regression", "sklearn.ensemble.GradientBoostingRegressor", {"random_state": 0}),
):
    ESTIMATORS.add(_name, _SklearnEstimator(_estimator_class, _params), task=_task, estimator=_estimator_class,
                   params=_params)


def _estimator(name: str):
    if name not in ESTIMATORS:
        raise RecipeError(f"estimator {name!r} is unknown: expected one of {', '.join(ESTIMATORS.names())}")
    return ESTIMATORS.get(name).implementation()


def build_recipe(name: str, X: pd.DataFrame):
    """The recipe pipeline for ``name``, with columns typed from ``X``
    (numeric dtypes are numeric, everything else categorical)."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [c for c in X.columns if pd.api.types.is_numeric_dtype(X[c])]
    categorical = [c for c in X.columns if c not in numeric]
    transformers = []
    if numeric:
        transformers.append(("numeric", Pipeline([("impute", SimpleImputer(strategy="median")),
                                                   ("scale", StandardScaler())]), numeric))
    if categorical:
        transformers.append(("categorical", Pipeline([
            ("impute", SimpleImputer(strategy="constant", fill_value="<missing>")),
            ("onehot", OneHotEncoder(handle_unknown="ignore")),
        ]), categorical))
    preprocess = ColumnTransformer(transformers, remainder="drop")
    return Pipeline([("preprocess", preprocess), ("model", _estimator(name))])


def feature_columns_for(estimator: Any, X: pd.DataFrame) -> pd.DataFrame:
    """``X`` arranged as a fitted estimator expects it: its
    ``feature_names_in_`` in order (absent ones as missing values)."""
    names = getattr(estimator, "feature_names_in_", None)
    if names is None:
        return X
    return X.reindex(columns=list(names))


def score(estimator: Any, X: pd.DataFrame, y: pd.Series, metric: str) -> float | None:
    """``metric`` of ``estimator`` on ``(X, y)``; ``None`` when it cannot be
    computed (for example a probability metric for a model without
    ``predict_proba``). Multiclass precision/recall/F1 are macro averages;
    for two classes the positive class is the larger label (scikit-learn's
    ``classes_[1]``), the same rule for both models."""
    import numpy as np
    from sklearn import metrics as m

    X = feature_columns_for(estimator, X)
    y_true = y.to_numpy() if hasattr(y, "to_numpy") else np.asarray(y)
    try:
        if metric in ("log_loss", "roc_auc"):
            if not hasattr(estimator, "predict_proba"):
                return None
            proba = estimator.predict_proba(X)
            classes = list(estimator.classes_)
            if metric == "log_loss":
                value = m.log_loss(y_true, proba, labels=classes)
            elif len(classes) == 2:
                value = m.roc_auc_score(y_true == classes[1], proba[:, 1])
            else:
                value = m.roc_auc_score(y_true, proba, multi_class="ovr", labels=classes)
            return _finite(value)
        predicted = estimator.predict(X)
        if metric == "accuracy":
            return _finite(m.accuracy_score(y_true, predicted))
        if metric in ("precision", "recall", "f1"):
            labels = set(y_true.tolist()) | set(np.asarray(predicted).tolist())
            labels |= set(np.asarray(getattr(estimator, "classes_", [])).tolist())
            fn = {"precision": m.precision_score, "recall": m.recall_score, "f1": m.f1_score}[metric]
            if len(labels) <= 2:
                positive = sorted(labels, key=_sort_key)[-1]
                return _finite(fn(y_true, predicted, pos_label=positive, average="binary", zero_division=0))
            return _finite(fn(y_true, predicted, average="macro", zero_division=0))
        y_num = y_true.astype(float)
        if metric == "mae":
            return _finite(m.mean_absolute_error(y_num, predicted))
        if metric == "rmse":
            return _finite(math.sqrt(m.mean_squared_error(y_num, predicted)))
        if metric == "r2":
            return _finite(m.r2_score(y_num, predicted))
    except (ValueError, TypeError, KeyError, IndexError):
        return None  # e.g. a holdout class the model never saw in log_loss
    raise RecipeError(f"unknown metric {metric!r}")


def _sort_key(value: Any) -> tuple:
    return (str(type(value)), value)


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def is_improvement(candidate: float | None, champion: float | None, metric: str, margin: float) -> bool:
    """Whether the candidate beats the champion by at least ``margin``
    (lower is better for metrics registered ``lower_is_better``). No
    champion score: any candidate score wins; no candidate score: never."""
    if candidate is None:
        return False
    if champion is None:
        return True
    gain = champion - candidate if lower_is_better(metric) else candidate - champion
    return gain >= margin - 1e-12


def meets_minimum(value: float | None, metric: str, limit: float) -> bool:
    """``value`` is at least ``limit`` (at most, for lower-is-better metrics)."""
    if value is None:
        return False
    return value <= limit if lower_is_better(metric) else value >= limit
