"""Per-model policy: what the monitor watches and how the worker retrains.

One :class:`Policy` per model, stored in the registry next to the model
(``driftline registry policy set MODEL FILE``) and read by both daemons, so
no setting is defined twice. Every field has a default; a policy file only
names what it changes. :meth:`Policy.from_dict` refuses unknown or bad
settings with an error that names the setting (``monitor.cooldown_s``).
The detectors, metrics and estimators a policy may name are those
registered in :mod:`driftline.catalog`.

Examples
--------
>>> p = Policy.from_dict({"monitor": {"cooldown_s": 60}, "retrain": {"promotion_metric": "f1"}})
>>> p.monitor.cooldown_s, p.retrain.promotion_metric, p.retrain.margin
(60.0, 'f1', 0.0)
>>> Policy.from_dict({"monitor": {"cooldwn_s": 60}})
Traceback (most recent call last):
...
driftline.policy.PolicyError: monitor.cooldwn_s: unknown setting (known: ...)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from . import catalog
from .errors import DriftlineError

__all__ = ["PolicyError", "Policy", "MonitorPolicy", "RetrainPolicy", "DetectorSpec", "load_policy_file",
           "ALERT_KINDS"]

#: Alert kinds the monitor raises (``retrain_on`` names some of them).
ALERT_KINDS = ("data_drift", "concept_drift", "prediction_drift", "metric", "latency", "outliers",
               "estimated_performance")
TASKS = ("auto", "classification", "regression")

# The detectors, metrics and estimators a policy may name are the registered
# ones (driftline/catalog.py); these module names list them for the code
# that imported them from here, derived from the catalogs on first use.
_FROM_CATALOGS = {
    "OUTLIER_DETECTORS": lambda: catalog.DETECTORS.names(kind="outlier"),
    "CONCEPT_DETECTORS": lambda: catalog.DETECTORS.names(kind="concept"),
    "DATA_DETECTORS": lambda: catalog.DETECTORS.names(kind="data"),
    "CLASSIFICATION_METRICS": lambda: catalog.METRICS.names(task="classification"),
    "REGRESSION_METRICS": lambda: catalog.METRICS.names(task="regression"),
    # Metrics where lower is better; the worker flips the comparison for these.
    "LOWER_IS_BETTER": lambda: catalog.METRICS.names(lower_is_better=True),
    "METRICS": lambda: catalog.METRICS.names(),
    # Metrics the monitor estimates before labels arrive (streams/estimation.py).
    "ESTIMATED_METRICS": lambda: catalog.METRICS.names(estimated=True),
    "ESTIMATORS": lambda: catalog.ESTIMATORS.names(),
}


def __getattr__(name: str) -> Any:
    names = _FROM_CATALOGS.get(name)
    if names is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return names()


class PolicyError(DriftlineError, ValueError):
    """A policy setting is unknown or out of range; the message names it."""


@dataclass(frozen=True)
class DetectorSpec:
    """A drift detector: its name and keyword parameters for River."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MonitorPolicy:
    """What the monitor (``streams``) watches for one model.

    Parameters
    ----------
    task
        ``classification``, ``regression`` or ``auto`` (decided from the
        first labels: numbers that are not all integers mean regression).
    window
        Size of the rolling metric window, in joined pairs.
    label_ttl_s
        How long a prediction waits for its label before it is expired.
    warmup
        Joined pairs (or predictions, for data drift) a new model version
        sees before its detectors may alert.
    cooldown_s
        At most one alert per (model, version, kind, subject) in this time.
    expected_run_length
        False-alarm budget: the expected number of events between two false
        data-drift alarms, across all features together. Per-feature test
        levels are derived from it (Bonferroni over the features).
    data_drift
        Detector for data drift per feature (``ks`` against the reference
        profile or the stream's own past, ``psi``, ``chi2`` for categorical
        features, or River's ``kswin``/``adwin``/``page_hinkley``).
    drift_window
        Events per feature compared in each data-drift test.
    concept_drift
        River detector on the error stream (``adwin``, ``ddm``, ``eddm``,
        ``hddm_a``, ``hddm_w``, ``fhddm``, ``page_hinkley``).
    prediction_drift
        Whether the distribution of predictions is watched like a feature.
    metric_thresholds
        Rolling metric -> minimum (or maximum for lower-is-better metrics);
        crossing it raises a ``metric`` alert and a retrain request.
    latency_p95_ms
        Alert when rolling p95 prediction latency passes this (``None``: off).
    outlier_rate
        Alert when the rolling share of outlier inputs passes this.
    outlier_detector
        ``range`` (outside the reference range) or ``hst`` (River's
        HalfSpaceTrees) or ``both``.
    estimated_thresholds
        Estimated metric (from the version's calibrator, before labels:
        :mod:`driftline.streams.estimation`) -> minimum (maximum for ``mae``/``rmse``);
        crossing it raises an ``estimated_performance`` alert.
    estimated_cooldown_s
        Cooldown of ``estimated_performance`` alerts (``None``: ``cooldown_s``).
    retrain_on
        Alert kinds that trigger a retrain request.
    retrain_cooldown_s
        At most one retrain request per model in this time.
    """

    task: str = "auto"
    window: int = 1000
    label_ttl_s: float = 3600.0
    warmup: int = 500
    cooldown_s: float = 600.0
    expected_run_length: float = 1_000_000.0
    data_drift: DetectorSpec = field(default_factory=lambda: DetectorSpec("ks"))
    drift_window: int = 500
    concept_drift: DetectorSpec = field(default_factory=lambda: DetectorSpec("adwin", {"delta": 0.002}))
    prediction_drift: bool = True
    metric_thresholds: dict[str, float] = field(default_factory=dict)
    latency_p95_ms: float | None = None
    outlier_rate: float = 0.05
    outlier_detector: str = "range"
    estimated_thresholds: dict[str, float] = field(default_factory=dict)
    estimated_cooldown_s: float | None = None
    retrain_on: tuple[str, ...] = ("concept_drift", "metric")
    retrain_cooldown_s: float = 900.0


