"""One retraining run: window -> clean -> fit -> score against the champion
-> register (and promote, or reject with the reason).

Everything the run decides comes from the model's policy in the registry
(``reg.get_policy(model).retrain``). A run is idempotent by request id: if a
version already exists for one of its requests (a run that registered but
was killed before its offset was committed), nothing is trained again; a
version that was registered with the decision "promote" but not promoted
yet is promoted now.

A run that cannot produce a version (unknown model, too few rows, a single
class, a broken estimator, ...) publishes a ``failed`` model event with the
reason and ends with outcome ``failed``; it never raises, except that with
``retry_unavailable=True`` (the worker) an unreachable registry database or
broker raises :class:`driftline.retrain.resilience.Unavailable`, so the caller can
retry the run (idempotent by request id) before it gives up. Without it,
such a failure is a ``failed`` outcome with a readable reason (never a raw
driver message).

:class:`Trainer` (the worker) and :func:`train_frame` (``driftline train``)
end the same way: :func:`register_candidate` registers the fitted model with
its profile, estimation map and lineage, and promotes it.

Test hook: ``DRIFTLINE_WORKER_PAUSE_S`` (seconds) pauses every run just
before fitting, so a test can kill the worker in the middle of a run.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import pandas as pd

from driftline import events
from driftline.config import Settings
from driftline.errors import DriftlineError
from driftline.events import ModelEvent
from driftline.observability import RETRAIN_DURATION, RETRAIN_RUNS
from driftline.policy import Policy

from .data import LabeledReader, TrainingData, build_frame, data_hash, split_holdout
from .gate import json_safe, check_class_counts, evaluate, seeds, split_identity
from .log import log_event
from .resilience import dependency_errors, unavailable
from driftline.policy import REGRESSION_METRICS

from .recipes import (
    REGRESSORS,
    SEARCH_SCORING,
    build_recipe,
    check_policy,
    feature_columns_for,
    score,
    task_of,
)

__all__ = ["RunError", "RunResult", "Trainer", "fit_candidate", "register_candidate", "failed_event", "event_metrics",
           "too_few_rows", "TARGET_COLUMN", "PAUSE_ENV", "TRAIN_MIN_ROWS"]

logger = logging.getLogger("driftline.retrain.trainer")

#: Name of the target column in reference profiles built by the worker.
TARGET_COLUMN = "label"
PAUSE_ENV = "DRIFTLINE_WORKER_PAUSE_S"
#: ``driftline train`` needs this many usable rows (a 20 % holdout of at least 2).
TRAIN_MIN_ROWS = 10


def too_few_rows(got: int, need: int, detail: str = "") -> str:
    """The one wording of "not enough data", worker and ``driftline train`` alike."""
    return f"too few rows (got {got}, need {need})" + (f": {detail}" if detail else "")


class RunError(DriftlineError):
    """A run cannot produce a version; the message is the failed event's reason."""


@dataclass
class RunResult:
    """How a run ended (also what the status view shows)."""

    model: str
    request_ids: list[str]
    trigger: str
    outcome: str  # promoted | rejected | registered | failed | duplicate
    started_at: float
    ended_at: float = 0.0
    version: int | None = None
    parent_version: int | None = None
    reason: str | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    rows: int = 0
    cleaning: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # phase -> seconds
    decision: str | None = None  # the version's: promote | reject

    @property
    def duration_s(self) -> float:
        return max(0.0, self.ended_at - self.started_at)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["duration_s"] = round(self.duration_s, 3)
        return data


def fit_candidate(estimator: Any, train: TrainingData, policy: Policy) -> tuple[Any, dict[str, Any]]:
    """Fit ``estimator`` on ``train`` (with the policy's grid search, if
    any); returns the fitted estimator and the chosen parameters."""
    X = feature_columns_for(estimator, train.X) if hasattr(estimator, "feature_names_in_") else train.X
    search = policy.retrain.search
    y = train.y.tolist()
    if search:
        from sklearn.model_selection import GridSearchCV

        grid = GridSearchCV(estimator, search["param_grid"], cv=search.get("cv", 3),
                            scoring=SEARCH_SCORING[policy.retrain.promotion_metric], n_jobs=1,
                            refit=True, error_score="raise")
        grid.fit(X, y)
        return grid.best_estimator_, {"best_params": json_safe(grid.best_params_),
                                      "cv_score": json_safe(grid.best_score_)}
    estimator.fit(X, y)
    return estimator, {}


