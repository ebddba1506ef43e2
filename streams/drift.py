"""Data drift, prediction drift and concept drift.

Data drift is tested per feature on windows of ``drift_window`` events, with
numpy-vectorised two-sample tests against a reference:

* the model version's **reference profile** from the registry when there is
  one (numeric: the 101 stored quantiles define a piecewise-linear CDF;
  categorical: the stored frequencies and row count), or
* the **stream's own past** otherwise: the first ``reference_size`` values
  the version saw after its warm-up (numeric: kept as 401 quantiles).

Numeric features use the Kolmogorov-Smirnov statistic (``ks``) or the
population stability index on reference deciles (``psi``); categorical
features (and ``chi2``) use Pearson's chi-square test of homogeneity between
the reference counts and the window counts. River's per-event detectors
(``kswin``, ``adwin``, ``page_hinkley``) are available for numeric features
too; they are slower (one Python call per value).

False-alarm budget
------------------
``MonitorPolicy.expected_run_length`` (ARL, in events) holds across all
watched features together. Each window of ``W`` events runs one test per
feature, ``F`` tests in all, so ``F / W`` tests per event. Bonferroni's
inequality bounds the probability of any false alarm in ``N`` events by the
sum of the per-test levels, ``N * F / W * alpha``; setting

    alpha = W / (ARL * F)

keeps the expected number of false alarms in ``N`` events at most
``N / ARL`` — at most one false alarm per ARL events, however the tests are
correlated. :func:`per_test_alpha` computes it; River's per-event
detectors get ``1 / (ARL * F)`` as their level (ADWIN's ``delta``, KSWIN's
``alpha``), a conservative mapping since their tests overlap.

The KS p-value uses the asymptotic Kolmogorov distribution with Stephens'
small-sample correction and the effective size ``n*m/(n+m)``; against a
quantile profile the statistic is first reduced by the profile's resolution
(0.01 for 101 quantiles), the largest error the interpolated reference CDF
can have, so the test stays conservative.

Concept drift runs River's detectors on the error stream of joined pairs:
the binary detectors (DDM, EDDM, HDDM_A, HDDM_W, FHDDM) on "was the
prediction wrong" (for regression: "was the absolute error above twice the
warm-up MAE"), ADWIN and Page-Hinkley on the 0/1 error or the absolute
error. Only *increases* of the error raise a detection.

Every detector is looked up by name in :data:`driftline.catalog.DETECTORS`:
the windowed tests register below, next to their classes; River's
per-event detectors in :mod:`driftline.streams.detectors`, one module each.

References
----------
.. [1] Bonferroni, C. E. (1936). Teoria statistica delle classi e calcolo
   delle probabilità.
.. [2] Stephens, M. A. (1970). Use of the Kolmogorov-Smirnov, Cramér-von
   Mises and related statistics without extensive tables. JRSS B 32(1).
.. [3] Rabanser, S., Günnemann, S., Lipton, Z. (2019). Failing loudly: an
   empirical study of methods for detecting dataset shift. NeurIPS.
.. [4] Bifet, A., Gavaldà, R. (2007). Learning from time-changing data with
   adaptive windowing. SDM.
.. [5] Gama, J. et al. (2004). Learning with drift detection. SBIA.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> test = NumericDriftTest(window=500, reference_size=1000)
>>> test.update(rng.normal(size=3000), alpha=1e-4)
[]
>>> [round(r.statistic, 2) for r in test.update(rng.normal(1.0, 1, size=500), alpha=1e-4)]
[0.43]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from driftline.catalog import DETECTORS, Entry, UnknownName
from driftline.policy import DetectorSpec, PolicyError

__all__ = [
    "per_test_alpha",
    "ks_pvalue",
    "DriftResult",
    "NumericDriftTest",
    "CategoricalDriftTest",
    "RiverFeatureDetector",
    "ConceptDriftDetector",
    "make_feature_test",
]

#: Smallest per-test level we use (keeps thresholds finite).
_MIN_ALPHA = 1e-12
#: Quantiles kept of a self-collected numeric reference.
_SELF_QUANTILES = 401


def per_test_alpha(expected_run_length: float, n_tests: int, window: int) -> float:
    """Per-test significance level for a false-alarm budget (Bonferroni).

    Parameters
    ----------
    expected_run_length
        Events between two false alarms, across all tests together.
    n_tests
        Tests run per window (features watched, plus the prediction).
    window
        Events per window (each test runs once per window).

    >>> per_test_alpha(1_000_000, 12, 500)  # doctest: +ELLIPSIS
    4.16...e-05
    """
    if expected_run_length <= 0 or n_tests < 1 or window < 1:
        raise PolicyError(
            f"false-alarm budget: expected_run_length, n_tests and window must be positive "
            f"(got {expected_run_length!r}, {n_tests!r}, {window!r})")
    return max(_MIN_ALPHA, min(0.5, window / (expected_run_length * n_tests)))


def _stephens(d: float, n_eff: float) -> float:
    root = math.sqrt(n_eff)
    return (root + 0.12 + 0.11 / root) * d


def ks_pvalue(d: float, n_eff: float) -> float:
    """Asymptotic KS p-value with Stephens' correction.

    >>> round(ks_pvalue(0.1, 500), 4)
    0.0001
    """
    if d <= 0:
        return 1.0
    from scipy import special  # here: listing the detectors (policy validation) must not load SciPy

    return float(min(1.0, special.kolmogorov(_stephens(d, n_eff))))


def chi2_sf(x: float, dof: int) -> float:
    """Chi-square survival function: ``scipy.stats.chi2.sf`` (which calls
    ``scipy.special.chdtrc``, the same value) without importing
    ``scipy.stats`` (about 50 MB of the monitor's resident memory).

    >>> round(chi2_sf(3.84, 1), 4)
    0.05
    """
    from scipy import special

    return float(special.chdtrc(dof, x))


def chi2_isf(q: float, dof: int) -> float:
    """Inverse of :func:`chi2_sf` (``scipy.stats.chi2.isf``: ``scipy.special.chdtri``).

    >>> round(chi2_isf(0.05, 1), 2)
    3.84
    """
    from scipy import special

    return float(special.chdtri(dof, q))


def ks_critical(alpha: float, n_eff: float) -> float:
    """Statistic at which :func:`ks_pvalue` equals ``alpha``."""
    from scipy import special

    lam = float(special.kolmogi(alpha))
    root = math.sqrt(n_eff)
    return lam / (root + 0.12 + 0.11 / root)


@dataclass
class DriftResult:
    """One detection: the test statistic, its threshold and p-value.

    ``offset`` is the position (in the values passed to ``update``) of the
    value that completed the window; ``n`` the values in the window.
    """

    statistic: float
    threshold: float
    p_value: float | None
    alpha: float | None
    offset: int
    n: int
    detector: str


#: Bins of a tested window's histogram (the reference profile has 20 too).
WINDOW_BINS = 20
#: Most categories kept of a tested window (the rest summed under ``__other__``).
WINDOW_CATEGORIES = 30


def window_histogram(values: np.ndarray, reference_range: tuple[float, float] | None = None) -> dict:
    """Histogram of a tested window, JSON-safe, over the window's range
    widened to the reference's (so a shifted window still shows where the
    reference was).

    >>> window_histogram(np.array([0.0, 1.0, 1.0, 2.0]))["counts"][-1]
    1
    """
    low, high = float(values.min()), float(values.max())
    if reference_range is not None:
        low, high = min(low, reference_range[0]), max(high, reference_range[1])
    if high <= low:
        low, high = low - 0.5, high + 0.5
    counts, edges = np.histogram(values, bins=WINDOW_BINS, range=(low, high))
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts], "n": int(values.size)}


def category_shares(counts: dict[str, int], n: int) -> dict:
    """Shares of the categories of a tested window (the most frequent ones).

    >>> category_shares({"a": 3, "b": 1}, 4)
    {'frequencies': {'a': 0.75, 'b': 0.25}, 'n': 4}
    """
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    shares = {k: c / n for k, c in ranked[:WINDOW_CATEGORIES]}
    if len(ranked) > WINDOW_CATEGORIES:
        shares["__other__"] = sum(c for _, c in ranked[WINDOW_CATEGORIES:]) / n
    return {"frequencies": shares, "n": int(n)}


def _restore_last(test, last: list) -> None:
    # States written before thresholds and window histograms were kept hold two values.
    test.last_statistic, test.last_p_value = last[0], last[1]
    test.last_threshold = last[2] if len(last) > 2 else None
    test.last_histogram = last[3] if len(last) > 3 else None


# -- references ------------------------------------------------------------------


class _QuantileCDF:
    """A CDF interpolated between stored quantiles (right and left limits)."""

    def __init__(self, quantiles: Sequence[float]):
        q = np.asarray(quantiles, dtype=np.float64)
        if q.ndim != 1 or q.size < 3 or not np.all(np.isfinite(q)) or np.any(np.diff(q) < 0):
            raise ValueError("quantiles must be a non-decreasing list of at least 3 finite numbers")
        self.q = q
        self.step = 1.0 / (q.size - 1)

    def _interp(self, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        # The same arithmetic on every element (clipped indices), then the
        # ends set: no boolean-mask gathers, which cost more than the sums.
        q = self.q
        last = q.size
        i = np.clip(idx, 1, last - 1)
        lo, hi = q[i - 1], q[i]
        span = hi - lo
        frac = (x - lo) / np.where(span > 0, span, 1.0)
        out = (i - 1 + np.clip(frac, 0.0, 1.0)) * self.step
        out[idx == 0] = 0.0
        out[idx >= last] = 1.0
        return out

    def right(self, x: np.ndarray) -> np.ndarray:
        return self._interp(x, np.searchsorted(self.q, x, side="right"))

    def left(self, x: np.ndarray) -> np.ndarray:
        return self._interp(x, np.searchsorted(self.q, x, side="left"))

    def both(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(right(x), left(x))``; they differ only at values equal to a
        stored quantile, so ``left`` is computed just there."""
        idx_right = np.searchsorted(self.q, x, side="right")
        idx_left = np.searchsorted(self.q, x, side="left")
        right = self._interp(x, idx_right)
        ties = idx_left != idx_right
        if not ties.any():
            return right, right
        left = right.copy()
        left[ties] = self._interp(x[ties], idx_left[ties])
        return right, left