@dataclass(frozen=True)
class RetrainPolicy:
    """How the worker (``retrain``) retrains one model.

    Parameters
    ----------
    schedule
        ``None``, ``{"interval_s": 3600}`` or ``{"cron": "0 3 * * *"}``.
    window_rows
        Train on at most the newest this many joined records ...
    window_s
        ... and only those younger than this (``None``: no age limit).
    min_rows
        Fewer usable rows than this fail the run.
    holdout_fraction
        Newest share of the window held out to compare candidate and champion.
    promotion_metric
        Metric scored on the holdout for both models.
    margin
        The candidate must beat the champion by at least this much.
    minimums
        Metric -> least acceptable holdout value (max for lower-is-better).
    debounce_s
        Requests for one model inside this window coalesce into one run.
    estimator
        Recipe when there is no champion to clone: ``logistic_regression``,
        ``random_forest``, ``gradient_boosting`` (or their regressors).
    search
        Optional hyperparameter search: ``{"param_grid": {...}, "cv": 3}``.
    cv_folds
        k of the k-fold cross-validation on the training part (never the
        holdout); mean and spread go on the version. ``0``: off.
    max_overfit_gap
        Reject a candidate whose training score beats its cross-validated
        score (or, with ``cv_folds=0``, its holdout score) by more than this
        (``None``: off).
    min_rows_per_class
        Classifiers: refuse a run when a class of the window has fewer
        training rows than this (``0``: off).
    store_retention_s
        Keep the model's training-data segments this long (``None``: forever).
    """

    schedule: dict[str, Any] | None = None
    window_rows: int = 50_000
    window_s: float | None = None
    min_rows: int = 200
    holdout_fraction: float = 0.2
    promotion_metric: str = "accuracy"
    margin: float = 0.0
    minimums: dict[str, float] = field(default_factory=dict)
    debounce_s: float = 10.0
    estimator: str = "gradient_boosting"
    search: dict[str, Any] | None = None
    # -- fitness gate and training-data store (retrain/gate.py, retrain/store.py) --
    cv_folds: int = 5
    max_overfit_gap: float | None = None
    min_rows_per_class: int = 0
    store_retention_s: float | None = 1_209_600.0  # 14 days