class Trainer:
    """Runs retraining for the worker (and ``driftline train``).

    Parameters
    ----------
    settings
        Broker/topic settings (for reading the ``labeled`` topic).
    registry
        An open registry (``registry.open_registry(settings, publish=True)``).
    reader
        Training-data reader (default: :class:`~driftline.retrain.data.LabeledReader`).
    publish_failures
        Publish the ``failed`` event of a failed run (the worker publishes
        it itself, to know it was acknowledged: see :func:`failed_event`).
    retry_unavailable
        Raise :class:`driftline.retrain.resilience.Unavailable` when the registry
        database or the broker cannot be reached, instead of failing the run.
    """

    def __init__(self, settings: Settings, registry: Any, reader: LabeledReader | None = None, *,
                 publish_failures: bool = True, retry_unavailable: bool = False):
        self.settings = settings
        self.registry = registry
        self.reader = reader or LabeledReader(settings)
        self.publish_failures = publish_failures
        self.retry_unavailable = retry_unavailable

    # -- public ------------------------------------------------------------------
    def run(self, model: str, request_ids: Sequence[str], trigger: str = "manual",
            on_phase: Callable[[str], None] | None = None) -> RunResult:
        """Retrain ``model`` for ``request_ids`` (the first is the version's
        request id; the others were coalesced into this run)."""
        result = RunResult(model=model, request_ids=list(request_ids), trigger=trigger, outcome="failed",
                           started_at=events.now())
        started = time.monotonic()
        log_event(logger, "run_started", model=model, request_ids=list(request_ids), trigger=trigger)
        try:
            self._run(result, on_phase or (lambda phase: None))
        except RunError as error:
            self._fail(result, str(error))
        except Exception as error:  # the run's error policy: a run never raises, it fails with the reason
            down = unavailable(error, self.settings)
            if down is not None:
                if self.retry_unavailable:
                    log_event(logger, "run_interrupted", logging.INFO, model=model,
                              request_ids=list(request_ids), error=str(down))
                    raise down from error
                self._fail(result, str(down))
            elif isinstance(error, DriftlineError):
                self._fail(result, str(error))
            else:
                logger.exception("run crashed")
                self._fail(result, f"{type(error).__name__}: {error}")
        result.ended_at = events.now()
        RETRAIN_RUNS.labels(model=model, outcome=result.outcome).inc()
        RETRAIN_DURATION.labels(model=model).observe(time.monotonic() - started)
        log_event(logger, "run_ended", model=model, outcome=result.outcome, version=result.version,
                  reason=result.reason, metrics=result.metrics, rows=result.rows,
                  request_ids=list(request_ids), timings=result.timings,
                  duration_s=round(time.monotonic() - started, 3))
        return result

    # -- internals ------------------------------------------------------------------
    def _fail(self, result: RunResult, reason: str) -> None:
        result.outcome = "failed"
        result.reason = reason
        if not self.publish_failures:
            return
        try:
            self.registry.publish_event(failed_event(result))
        except dependency_errors() as error:  # the run is over either way; say why the event is missing
            log_event(logger, "failed_event_not_published", logging.ERROR, model=result.model,
                      error=f"{type(error).__name__}: {error}")

    def _model_exists(self, model: str) -> bool:
        return any(m.name == model for m in self.registry.list_models())

    def _existing(self, result: RunResult) -> bool:
        """Finish a run whose version already exists (idempotency)."""
        for request_id in result.request_ids:
            found = self.registry.find_version_by_request(result.model, request_id)
            if found is None:
                continue
            result.version = found.version
            result.metrics = dict(found.metrics)
            result.parent_version = found.lineage.get("parent_version")
            result.rows = int(found.lineage.get("rows", 0) or 0)
            result.decision = "reject" if found.status == "rejected" else found.tags.get("decision")
            if found.tags.get("decision") == "promote" and "champion" not in found.aliases:
                # registered, then killed before promotion: finish the job
                self.registry.promote(result.model, found.version, request_id=request_id,
                                      metrics=event_metrics(found.metrics))
                result.outcome = "promoted"
            else:
                result.outcome = "duplicate"
                result.reason = f"version {found.version} already exists for request {request_id}"
            return True
        return False

    def _run(self, result: RunResult, on_phase: Callable[[str], None]) -> None:
        from driftline.registry import NotFoundError

        clock = [time.monotonic(), "prepare"]

        def phase(name: str) -> None:
            now = time.monotonic()
            result.timings[clock[1]] = round(result.timings.get(clock[1], 0.0) + now - clock[0], 3)
            clock[0], clock[1] = now, name
            on_phase(name)

        model = events.validate_name(result.model)
        if not self._model_exists(model):
            raise RunError(f"unknown model {model!r}: register a first version with 'driftline train'")
        if self._existing(result):
            return
        policy: Policy = self.registry.get_policy(model)
        check_policy(policy)
        retrain = policy.retrain
        metric = retrain.promotion_metric
        try:
            champion = self.registry.load(f"{model}@champion")
        except NotFoundError:
            champion = None
        parent = champion.version.version if champion else None
        result.parent_version = parent

        phase("reading")
        window = self.reader.read(model, window_rows=retrain.window_rows, window_s=retrain.window_s)
        data = build_frame(window.rows, window.unparseable)
        result.rows = len(data)
        result.cleaning = data.report.to_dict()
        if len(data) < retrain.min_rows:
            raise RunError(too_few_rows(len(data), retrain.min_rows,
                                        f"{len(data)} usable of {len(window.rows)} read from {window.topic} "
                                        f"(retrain.min_rows={retrain.min_rows})"))
        train, holdout = split_holdout(data, retrain.holdout_fraction)
        classification = task_of(policy) == "classification"
        if classification:
            classes = set(train.y.tolist())
            if len(classes) < 2:
                raise RunError(f"single class in the training window: every label is "
                               f"{next(iter(classes))!r} ({len(train)} rows); nothing to learn")
        else:
            try:
                train.y = train.y.astype(float)
                holdout.y = holdout.y.astype(float)
            except (TypeError, ValueError):
                raise RunError("regression needs numeric labels; the window holds text labels") from None

        if classification:
            check_class_counts(data, train, retrain.min_rows_per_class)
        if champion is not None:
            from sklearn.base import clone

            estimator = clone(champion.estimator)
            recipe = f"clone:{model}/{parent}"
        else:
            estimator = build_recipe(retrain.estimator, train.X)
            recipe = f"recipe:{retrain.estimator}"
        pause = os.environ.get(PAUSE_ENV)
        if pause:
            log_event(logger, "pause_hook", model=model, seconds=float(pause))
            phase("paused")
            time.sleep(float(pause))
        phase("training")
        try:  # fit, cross-validate, overfitting and holdout checks: retrain/gate.py
            gated = evaluate(estimator, train, holdout, policy, champion.estimator if champion else None,
                             phase=phase)
        except (ValueError, TypeError) as error:
            raise RunError(f"fitting {recipe} failed: {error}") from error
        fitted, scores, reasons = gated.fitted, gated.scores, gated.reasons
        result.metrics = dict(scores)
        promote = not reasons
        result.decision = "promote" if promote else "reject"
        reason = "; ".join(reasons) if reasons else None
        lineage = {
            "window": window.lineage(),
            "holdout_fraction": retrain.holdout_fraction,
            "window_rows": retrain.window_rows,
            "window_s": retrain.window_s,
            "request_id": result.request_ids[0] if result.request_ids else None,
            "request_ids": list(result.request_ids),
            "trigger": result.trigger,
            # what --from-lineage needs to rebuild and refit exactly (retrain/lineage.py)
            "split": split_identity(train, holdout),
            "seeds": seeds(fitted),
            "gate": gated.details,
            "retrain_policy": policy.to_dict()["retrain"],
            "task": task_of(policy),
        }
        # None scores (e.g. no champion) are kept: the event shows them
        version, _ = register_candidate(
            self.registry, model, fitted, data, train, holdout, policy, scores=scores, recipe=recipe,
            parent_version=parent, params={"promotion_metric": metric, "margin": retrain.margin, **gated.search},
            lineage=lineage, trigger=result.trigger, promote=promote, reason=reason,
            request_id=lineage["request_id"], phase=phase)
        result.version = version.version
        if promote:
            result.outcome = "promoted"
        else:
            result.outcome = "rejected"
            result.reason = reason
        phase("done")