def _ks_statistic(window_sorted: np.ndarray, reference: _QuantileCDF) -> float:
    n = window_sorted.size
    right = np.searchsorted(window_sorted, window_sorted, side="right") / n
    left = np.searchsorted(window_sorted, window_sorted, side="left") / n
    cdf_right, cdf_left = reference.both(window_sorted)
    return float(max(np.max(np.abs(right - cdf_right)), np.max(np.abs(left - cdf_left))))


class NumericDriftTest:
    """Windowed two-sample test of one numeric feature (``ks`` or ``psi``).

    Parameters
    ----------
    window
        Values per tested window.
    reference_size
        Values collected as the reference when there is no profile.
    profile
        The feature's entry of a registry profile (``type: numeric`` with
        ``quantiles`` and ``count``), or ``None``.
    method
        ``ks`` (default) or ``psi``.
    """

    def __init__(self, window: int = 500, reference_size: int = 2000, profile: dict | None = None,
                 method: str = "ks"):
        if method not in ("ks", "psi"):
            raise PolicyError(f"numeric drift test: unknown method {method!r} (use ks or psi)")
        self.window = int(window)
        self.reference_size = int(reference_size)
        self.method = method
        self.pending: list[np.ndarray] = []
        self.n_pending = 0
        self.reference: np.ndarray | None = None  # sorted self-reference sample
        self.ref_count = 0
        self.quantiles: _QuantileCDF | None = None
        self.tests = 0
        self.last_statistic: float | None = None
        self.last_p_value: float | None = None
        self.last_threshold: float | None = None
        self._histogram: dict | None = None
        self._tested: np.ndarray | None = None  # the last tested window, sorted, until its histogram is drawn
        if profile is not None and profile.get("quantiles"):
            self.quantiles = _QuantileCDF(profile["quantiles"])
            self.ref_count = int(profile.get("count") or profile.get("rows") or 0) or 10 ** 9

    @property
    def ready(self) -> bool:
        return self.quantiles is not None

    @property
    def last_histogram(self) -> dict | None:
        """The last tested window's histogram (for reports), drawn when asked:
        a snapshot wants it once, while a window is tested every ``window`` values."""
        if self._tested is not None:
            self._histogram, self._tested = window_histogram(self._tested, self.reference_range()), None
        return self._histogram

    @last_histogram.setter
    def last_histogram(self, value: dict | None) -> None:
        self._histogram, self._tested = value, None

    def reference_range(self) -> tuple[float, float] | None:
        if self.quantiles is not None:
            return float(self.quantiles.q[0]), float(self.quantiles.q[-1])
        return None

    def update(self, values: np.ndarray, alpha: float) -> list[DriftResult]:
        """Add finite values; run one test per completed window."""
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        results: list[DriftResult] = []
        offset = 0
        if not self.ready:
            need = self.reference_size - (0 if self.reference is None else self.reference.size)
            take = values[:need]
            ref = take if self.reference is None else np.concatenate([self.reference, take])
            if ref.size >= self.reference_size:
                # Keep 401 quantiles, not the sample: a compact state that
                # restores identically (the KS resolution term covers it).
                self.quantiles = _QuantileCDF(np.quantile(ref, np.linspace(0.0, 1.0, _SELF_QUANTILES)))
                self.ref_count = ref.size
                self.reference = None
            else:
                self.reference = ref
            offset = take.size
            values = values[take.size:]
            if not self.ready:
                return results
        if values.size == 0:
            return results
        self.pending.append(values)
        self.n_pending += values.size
        if self.n_pending < self.window:
            return results
        data = np.concatenate(self.pending)
        end = 0
        while data.size - end >= self.window:
            chunk = data[end:end + self.window]
            end += self.window
            result = self._test(np.sort(chunk), alpha)
            if result is not None:
                result.offset = offset + end - 1 - (self.n_pending - values.size)
                results.append(result)
        rest = data[end:]
        self.pending = [rest] if rest.size else []
        self.n_pending = rest.size
        return results

    def _test(self, window_sorted: np.ndarray, alpha: float) -> DriftResult | None:
        self.tests += 1
        n = window_sorted.size
        m = self.ref_count
        self._tested = window_sorted  # its histogram is drawn when a report asks (see last_histogram)
        n_eff = n * m / (n + m)
        right = self.quantiles.right
        if self.method == "ks":
            d = max(0.0, _ks_statistic(window_sorted, self.quantiles) - self.quantiles.step)
            p = ks_pvalue(d, n_eff)
            self.last_statistic, self.last_p_value = d, p
            self.last_threshold = ks_critical(alpha, n_eff)
            if p < alpha:
                return DriftResult(d, self.last_threshold, p, alpha, 0, n, "ks")
            return None
        # PSI on reference deciles; n_eff*PSI is approximately chi-square(B-1) under H0.
        edges = np.interp(np.linspace(0, 1, 11), np.linspace(0, 1, self.quantiles.q.size), self.quantiles.q)
        edges = np.unique(edges)
        inner = edges[1:-1]
        expected = np.diff(np.concatenate([[0.0], right(inner), [1.0]]))
        observed = np.bincount(np.searchsorted(inner, window_sorted, side="right"),
                               minlength=inner.size + 1) / n
        e = np.clip(expected, 1e-4, None)
        o = np.clip(observed, 1e-4, None)
        psi = float(np.sum((o - e) * np.log(o / e)))
        dof = max(1, inner.size)
        p = chi2_sf(psi * n_eff, dof)
        self.last_statistic, self.last_p_value = psi, p
        self.last_threshold = chi2_isf(alpha, dof) / n_eff
        if p < alpha:
            return DriftResult(psi, self.last_threshold, p, alpha, 0, n, "psi")
        return None

    # -- state -------------------------------------------------------------
    def to_state(self) -> dict:
        pending = np.concatenate(self.pending) if self.pending else np.zeros(0)
        return {"window": self.window, "reference_size": self.reference_size, "method": self.method,
                "pending": pending, "reference": self.reference, "ref_count": self.ref_count,
                "quantiles": None if self.quantiles is None else self.quantiles.q, "tests": self.tests,
                "last": [self.last_statistic, self.last_p_value, self.last_threshold, self.last_histogram]}

    @classmethod
    def from_state(cls, state: dict) -> "NumericDriftTest":
        self = cls(state["window"], state["reference_size"], None, state["method"])
        pending = np.asarray(state["pending"], dtype=np.float64)
        self.pending = [pending] if pending.size else []
        self.n_pending = pending.size
        self.reference = None if state["reference"] is None else np.asarray(state["reference"], dtype=np.float64)
        self.ref_count = int(state["ref_count"])
        if state["quantiles"] is not None:
            self.quantiles = _QuantileCDF(state["quantiles"])
        self.tests = int(state["tests"])
        _restore_last(self, state["last"])
        return self