@dataclass(frozen=True)
class Policy:
    """A model's monitoring and retraining policy."""

    monitor: MonitorPolicy = field(default_factory=MonitorPolicy)
    retrain: RetrainPolicy = field(default_factory=RetrainPolicy)

    # -- (de)serialisation -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["monitor"]["retrain_on"] = list(self.monitor.retrain_on)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> "Policy":
        if data is None:
            return cls()
        _expect(isinstance(data, dict), "<policy>", data, "must be an object with 'monitor' and/or 'retrain'")
        _no_unknown(data, ("monitor", "retrain"), "")
        monitor = _build(MonitorPolicy, data.get("monitor") or {}, "monitor")
        retrain = _build(RetrainPolicy, data.get("retrain") or {}, "retrain")
        policy = cls(monitor=monitor, retrain=retrain)
        policy.check()
        return policy

    @classmethod
    def from_json(cls, text: str) -> "Policy":
        try:
            data = json.loads(text)
        except ValueError as error:
            raise PolicyError(f"<policy>: not valid JSON ({error})") from None
        return cls.from_dict(data)

    # -- validation ------------------------------------------------------------
    def check(self) -> None:
        m, r = self.monitor, self.retrain
        _one_of(m.task, TASKS, "monitor.task")
        for name in ("window", "warmup", "drift_window"):
            value = getattr(m, name)
            _expect(isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 10_000_000,
                    f"monitor.{name}", value, "must be an integer from 1 to 10,000,000")
        _expect(m.drift_window >= 30, "monitor.drift_window", m.drift_window, "must be at least 30")
        for name in ("label_ttl_s", "cooldown_s", "retrain_cooldown_s", "expected_run_length"):
            value = getattr(m, name)
            _expect(_positive(value), f"monitor.{name}", value, "must be a positive number")
        _expect(m.expected_run_length >= 10, "monitor.expected_run_length", m.expected_run_length,
                "must be at least 10 events")
        for name, spec, kind in (("data_drift", m.data_drift, "data"), ("concept_drift", m.concept_drift, "concept")):
            _one_of(spec.name, catalog.DETECTORS.names(kind=kind), f"monitor.{name}.name")
            _check_detector_params(spec, f"monitor.{name}.params")
        _expect(isinstance(m.retrain_on, tuple), "monitor.retrain_on", m.retrain_on, "must be a list of alert kinds")
        for kind in m.retrain_on:
            _one_of(kind, ALERT_KINDS, "monitor.retrain_on", "names an unknown alert kind; known:")
        _expect(isinstance(m.prediction_drift, bool), "monitor.prediction_drift", m.prediction_drift, "must be true or false")
        metrics = catalog.METRICS.names()
        for metric, limit in m.metric_thresholds.items():
            _one_of(metric, metrics, f"monitor.metric_thresholds.{metric}", "is not a known metric; known:")
            _expect(_number(limit), f"monitor.metric_thresholds.{metric}", limit, "must be a number")
        for metric, limit in m.estimated_thresholds.items():
            _one_of(metric, catalog.METRICS.names(estimated=True), f"monitor.estimated_thresholds.{metric}",
                    "is not an estimated metric; known:")
            _expect(_number(limit), f"monitor.estimated_thresholds.{metric}", limit, "must be a number")
        _expect(m.estimated_cooldown_s is None or _positive(m.estimated_cooldown_s), "monitor.estimated_cooldown_s",
                m.estimated_cooldown_s, "must be a positive number or null")
        _expect(m.latency_p95_ms is None or _positive(m.latency_p95_ms), "monitor.latency_p95_ms",
                m.latency_p95_ms, "must be a positive number or null")
        _expect(_number(m.outlier_rate) and 0 < m.outlier_rate <= 1, "monitor.outlier_rate", m.outlier_rate,
                "must be in (0, 1]")
        _one_of(m.outlier_detector, catalog.DETECTORS.names(kind="outlier"), "monitor.outlier_detector")

        if r.schedule is not None:
            _expect(isinstance(r.schedule, dict) and len(r.schedule) == 1 and
                    set(r.schedule) <= {"interval_s", "cron"}, "retrain.schedule", r.schedule,
                    "must be null, {\"interval_s\": N} or {\"cron\": \"m h dom mon dow\"}")
            if "interval_s" in r.schedule:
                _expect(_positive(r.schedule["interval_s"]), "retrain.schedule.interval_s",
                        r.schedule["interval_s"], "must be a positive number")
            else:
                cron = r.schedule["cron"]
                _expect(isinstance(cron, str) and len(cron.split()) == 5, "retrain.schedule.cron", cron,
                        "must be a five-field crontab expression")
        for name in ("window_rows", "min_rows"):
            value = getattr(r, name)
            _expect(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                    f"retrain.{name}", value, "must be a positive integer")
        _expect(r.min_rows <= r.window_rows, "retrain.min_rows", r.min_rows, "must not exceed retrain.window_rows")
        _expect(r.window_s is None or _positive(r.window_s), "retrain.window_s", r.window_s,
                "must be a positive number or null")
        _expect(_number(r.holdout_fraction) and 0.05 <= r.holdout_fraction <= 0.5, "retrain.holdout_fraction",
                r.holdout_fraction, "must be between 0.05 and 0.5")
        _one_of(r.promotion_metric, metrics, "retrain.promotion_metric", "is not a known metric; known:")
        _expect(_number(r.margin) and r.margin >= 0, "retrain.margin", r.margin, "must be a number >= 0")
        for metric, limit in r.minimums.items():
            _one_of(metric, metrics, f"retrain.minimums.{metric}", "is not a known metric; known:")
            _expect(_number(limit), f"retrain.minimums.{metric}", limit, "must be a number")
        _expect(_number(r.debounce_s) and r.debounce_s >= 0, "retrain.debounce_s", r.debounce_s,
                "must be a number >= 0")
        _one_of(r.estimator, catalog.ESTIMATORS.names(), "retrain.estimator")
        if r.search is not None:
            _expect(isinstance(r.search, dict) and isinstance(r.search.get("param_grid"), dict)
                    and r.search["param_grid"], "retrain.search.param_grid", r.search,
                    "must be an object of parameter -> list of values")
            for name, values in r.search["param_grid"].items():
                _expect(isinstance(values, list) and values, f"retrain.search.param_grid.{name}", values,
                        "must be a non-empty list")
            cv = r.search.get("cv", 3)
            _expect(isinstance(cv, int) and 2 <= cv <= 20, "retrain.search.cv", cv, "must be an integer from 2 to 20")
            _no_unknown(r.search, ("param_grid", "cv"), "retrain.search.")
        # -- fitness gate and training-data store --
        _expect(isinstance(r.cv_folds, int) and not isinstance(r.cv_folds, bool)
                and (r.cv_folds == 0 or 2 <= r.cv_folds <= 20), "retrain.cv_folds", r.cv_folds,
                "must be 0 (off) or an integer from 2 to 20")
        _expect(r.max_overfit_gap is None or (_number(r.max_overfit_gap) and r.max_overfit_gap >= 0),
                "retrain.max_overfit_gap", r.max_overfit_gap, "must be a number >= 0 or null")
        _expect(isinstance(r.min_rows_per_class, int) and not isinstance(r.min_rows_per_class, bool)
                and r.min_rows_per_class >= 0, "retrain.min_rows_per_class", r.min_rows_per_class,
                "must be an integer >= 0")
        _expect(r.store_retention_s is None or _positive(r.store_retention_s), "retrain.store_retention_s",
                r.store_retention_s, "must be a positive number or null")