def register_candidate(registry: Any, model: str, fitted: Any, data: TrainingData, train: TrainingData,
                       holdout: TrainingData, policy: Policy, *, scores: dict[str, float | None], recipe: str,
                       parent_version: int | None, params: dict[str, Any], lineage: dict[str, Any], trigger: str,
                       promote: bool, reason: str | None = None, request_id: str | None = None,
                       phase: Callable[[str], None] | None = None) -> tuple[Any, dict[str, float | None]]:
    """The end of every training run, the worker's and ``driftline train``'s:
    register ``fitted`` (trained on ``train`` of ``data``, scored on
    ``holdout``) with its reference profile, estimation map and lineage, then
    promote it (``promote``) or keep it rejected with ``reason``.

    ``lineage`` and ``params`` hold what is particular to the run; the row
    counts, data hash, recipe, parent and cleaning report are added here.
    Returns the version and the metrics it was registered with (``scores``
    and the row counts).
    """
    phase = phase or (lambda name: None)
    phase("registering")
    profile = _profile(data, fitted)
    estimation = _estimation(fitted, holdout, task_of(policy))
    lineage = {"rows": len(data), "train_rows": len(train), "holdout_rows": len(holdout),
               "data_hash": data_hash(data), "parent_version": parent_version, "recipe": recipe,
               "cleaning": data.report.to_dict(), **lineage}
    metrics = {**scores, "holdout_rows": float(len(holdout)), "train_rows": float(len(train))}
    version = registry.register_version(
        model, fitted, metrics=metrics, params={"recipe": recipe, **params},
        tags={"decision": "promote" if promote else "reject", "trigger": trigger}, lineage=lineage,
        profile=profile, status="ready" if promote else "rejected", request_id=request_id, reason=reason,
        estimation=estimation,
    )
    phase("promoting")
    if promote:
        registry.promote(model, version.version, request_id=request_id, metrics=event_metrics(metrics))
    return version, metrics