# The windowed two-sample tests build ``test(kind, window, reference_size, profile)``
# for one feature (``windowed=True``); River's per-event detectors are in
# :mod:`driftline.streams.detectors`.
@DETECTORS.register("ks", kind="data", windowed=True, params=("reference_size",), order=10)
def _ks_test(kind: str, window: int, reference_size: int, profile: dict | None) -> "NumericDriftTest":
    return NumericDriftTest(window, reference_size, profile, "ks")


@DETECTORS.register("psi", kind="data", windowed=True, params=("reference_size",), order=20)
def _psi_test(kind: str, window: int, reference_size: int, profile: dict | None) -> "NumericDriftTest":
    return NumericDriftTest(window, reference_size, profile, "psi")


class CategoricalDriftTest:
    """Windowed chi-square test of homogeneity for one categorical feature.

    Reference counts come from the profile (``frequencies`` times ``count``)
    or from the first ``reference_size`` values. Categories with fewer than
    5 expected values in the window are pooled into one cell (Cochran's
    rule), so rare and new categories do not make the test fragile.

    >>> t = CategoricalDriftTest(window=200, profile={"type": "categorical", "count": 10000,
    ...                                               "frequencies": {"a": 0.7, "b": 0.3}})
    >>> t.update(["a"] * 140 + ["b"] * 60, alpha=1e-4)
    []
    >>> [r.detector for r in t.update(["b"] * 200, alpha=1e-4)]
    ['chi2']
    """

    def __init__(self, window: int = 500, reference_size: int = 2000, profile: dict | None = None):
        self.window = int(window)
        self.reference_size = int(reference_size)
        self.ref_counts: dict[str, float] = {}
        self.ref_total = 0.0
        self.from_profile = False
        self.pending: list[str] = []
        self.tests = 0
        self.last_statistic: float | None = None
        self.last_p_value: float | None = None
        self.last_threshold: float | None = None
        self.last_histogram: dict | None = None  # the last tested window, for reports
        self.method = "chi2"
        if profile is not None and profile.get("frequencies"):
            count = float(profile.get("count") or 10 ** 9)
            self.ref_counts = {str(k): float(v) * count for k, v in profile["frequencies"].items()}
            self.ref_total = float(sum(self.ref_counts.values()))
            self.from_profile = True

    @property
    def ready(self) -> bool:
        return self.from_profile or self.ref_total >= self.reference_size

    def known(self, value: str) -> bool:
        return value in self.ref_counts

    def update(self, values: Sequence[str], alpha: float) -> list[DriftResult]:
        values = list(values)
        results: list[DriftResult] = []
        start = 0
        if not self.ready:
            need = int(self.reference_size - self.ref_total)
            for v in values[:need]:
                self.ref_counts[v] = self.ref_counts.get(v, 0.0) + 1.0
            start = min(need, len(values))
            self.ref_total += start
            if not self.ready:
                return results
        before = len(self.pending)
        self.pending.extend(values[start:])
        end = 0
        while len(self.pending) - end >= self.window:
            chunk = self.pending[end:end + self.window]
            end += self.window
            result = self._test(chunk, alpha)
            if result is not None:
                result.offset = start + end - 1 - before
                results.append(result)
        del self.pending[:end]
        return results

    def _test(self, chunk: list[str], alpha: float) -> DriftResult | None:
        self.tests += 1
        counts: dict[str, int] = {}
        for v in chunk:
            counts[v] = counts.get(v, 0) + 1
        n = len(chunk)
        self.last_histogram = category_shares(counts, n)
        cats = sorted(set(counts) | set(self.ref_counts))
        ref = np.array([self.ref_counts.get(c, 0.0) for c in cats])
        obs = np.array([counts.get(c, 0) for c in cats], dtype=np.float64)
        table = np.vstack([ref, obs])
        total = table.sum()
        col = table.sum(axis=0)
        # Pool cells with a small expected window count (Cochran).
        small = col * n / total < 5
        if small.any():
            pooled = table[:, small].sum(axis=1, keepdims=True)
            table = np.hstack([table[:, ~small], pooled]) if pooled.sum() > 0 else table[:, ~small]
        if table.shape[1] < 2:
            self.last_statistic, self.last_p_value, self.last_threshold = 0.0, 1.0, None
            return None
        row = table.sum(axis=1, keepdims=True)
        col = table.sum(axis=0, keepdims=True)
        expected = row * col / table.sum()
        chi2 = float(np.sum((table - expected) ** 2 / expected))
        dof = table.shape[1] - 1
        p = chi2_sf(chi2, dof)
        self.last_statistic, self.last_p_value = chi2, p
        self.last_threshold = chi2_isf(alpha, dof)
        if p < alpha:
            return DriftResult(chi2, self.last_threshold, p, alpha, 0, n, "chi2")
        return None

    def to_state(self) -> dict:
        return {"window": self.window, "reference_size": self.reference_size, "ref": [list(self.ref_counts),
                list(self.ref_counts.values())], "ref_total": self.ref_total, "from_profile": self.from_profile,
                "pending": self.pending, "tests": self.tests,
                "last": [self.last_statistic, self.last_p_value, self.last_threshold, self.last_histogram]}

    @classmethod
    def from_state(cls, state: dict) -> "CategoricalDriftTest":
        self = cls(state["window"], state["reference_size"])
        keys, vals = state["ref"]
        self.ref_counts = dict(zip(keys, (float(v) for v in vals)))
        self.ref_total = float(state["ref_total"])
        self.from_profile = bool(state["from_profile"])
        self.pending = list(state["pending"])
        self.tests = int(state["tests"])
        _restore_last(self, state["last"])
        return self


