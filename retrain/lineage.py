"""Reproduce a version from its lineage (``driftline retrain MODEL --from-lineage VERSION``).

A version the worker trained from the segment store records, in its
lineage, the segments it read and the oldest row it kept (``window``), the
SHA-256 of the rows (``data_hash``), the split's row identity (``split``),
the recipe (``recipe``: a clone of the parent version, or a named recipe),
the seeds (``seeds``) and the retrain policy it ran with
(``retrain_policy``). :func:`reproduce` rebuilds the same window from the
store, checks its hash, refits with the same recipe, seeds and policy
through the same gate (:func:`driftline.retrain.gate.evaluate`) and compares every
recorded score. For deterministic estimators the scores match exactly; a
changed or missing segment is reported, never papered over.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from driftline.config import Settings
from driftline.errors import DriftlineError
from driftline.policy import Policy

from .data import build_frame, data_hash, split_holdout
from .gate import evaluate, split_identity
from .recipes import build_recipe
from .store import TrainingStore, store_root

__all__ = ["LineageError", "Reproduction", "reproduce", "format_reproduction"]

#: Scores compared as equal when they differ by at most this (they are
#: bit-identical for deterministic estimators; JSON keeps floats exactly).
TOLERANCE = 1e-12


class LineageError(DriftlineError):
    """A version cannot be reproduced from its lineage (the message says why)."""


@dataclass
class Reproduction:
    """The outcome of :func:`reproduce`."""

    model: str
    version: int
    rows: int
    recorded_hash: str | None
    data_hash: str
    scores: list[tuple[str, float | None, float | None, bool]] = field(default_factory=list)
    split_matches: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def data_matches(self) -> bool:
        return self.recorded_hash == self.data_hash

    @property
    def scores_match(self) -> bool:
        return all(ok for *_, ok in self.scores)

    @property
    def reproduced(self) -> bool:
        return self.data_matches and self.scores_match and self.split_matches

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "rows": self.rows, "reproduced": self.reproduced,
                "data_matches": self.data_matches, "recorded_hash": self.recorded_hash, "data_hash": self.data_hash,
                "split_matches": self.split_matches, "scores_match": self.scores_match,
                "scores": [{"name": n, "recorded": a, "reproduced": b, "match": ok} for n, a, b, ok in self.scores],
                "notes": self.notes}


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=TOLERANCE, abs_tol=TOLERANCE)


def reproduce(settings: Settings, registry: Any, model: str, version: int, *,
              store_dir: str | None = None) -> Reproduction:
    """Rebuild ``model/version``'s window, refit and compare (see the module
    docstring). Raises :class:`LineageError` when the lineage or the store
    cannot give the window back."""
    from sklearn.base import clone

    recorded = registry.get_version(model, version)
    lineage = recorded.lineage or {}
    window = lineage.get("window") or {}
    if window.get("source") != "store":
        source = lineage.get("source") or ("a scan of the labeled topic" if window else "unknown")
        raise LineageError(f"{model}/{version} was not trained from the training-data store (source: {source}); "
                           "its rows cannot be rebuilt from the lineage")
    for key in ("retrain_policy", "recipe", "data_hash"):
        if key not in lineage:
            raise LineageError(f"{model}/{version}: the lineage has no {key!r} (trained by an older worker)")
    store = TrainingStore(store_root(settings, store_dir))
    try:
        rows = store.rows_from_lineage(window)
    except FileNotFoundError as error:
        raise LineageError(f"{model}/{version}: {error}") from None
    data = build_frame(rows)
    result = Reproduction(model, version, len(data), lineage.get("data_hash"), data_hash(data))
    if not result.data_matches:
        result.notes.append(f"the data changed: {len(data)} rows hash {result.data_hash[:16]}..., the lineage "
                            f"says {lineage.get('rows')} rows hash {str(result.recorded_hash)[:16]}...")
    policy = Policy.from_dict({"monitor": {"task": lineage.get("task", "auto")},
                               "retrain": lineage["retrain_policy"]})
    r = policy.retrain
    train, holdout = split_holdout(data, r.holdout_fraction)
    if lineage.get("task") == "regression":
        train.y, holdout.y = train.y.astype(float), holdout.y.astype(float)
    if "split" in lineage and split_identity(train, holdout) != lineage["split"]:
        result.split_matches = False
        result.notes.append("the train/holdout split differs from the recorded one")

    recipe = str(lineage["recipe"])
    parent = lineage.get("parent_version")
    champion = registry.load(f"{model}/{parent}").estimator if parent is not None else None
    if recipe.startswith("clone:"):
        ref = recipe[len("clone:"):]
        estimator = clone(registry.load(ref).estimator)
    elif recipe.startswith("recipe:"):
        estimator = build_recipe(recipe[len("recipe:"):], train.X)
    else:
        raise LineageError(f"{model}/{version}: unknown recipe {recipe!r} in the lineage")
    seeds = lineage.get("seeds") or {}
    known = estimator.get_params(deep=True)
    estimator.set_params(**{k: v for k, v in seeds.items() if k in known})
    try:
        gated = evaluate(estimator, train, holdout, policy, champion)
    except (ValueError, TypeError) as error:
        raise LineageError(f"{model}/{version}: refitting {recipe} failed: {error}") from error
    reproduced = dict(gated.scores)
    reproduced.update({"holdout_rows": float(len(holdout)), "train_rows": float(len(train))})
    for name in sorted(set(recorded.metrics) | set(gated.scores)):
        a, b = recorded.metrics.get(name), reproduced.get(name)
        result.scores.append((name, a, b, _same(a, b)))
    recorded_params = (recorded.params or {}).get("best_params")
    if recorded_params is not None and gated.search.get("best_params") != recorded_params:
        result.notes.append(f"the search chose {gated.search.get('best_params')}, the version {recorded_params}")
        result.scores.append(("search.best_params", None, None, False))
    return result


def format_reproduction(rep: Reproduction) -> str:
    """The report for people."""
    lines = [f"{rep.model}/{rep.version}: rebuilt {rep.rows} rows from the store; data "
             + ("matches" if rep.data_matches else "CHANGED")
             + f" (sha256 {rep.data_hash[:16]}...)"]
    for name, a, b, ok in rep.scores:
        shown = lambda v: "-" if v is None else f"{v:.12g}"  # noqa: E731
        lines.append(f"  {'ok  ' if ok else 'DIFF'} {name:<28} recorded {shown(a):>16}  reproduced {shown(b):>16}")
    lines.extend(f"  note: {note}" for note in rep.notes)
    lines.append("reproduced: every score matches" if rep.reproduced else
                 "NOT reproduced: " + ", ".join(p for p, bad in (("data changed", not rep.data_matches),
                                                                   ("split differs", not rep.split_matches),
                                                                   ("scores differ", not rep.scores_match)) if bad))
    return "\n".join(lines)
