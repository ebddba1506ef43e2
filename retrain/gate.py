"""The promotion gate: fit the candidate and check its fitness, not one number.

What a data scientist does by hand, from the model's policy:

1. **Minimum rows per class** (classifiers, ``retrain.min_rows_per_class``):
   every class of the window needs that many *training* rows, else the run
   is refused with the counts (:func:`check_class_counts`).
2. **Fit** on the training part only; with ``retrain.search`` a grid search
   scored by cross-validation on the training part (the holdout never
   takes part in fitting or tuning).
3. **Cross-validate** the chosen configuration (``retrain.cv_folds``
   contiguous folds, stratified for classifiers when every class has enough
   rows, no shuffling, so it is deterministic): mean and standard deviation
   of the promotion metric, scored by the same :func:`driftline.retrain.recipes.score`
   as the holdout.
4. **Overfitting**: the training score minus the cross-validated score
   (the holdout score when ``cv_folds`` is 0; the sign flipped for
   lower-is-better metrics) above ``retrain.max_overfit_gap`` rejects.
5. **Holdout** (the newest slice, untouched until now): candidate and
   champion scores, ``retrain.margin`` and ``retrain.minimums`` as before.

Every score goes into :attr:`GateResult.scores` (the version's metrics and
the model event); the per-fold scores and the split's row identity go into
the lineage.

Examples
--------
>>> import pandas as pd
>>> from driftline.retrain.data import clean_frame
>>> data = clean_frame(pd.DataFrame({"x": [float(i % 7) for i in range(40)]}),
...                    pd.Series([i % 2 for i in range(40)], dtype=object))
>>> check_class_counts(data, data, 25)
Traceback (most recent call last):
...
driftline.retrain.gate.GateRefusal: too few training rows per class: class 0 has 20, class 1 has 20 (retrain.min_rows_per_class=25)
"""

from __future__ import annotations

import hashlib
import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable

from driftline.errors import DriftlineError
from driftline.policy import Policy

from .data import TrainingData
from .recipes import (SEARCH_SCORING, feature_columns_for, is_improvement, lower_is_better, meets_minimum, score,
                      task_of)

__all__ = ["GateRefusal", "GateResult", "check_class_counts", "evaluate", "json_safe", "split_identity", "seeds",
           "cross_validate"]


class GateRefusal(DriftlineError):
    """The window cannot be trained on as the policy asks (the failed event's reason)."""


@dataclass
class GateResult:
    """What the gate measured and decided.

    Parameters
    ----------
    fitted
        The candidate, fitted on the training part.
    scores
        Metric name -> value (``None`` when it cannot be computed).
    reasons
        Why the candidate must not be promoted (empty: promote).
    search
        The grid search's choice (``best_params``, ``cv_score``), if any.
    details
        For the lineage: fold scores, the splitter, the gap's basis.
    """

    fitted: Any
    scores: dict[str, float | None] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    search: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