@DETECTORS.register("chi2", kind="data", windowed=True, params=("reference_size",), order=110)
def _chi2_test(kind: str, window: int, reference_size: int, profile: dict | None):
    if kind == "numeric":
        # chi2 on a numeric feature: PSI bins are the closest chi-square analogue.
        return NumericDriftTest(window, reference_size, profile, "psi")
    return CategoricalDriftTest(window, reference_size, profile)


#: The test of every categorical feature, whatever the policy's (numeric) data-drift detector.
CATEGORICAL_TEST = "chi2"


# -- River detectors ----------------------------------------------------------------


def _detector_entry(name: str) -> Entry:
    """The catalog entry of a detector, or :class:`~driftline.policy.PolicyError`
    naming the known ones."""
    try:
        return DETECTORS.get(name)
    except UnknownName as error:
        raise PolicyError(str(error)) from None


def _event_detector(name: str, params: dict, level: float | None, concept: bool):
    """A per-event detector (River's interface: ``update(x)``, ``drift_detected``)."""
    entry = _detector_entry(name)
    if entry.windowed or entry.matches(kind="outlier"):
        raise PolicyError(f"unknown drift detector {name!r}: {name} is not a per-event detector")
    try:
        return entry.implementation(dict(params), level, concept)
    except (TypeError, ValueError) as error:
        raise PolicyError(f"detector {name}: bad parameters {params!r} ({error})") from None


