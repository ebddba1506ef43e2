"""Reference profiles: a per-feature summary of a version's training data.

Stored with each version (``register_version(..., profile=...)``) and read
by the monitor (``Registry.get_profile``) to test live traffic for drift
against the data the model was trained on.

Shape (JSON-safe: no NaN, plain floats and ints)::

    {"rows": n,
     "features": {
        "<numeric>": {"type": "numeric", "count": n, "missing_share": f,
                      "min": f, "max": f, "mean": f, "std": f,
                      "quantiles": [101 values at 0, 0.01, ..., 1],
                      "histogram": {"edges": [21 values], "counts": [20 ints]}},
        "<categorical>": {"type": "categorical", "count": n, "missing_share": f,
                          "frequencies": {"a": 0.7, "b": 0.3}}},
     "target": {...same shape...},        # when ``target`` is given
     "prediction": {...same shape...}}    # when ``predictions`` are given

``count`` is the number of non-missing values; ``std`` is the sample
standard deviation (ddof=1; 0.0 below two values). Booleans and strings are
categorical; frequencies are shares of the non-missing values, keyed by the
value's text, at most :data:`MAX_CATEGORIES` of them (the rest summed
under ``"__other__"``). A column with no values at all has ``None`` for its
statistics and empty quantiles/histogram.

Examples
--------
>>> import pandas as pd
>>> df = pd.DataFrame({"age": [20, 30, 40, None], "plan": ["a", "b", "a", "a"], "y": [0, 1, 0, 1]})
>>> p = build_profile(df, target="y")
>>> sorted(p["features"]), p["rows"]
(['age', 'plan'], 4)
>>> p["features"]["age"]["missing_share"], p["features"]["age"]["mean"], p["features"]["age"]["quantiles"][50]
(0.25, 30.0, 30.0)
>>> p["features"]["plan"]["frequencies"]
{'a': 0.75, 'b': 0.25}
>>> p["target"]["type"]
'numeric'
"""

from __future__ import annotations

import math
from typing import Any, Iterable

__all__ = ["build_profile", "profile_column", "MAX_CATEGORIES", "QUANTILES", "BINS"]

#: Most categories kept per column; rarer ones are summed under ``__other__``.
MAX_CATEGORIES = 1000
#: Number of quantiles (0, 0.01, ..., 1).
QUANTILES = 101
#: Histogram bins between min and max.
BINS = 20


def _float(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def profile_column(values: Any) -> dict[str, Any]:
    """Summary of one column (a pandas Series or anything array-like)."""
    import numpy as np
    import pandas as pd

    series = values if isinstance(values, pd.Series) else pd.Series(list(values))
    n = len(series)
    present = series.dropna()
    missing_share = (n - len(present)) / n if n else 0.0
    numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    if numeric:
        data = present.to_numpy(dtype=float)
        data = data[np.isfinite(data)]  # +/-inf count as missing: they have no place in a histogram
        missing_share = (n - len(data)) / n if n else 0.0
        if len(data) == 0:
            return {"type": "numeric", "count": 0, "missing_share": missing_share, "min": None, "max": None,
                    "mean": None, "std": None, "quantiles": [], "histogram": {"edges": [], "counts": []}}
        low, high = float(data.min()), float(data.max())
        counts, edges = np.histogram(data, bins=BINS, range=(low, high) if high > low else (low - 0.5, high + 0.5))
        return {
            "type": "numeric",
            "count": int(len(data)),
            "missing_share": missing_share,
            "min": low,
            "max": high,
            "mean": _float(data.mean()),
            "std": _float(data.std(ddof=1)) if len(data) > 1 else 0.0,
            "quantiles": [float(q) for q in np.quantile(data, np.linspace(0.0, 1.0, QUANTILES))],
            "histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
        }
    shares = present.astype(str).value_counts(normalize=True, sort=True)
    frequencies = {str(k): float(v) for k, v in shares.iloc[:MAX_CATEGORIES].items()}
    if len(shares) > MAX_CATEGORIES:
        frequencies["__other__"] = float(shares.iloc[MAX_CATEGORIES:].sum())
    return {"type": "categorical", "count": int(len(present)), "missing_share": missing_share,
            "frequencies": frequencies}


def build_profile(
    df: Any,
    feature_columns: Iterable[str] | None = None,
    target: str | None = None,
    predictions: Any = None,
) -> dict[str, Any]:
    """Reference profile of a training frame (format in the module docstring).

    Parameters
    ----------
    df
        The training data (a pandas DataFrame).
    feature_columns
        Columns to profile as features (default: all but ``target``).
    target
        The label column, profiled under ``"target"``.
    predictions
        The model's predictions on ``df`` (array-like), profiled under
        ``"prediction"`` — the reference for prediction drift.
    """
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"build_profile expects a pandas DataFrame (got {type(df).__name__})")
    if target is not None and target not in df.columns:
        raise ValueError(f"target column {target!r} is not in the data (columns: {', '.join(map(str, df.columns))})")
    columns = list(feature_columns) if feature_columns is not None else [c for c in df.columns if c != target]
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"feature column(s) {', '.join(map(str, missing))} are not in the data")
    profile: dict[str, Any] = {"rows": int(len(df)),
                               "features": {str(c): profile_column(df[c]) for c in columns}}
    if target is not None:
        profile["target"] = profile_column(df[target])
    if predictions is not None:
        profile["prediction"] = profile_column(pd.Series(list(predictions) if not hasattr(predictions, "dtype")
                                                         else predictions))
    return profile