def failed_event(result: RunResult) -> ModelEvent:
    """The ``failed`` model event of a failed run."""
    return ModelEvent(event="failed", model=result.model, timestamp=events.now(),
                      version=None, metrics={k: v for k, v in result.metrics.items()},
                      request_id=result.request_ids[0] if result.request_ids else None,
                      reason=(result.reason or "failed")[:1024],
                      details={"cleaning": result.cleaning, "rows": result.rows, "trigger": result.trigger,
                               "request_ids": result.request_ids})


def event_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric metrics, as a model event carries them (``None`` and flags left out).

    Examples
    --------
    >>> event_metrics({"candidate_accuracy": 0.9, "champion_accuracy": None, "rows": 10, "ok": True})
    {'candidate_accuracy': 0.9, 'rows': 10.0}
    """
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _profile(data: TrainingData, fitted: Any) -> dict | None:
    """Reference profile of the whole window with the new model's predictions."""
    from driftline.registry.profile import build_profile

    frame = data.X.copy()
    frame[TARGET_COLUMN] = data.y.to_numpy()
    try:
        predictions = list(fitted.predict(feature_columns_for(fitted, data.X)))
    except (ValueError, TypeError):  # the profile is still useful without predictions
        predictions = None
    return build_profile(frame, feature_columns=[str(c) for c in data.X.columns], target=TARGET_COLUMN,
                         predictions=predictions)