class RiverFeatureDetector:
    """A River per-event detector on one numeric feature (kswin/adwin/page_hinkley).

    The false-alarm level ``alpha`` given at construction becomes ADWIN's
    ``delta`` or KSWIN's ``alpha`` unless the policy sets them.
    """

    def __init__(self, spec: DetectorSpec, alpha: float):
        self.name = spec.name
        self.detector = _event_detector(spec.name, spec.params, alpha, concept=False)
        self.seen = 0

    def update(self, values: np.ndarray, alpha: float | None = None) -> list[DriftResult]:
        values = np.asarray(values, dtype=np.float64)
        results = []
        det = self.detector
        for i, x in enumerate(values[np.isfinite(values)].tolist()):
            det.update(x)
            self.seen += 1
            if det.drift_detected:
                threshold = float(getattr(det, "delta", getattr(det, "alpha", getattr(det, "threshold", 0.0))))
                results.append(DriftResult(1.0, threshold, None, None, i, self.seen, self.name))
        return results

    ready = True


def make_feature_test(kind: str, spec: DetectorSpec, window: int, reference_size: int,
                      profile: dict | None, alpha: float):
    """Build the data-drift test for one feature (``kind``: numeric or categorical)."""
    entry = _detector_entry(CATEGORICAL_TEST if kind == "categorical" else spec.name)
    if entry.windowed:
        return entry.implementation(kind, window, reference_size, profile)
    return RiverFeatureDetector(spec, alpha)