def policy_changes(old: Policy, new: Policy) -> dict[str, list]:
    """The settings that differ between two policies, ``dotted.name -> [old, new]``.

    >>> changes = policy_changes(Policy(), Policy.from_dict({"monitor": {"window": 200}}))
    >>> changes
    {'monitor.window': [1000, 200]}
    >>> policy_changes(Policy(), Policy.from_dict({"monitor": {"metric_thresholds": {"accuracy": 0.8}}}))
    {'monitor.metric_thresholds.accuracy': [None, 0.8]}
    """
    def flat(value: Any, prefix: str, out: dict) -> dict:
        if isinstance(value, dict):  # an empty mapping has no settings (not a value of its own)
            for key, item in value.items():
                flat(item, f"{prefix}.{key}" if prefix else str(key), out)
        else:
            out[prefix] = value
        return out

    before, after = flat(old.to_dict(), "", {}), flat(new.to_dict(), "", {})
    return {name: [before.get(name), after.get(name)] for name in sorted(set(before) | set(after))
            if before.get(name) != after.get(name)}


def load_policy_file(path: str | Path) -> Policy:
    """Read and validate a policy from a JSON file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise PolicyError(f"cannot read policy file {str(path)!r}: {error.strerror}") from None
    return Policy.from_json(text)


# -- helpers ----------------------------------------------------------------------


def _expect(ok: bool, name: str, value: Any, reason: str) -> None:
    if not ok:
        raise PolicyError(f"{name}: {reason} (got {value!r})")


def _one_of(value: Any, allowed: tuple[str, ...], name: str, reason: str = "must be one of") -> None:
    _expect(isinstance(value, str) and value in allowed, name, value, f"{reason} {', '.join(allowed)}")


def _check_detector_params(spec: DetectorSpec, name: str) -> None:
    """Refuse a parameter the detector does not take, naming the ones it
    does (otherwise the monitor would fail on it only at start-up)."""
    if not spec.params:
        return
    entry = catalog.DETECTORS.get(spec.name)
    if entry.params is not None:  # Driftline's own tests name their parameters
        allowed = tuple(entry.params)
    elif entry.river is not None:  # River's detectors take their constructor's keyword arguments
        import inspect

        from driftline.river_modules import river_class

        # Only when parameters are given: River is a heavy import.
        target = river_class(entry.river)
        allowed = tuple(p for p in inspect.signature(target).parameters if p != "self")
    else:
        allowed = ()
    for param in spec.params:
        if param not in allowed:
            raise PolicyError(f"{name}.{param}: not a parameter of detector {spec.name!r}; "
                              f"known: {', '.join(allowed)} (got {param!r})")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) != float("inf")


def _positive(value: Any) -> bool:
    return _number(value) and value > 0


def _no_unknown(data: dict, known: tuple[str, ...], prefix: str) -> None:
    for key in data:
        if key not in known:
            raise PolicyError(f"{prefix}{key}: unknown setting (known: {', '.join(known)})")


def _build(cls, data: Any, prefix: str):
    _expect(isinstance(data, dict), prefix, data, "must be an object")
    known = tuple(f.name for f in fields(cls))
    _no_unknown(data, known, prefix + ".")
    values = {}
    for name, raw in data.items():
        if name in ("data_drift", "concept_drift"):
            if isinstance(raw, str):
                raw = {"name": raw}
            _expect(isinstance(raw, dict) and isinstance(raw.get("name"), str), f"{prefix}.{name}", raw,
                    "must be a detector name or {\"name\": ..., \"params\": {...}}")
            _no_unknown(raw, ("name", "params"), f"{prefix}.{name}.")
            params = raw.get("params") or {}
            _expect(isinstance(params, dict), f"{prefix}.{name}.params", params, "must be an object")
            raw = DetectorSpec(raw["name"], dict(params))
        elif name == "retrain_on":
            _expect(isinstance(raw, list) and all(isinstance(k, str) for k in raw), f"{prefix}.{name}", raw,
                    "must be a list of alert kinds")
            raw = tuple(raw)
        elif name in ("metric_thresholds", "minimums", "estimated_thresholds"):
            _expect(isinstance(raw, dict), f"{prefix}.{name}", raw, "must be an object of metric -> number")
        if isinstance(raw, int) and not isinstance(raw, bool) and name.endswith(("_s", "_ms", "_rate", "_length", "margin", "fraction")):
            raw = float(raw)
        values[name] = raw
    return cls(**values)