def _label(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def check_class_counts(window: TrainingData, train: TrainingData, minimum: int) -> None:
    """Raise :class:`GateRefusal` when a class of ``window`` has fewer than
    ``minimum`` rows in ``train``."""
    if minimum <= 0:
        return
    counts = train.y.value_counts().to_dict()
    classes = sorted(set(window.y.tolist()), key=lambda v: (str(type(v)), v))
    short = [c for c in classes if counts.get(c, 0) < minimum]
    if short:
        shown = ", ".join(f"class {_label(c)} has {counts.get(c, 0)}" for c in classes)
        raise GateRefusal(f"too few training rows per class: {shown} (retrain.min_rows_per_class={minimum})")


def split_identity(train: TrainingData, holdout: TrainingData) -> dict[str, Any]:
    """Which rows were fitted on and which were held out: counts, first and
    last event id, a sha256 over the event ids (in order) and the time
    boundary, so a split can be checked row by row against the lineage."""

    def part(data: TrainingData) -> dict[str, Any]:
        ids = [str(v) for v in data.meta["event_id"]] if "event_id" in data.meta else \
            [str(v) for v in range(len(data))]
        stamps = data.meta["timestamp"].tolist() if "timestamp" in data.meta else []
        return {"rows": len(ids), "first_event_id": ids[0] if ids else None,
                "last_event_id": ids[-1] if ids else None,
                "ids_sha256": hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest(),
                "min_timestamp": min(stamps) if stamps else None, "max_timestamp": max(stamps) if stamps else None}

    return {"train": part(train), "holdout": part(holdout)}


def seeds(estimator: Any) -> dict[str, Any]:
    """Every ``random_state`` parameter of an estimator (deep), for lineage."""
    try:
        params = estimator.get_params(deep=True)
    except (AttributeError, TypeError):
        return {}
    return {k: v for k, v in sorted(params.items()) if k == "random_state" or k.endswith("__random_state")
            if v is None or isinstance(v, int)}


def _splitter(train: TrainingData, folds: int, classification: bool):
    from sklearn.model_selection import KFold, StratifiedKFold

    if classification and int(train.y.value_counts().min()) >= folds:
        return StratifiedKFold(n_splits=folds), "stratified_kfold"
    return KFold(n_splits=folds), "kfold"


def cross_validate(estimator: Any, train: TrainingData, metric: str, folds: int,
                   classification: bool) -> tuple[list[float | None], str]:
    """Fold scores of an unfitted ``estimator`` (cloned per fold) on ``train``."""
    from sklearn.base import clone

    splitter, name = _splitter(train, folds, classification)
    X, y = train.X, train.y
    labels = y.tolist()
    scores: list[float | None] = []
    for fit_idx, val_idx in splitter.split(X, labels):
        fold = clone(estimator).fit(X.iloc[fit_idx], [labels[i] for i in fit_idx])
        scores.append(score(fold, X.iloc[val_idx], y.iloc[val_idx].reset_index(drop=True), metric))
    return scores, name


def _gap(train_score: float | None, other: float | None, metric: str) -> float | None:
    if train_score is None or other is None:
        return None
    return other - train_score if lower_is_better(metric) else train_score - other


def evaluate(estimator: Any, train: TrainingData, holdout: TrainingData, policy: Policy,
             champion: Any = None, phase: Callable[[str], None] | None = None) -> GateResult:
    """Fit ``estimator`` (unfitted) on ``train`` and run the gate; raises
    ValueError/TypeError from scikit-learn when fitting fails."""
    from sklearn.base import clone

    phase = phase or (lambda name: None)
    r = policy.retrain
    metric = r.promotion_metric
    classification = task_of(policy) == "classification"
    X = feature_columns_for(estimator, train.X) if hasattr(estimator, "feature_names_in_") else train.X
    fit_data = TrainingData(X, train.y, train.meta, train.report)
    y = train.y.tolist()
    search_info: dict[str, Any] = {}
    if r.search:
        from sklearn.model_selection import GridSearchCV

        splitter, _ = _splitter(fit_data, r.search.get("cv", 3), classification)
        grid = GridSearchCV(estimator, r.search["param_grid"], cv=splitter, scoring=SEARCH_SCORING[metric],
                            n_jobs=1, refit=True, error_score="raise")
        grid.fit(X, y)  # the training part only: the holdout never tunes
        fitted = grid.best_estimator_
        search_info = {"best_params": json_safe(grid.best_params_), "cv_score": json_safe(grid.best_score_),
                       "search_rows": len(y)}
    else:
        fitted = estimator.fit(X, y)
    result = GateResult(fitted=fitted, search=search_info)

    scores: dict[str, float | None] = {}
    details: dict[str, Any] = {"cv_folds": r.cv_folds, "max_overfit_gap": r.max_overfit_gap,
                               "min_rows_per_class": r.min_rows_per_class}
    scores[f"train_{metric}"] = score(fitted, train.X, train.y, metric)
    cv_mean = None
    if r.cv_folds:
        phase("cross_validating")
        if len(train) < 2 * r.cv_folds:
            details["cv_skipped"] = f"{len(train)} training rows are too few for {r.cv_folds} folds"
        else:
            fold_scores, splitter_name = cross_validate(clone(fitted), fit_data, metric, r.cv_folds, classification)
            details.update(cv_scores=fold_scores, cv_splitter=splitter_name)
            usable = [s for s in fold_scores if s is not None]
            if len(usable) == len(fold_scores):
                cv_mean = statistics.fmean(usable)
                scores[f"cv_{metric}_mean"] = cv_mean
                scores[f"cv_{metric}_std"] = statistics.pstdev(usable)
            else:
                details["cv_incomplete"] = f"{len(fold_scores) - len(usable)} fold(s) could not be scored"
            scores["cv_folds"] = float(r.cv_folds)
    phase("validating")
    scores[f"candidate_{metric}"] = score(fitted, holdout.X, holdout.y, metric)
    scores[f"champion_{metric}"] = score(champion, holdout.X, holdout.y, metric) if champion is not None else None
    for name in r.minimums:
        scores.setdefault(f"candidate_{name}", score(fitted, holdout.X, holdout.y, name))

    train_score, candidate = scores[f"train_{metric}"], scores[f"candidate_{metric}"]
    gap_cv, gap_holdout = _gap(train_score, cv_mean, metric), _gap(train_score, candidate, metric)
    if gap_cv is not None:
        scores["overfit_gap_cv"] = gap_cv
    if gap_holdout is not None:
        scores["overfit_gap_holdout"] = gap_holdout
    reasons: list[str] = []
    incumbent = scores[f"champion_{metric}"]
    if candidate is None:
        reasons.append(f"candidate {metric} could not be computed on the holdout")
    elif not is_improvement(candidate, incumbent, metric, r.margin):
        reasons.append(f"candidate {metric}={candidate:.6g} does not beat champion "
                       f"{metric}={incumbent:.6g} by margin {r.margin:g}")
    for name, limit in r.minimums.items():
        value = scores.get(f"candidate_{name}")
        if not meets_minimum(value, name, limit):
            shown = "n/a" if value is None else f"{value:.6g}"
            reasons.append(f"candidate {name}={shown} misses the minimum {limit:g}")
    if r.max_overfit_gap is not None:
        basis, gap, other = ("cv", gap_cv, cv_mean) if r.cv_folds else ("holdout", gap_holdout, candidate)
        details["overfit_basis"] = basis
        if gap is None:
            reasons.append(f"overfitting cannot be checked: no train or {basis} {metric}")
        elif gap > r.max_overfit_gap + 1e-12:
            reasons.append(f"overfitting: train {metric}={train_score:.6g} vs {basis} {metric}={other:.6g} "
                           f"(gap {gap:.6g} > retrain.max_overfit_gap={r.max_overfit_gap:g})")
    result.scores, result.reasons, result.details = scores, reasons, details
    return result


def json_safe(value: Any) -> Any:
    """Search results (NumPy scalars, nested params) as plain JSON values;
    a non-finite score becomes ``None``."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    item = getattr(value, "item", None)
    if item is not None and not isinstance(value, (str, bytes)):
        value = item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)