class ConceptDriftDetector:
    """A River detector on the error stream of joined pairs.

    Parameters
    ----------
    spec
        Detector name and River parameters (``MonitorPolicy.concept_drift``).
    task
        ``classification`` (error = prediction != label) or ``regression``
        (ADWIN/Page-Hinkley on the absolute error; binary detectors on
        "absolute error > 2 x the warm-up MAE").

    Only increases of the error are reported: an ADWIN cut after which the
    window's mean error is lower (the model got better) is ignored.

    >>> det = ConceptDriftDetector(DetectorSpec("ddm"), "classification")
    >>> import random; rng = random.Random(1)
    >>> errors = [rng.random() < 0.1 for _ in range(3000)] + [rng.random() < 0.5 for _ in range(1000)]
    >>> hits = det.update(np.array(errors, dtype=float))
    >>> 3000 <= hits[0] < 3300
    True
    """

    def __init__(self, spec: DetectorSpec, task: str):
        self.spec = spec
        self.task = task
        self.binary = bool(_detector_entry(spec.name).binary)
        self.detector = _event_detector(spec.name, spec.params, None, concept=True)
        self.seen = 0
        self.since_sum = 0.0
        self.since_n = 0
        self.scale: float | None = None  # regression + binary detector: error threshold
        #: per offset :meth:`update` returned: ``(recent, before, recent_n)``, the
        #: detector's own estimate of the error level after the change (ADWIN: the
        #: mean of its window after the cut, over ``recent_n`` errors) and of the
        #: level it rose from (ADWIN: the mean of the part it dropped); ``None``
        #: where the detector has no such estimate.
        self.levels: list[tuple[float | None, float | None, int | None]] = []

    def set_scale(self, mae: float) -> None:
        self.scale = 2.0 * mae

    def update(self, errors: np.ndarray) -> list[int]:
        """Feed errors (0/1 for classification, absolute for regression);
        returns the offsets at which an increase was detected."""
        errors = np.asarray(errors, dtype=np.float64)
        if self.binary and self.task == "regression":
            if self.scale is None:
                return []
            errors = errors > self.scale
        det = self.detector
        is_adwin = self.spec.name == "adwin"
        hits = []
        self.levels = []
        values = errors.tolist()
        # Sum and count fed since the detector last reset (River's ADWIN starts
        # afresh after a detection), to tell the mean of the part ADWIN drops.
        cums = np.cumsum(errors).tolist() if is_adwin else None
        base_sum, base_n = self.since_sum, self.since_n
        update = det.update
        for i, x in enumerate(values):
            update(x)
            if det.drift_detected:
                if is_adwin:
                    fed_sum = base_sum + cums[i]
                    fed_n = base_n + i + 1
                    kept_n = det.width
                    dropped_n = fed_n - kept_n
                    dropped_mean = (fed_sum - det.total) / dropped_n if dropped_n > 0 else 0.0
                    base_sum, base_n = -cums[i], -(i + 1)  # the next update starts a fresh window
                    if det.estimation <= dropped_mean:
                        continue  # the error went down: not a degradation
                    self.levels.append((float(det.estimation), float(dropped_mean), int(kept_n)))
                else:
                    self.levels.append((None, None, None))
                hits.append(i)
        if is_adwin and values:
            self.since_sum = base_sum + cums[-1]
            self.since_n = base_n + len(values)
        self.seen += len(values)
        return hits

    def to_state(self) -> dict:
        return {"spec": [self.spec.name, self.spec.params], "task": self.task, "detector": self.detector,
                "seen": self.seen, "scale": self.scale, "since": [self.since_sum, self.since_n]}

    @classmethod
    def from_state(cls, state: dict, spec: DetectorSpec) -> "ConceptDriftDetector":
        self = cls(spec, state["task"])
        if [spec.name, spec.params] == list(state["spec"]):
            # Same detector settings: continue where it stopped. (A changed
            # policy starts the detector fresh.)
            self.detector = state["detector"]
            self.since_sum, self.since_n = float(state["since"][0]), int(state["since"][1])
        self.seen = int(state["seen"])
        self.scale = state["scale"]
        return self