def _estimation(fitted: Any, holdout: TrainingData, task: str) -> dict | None:
    """Calibration map (classifier) or direct loss estimator (regressor)
    fitted on the holdout, which the model never saw (registry/calibration.py)."""
    from driftline.registry.calibration import fit_estimation

    try:
        return fit_estimation(fitted, feature_columns_for(fitted, holdout.X), holdout.y.to_numpy(), task)
    except (ValueError, TypeError) as error:  # e.g. a class missing from the holdout
        logger.warning("no estimation map for this version: %s", error)
        return None


def train_frame(registry: Any, model: str, frame: pd.DataFrame, target: str, *, estimator: str | None = None,
                description: str = "") -> RunResult:
    """``driftline train``: fit a recipe on a table, register it with its
    reference profile and make it the champion (version 1 or the next)."""
    from .data import CleaningReport, clean_frame

    result = RunResult(model=model, request_ids=[], trigger="manual", outcome="failed", started_at=events.now())
    events.validate_name(model)
    if target not in frame.columns:
        raise RunError(f"--target {target!r} is not a column of the data (columns: "
                       f"{', '.join(map(str, frame.columns[:20]))})")
    features = frame.drop(columns=[target])
    if features.shape[1] == 0:
        raise RunError("the data has no feature columns besides the target")
    data = clean_frame(features, frame[target], None, CleaningReport())
    data.meta = pd.DataFrame({"row": range(len(data))})
    if len(data) < TRAIN_MIN_ROWS:
        report = data.report
        raise RunError(too_few_rows(len(data), TRAIN_MIN_ROWS,
                                    f"{report.rows_read} read, dropped missing_label={report.missing_label} "
                                    f"non_finite={report.non_finite}"))
    registry.create_model(model, description=description, exist_ok=True)
    policy = registry.get_policy(model)
    stored = any(m.name == model and m.has_policy for m in registry.list_models())
    if estimator is not None and estimator != policy.retrain.estimator:
        if stored:
            raise RunError(f"--estimator {estimator!r} differs from the stored policy of {model!r} "
                           f"(retrain.estimator={policy.retrain.estimator!r}); change the policy instead")
        changes: dict[str, Any] = {"estimator": estimator}
        if estimator in REGRESSORS and policy.retrain.promotion_metric not in REGRESSION_METRICS:
            changes["promotion_metric"] = "rmse"  # the default metric is a classification one
        policy = Policy(monitor=policy.monitor, retrain=_replace(policy.retrain, **changes))
        check_policy(policy)
        # stored, so the worker retrains this model with the same recipe (one policy, one place)
        registry.set_policy(model, policy)
    check_policy(policy)
    classification = task_of(policy) == "classification"
    if classification and data.y.nunique() < 2:
        raise RunError(f"single class in column {target!r}: nothing to learn")
    if classification and all(isinstance(v, float) for v in data.y) and not all(float(v).is_integer() for v in data.y):
        raise RunError(f"column {target!r} holds continuous numbers but the model's task is classification: "
                       "pass --estimator gradient_boosting_regressor (or another regressor)")
    if not classification:
        data.y = data.y.astype(float)
    train, holdout = split_holdout(data, policy.retrain.holdout_fraction)
    fitted, search_info = fit_candidate(build_recipe(policy.retrain.estimator, train.X), train, policy)
    metric = policy.retrain.promotion_metric
    scores = {f"candidate_{metric}": score(fitted, holdout.X, holdout.y, metric)}
    version, metrics = register_candidate(
        registry, model, fitted, data, train, holdout, policy,
        scores={k: v for k, v in scores.items() if v is not None}, recipe=f"recipe:{policy.retrain.estimator}",
        parent_version=None, params=search_info, lineage={"source": "csv", "target": target},
        trigger="manual", promote=True)
    result.version, result.outcome, result.metrics = version.version, "promoted", metrics
    result.rows, result.cleaning, result.ended_at = len(data), data.report.to_dict(), events.now()
    return result


def _replace(retrain, **changes):
    from dataclasses import replace

    return replace(retrain, **changes)
