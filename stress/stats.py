"""Statistics of repeated measurements: medians with intervals, paired comparisons, precision.

Why (the lesson of pyperf and ``netperf -I``): on a shared machine one run says little,
so every figure carries its spread, and a comparison says "not distinguishable" rather
than rank noise.  ``compare`` runs every variant with the *same seeds*, so its
measurements come in pairs (variant and baseline, same seed, run one after the other);
a paired test sees through the drift that moves both members of a pair alike.

What is computed, and how:

- **A figure of one variant**: the median of its runs and a 95% bootstrap confidence
  interval of that median (:func:`median_interval`, ``scipy.stats.bootstrap``, the
  percentile method: BCa's acceleration, estimated by the jackknife, is unstable on the
  tiny, tied samples a comparison has, and undefined on all-equal ones).
- **A variant against the baseline** (:func:`paired_comparison`): per pair the ratio
  variant / baseline, their median, and a bootstrap interval of that median; a
  Wilcoxon signed-rank p-value on the paired differences (``scipy.stats.wilcoxon``,
  exact for small samples).  Where a baseline value is 0 a ratio means nothing (the
  count figures: sleeps, wedges), so the paired *difference* is used, against 0.
- **A difference is called** only when the interval excludes 1 (or 0) *and* the
  Wilcoxon p is below 0.05; otherwise the figure is "not distinguishable", with how
  many more pairs would be needed at the observed spread (:func:`more_repeats`).  The
  exact two-sided signed-rank test cannot go below ``2 / 2**n``, so with fewer than
  :data:`MIN_PAIRS` (6) pairs no difference can be called, however large it looks.
- **Precision** (``compare --precision``): the interval's half-width over the median
  (:meth:`Estimate.relative_half_width`), as ``netperf -I 95,5`` asks of its
  confidence interval.
- **Two independent samples** (``bench --compare OLD NEW``, two bench runs, nothing
  paired): the ratio of medians with a two-sample bootstrap interval, and a
  Mann-Whitney U p-value (:func:`two_sample_comparison`).

Every function is pure and deterministic: the bootstrap draws from a generator seeded
with :data:`RNG_SEED`, so the same data always give the same intervals (a resumed
comparison writes the same document as an uninterrupted one).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from itertools import count
from typing import Any

import numpy as np
import scipy.stats

CONFIDENCE = 0.95  #: the confidence level of every interval
ALPHA = 1 - CONFIDENCE  #: the significance level of every test
RESAMPLES = 9999  #: bootstrap resamples (scipy's default)
RNG_SEED = 2005  #: the bootstrap's seed: the same data give the same interval


def min_pairs(alpha: float = ALPHA) -> int:
    """The fewest pairs with which the exact two-sided Wilcoxon signed-rank test can
    reach ``p < alpha``: its smallest p-value is ``2 / 2**n`` (every sign alike)."""
    return next(n for n in count(1) if 2 / 2**n < alpha)


MIN_PAIRS = min_pairs()  #: 6 at alpha 0.05


def finite(values: Sequence[float | None]) -> np.ndarray:
    """The values as a float array, without None, NaN and infinities (not measured)."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return np.asarray(xs, dtype=float)


def _median(x: np.ndarray, axis: int = -1) -> Any:
    return np.median(x, axis=axis)


def _bootstrap(samples: tuple[np.ndarray, ...], statistic: Callable[..., Any], seed: int) -> tuple[float, float]:
    """The percentile bootstrap interval of ``statistic`` over ``samples`` (independent
    resampling of each sample; a 1-tuple for one sample)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a degenerate resample distribution only makes a narrow interval
        res = scipy.stats.bootstrap(samples, statistic, vectorized=True, method="percentile",
                                    confidence_level=CONFIDENCE, n_resamples=RESAMPLES,
                                    rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


# --- one sample -----------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """The median of a figure's runs and its 95% interval (None where undefined)."""

    median: float | None
    low: float | None  #: None with fewer than 2 values
    high: float | None
    n: int

    def relative_half_width(self) -> float | None:
        """Half the interval's width over the median (0 for an exact value, infinity
        for a spread around a median of 0); None without an interval."""
        if self.median is None or self.low is None or self.high is None:
            return None
        half = (self.high - self.low) / 2
        if half == 0:
            return 0.0
        return half / abs(self.median) if self.median else math.inf

    def to_dict(self) -> dict[str, Any]:
        """compare.json's ``summary`` entry of one figure."""
        return {**asdict(self), "relative_half_width": self.relative_half_width()}


def median_interval(values: Sequence[float | None], seed: int = RNG_SEED) -> Estimate:
    """Median and 95% bootstrap interval of the measured values (None and NaN ignored)."""
    x = finite(values)
    if len(x) == 0:
        return Estimate(None, None, None, 0)
    med = float(np.median(x))
    if len(x) == 1:
        return Estimate(med, None, None, 1)
    if np.all(x == x[0]):
        return Estimate(med, med, med, len(x))
    low, high = _bootstrap((x,), _median, seed)
    return Estimate(med, low, high, len(x))


def precise(estimate: Estimate, precision: float) -> bool:
    """Whether the interval is as tight as asked: half-width / median <= ``precision``
    (an unmeasured figure is not judged: True)."""
    if estimate.n == 0:
        return True
    rel = estimate.relative_half_width()
    return rel is not None and rel <= precision


# --- two samples ----------------------------------------------------------------------

BETTER = "better"
WORSE = "worse"
UNDISTINGUISHED = "not distinguishable"
UNMEASURED = "not measured"


@dataclass(frozen=True)
class Comparison:
    """A variant against the baseline (or a new bench against an old one) for one figure."""

    kind: str  #: "ratio" (variant / baseline) or "difference" (variant - baseline)
    estimate: float | None
    low: float | None
    high: float | None
    p: float | None  #: the test's p-value (Wilcoxon signed-rank, or Mann-Whitney U)
    n: int  #: pairs (paired), or the smaller sample (two samples)
    verdict: str  #: BETTER, WORSE, UNDISTINGUISHED or UNMEASURED
    more_repeats: int | None  #: not distinguishable: more pairs needed at this spread (None: no difference seen)
    why: str  #: the reason in words, for the table

    @property
    def reference(self) -> float:
        """No change: 1 for a ratio, 0 for a difference."""
        return 1.0 if self.kind == "ratio" else 0.0

    @property
    def called(self) -> bool:
        """A difference was called (better or worse)."""
        return self.verdict in (BETTER, WORSE)

    def to_dict(self) -> dict[str, Any]:
        """compare.json's ``versus`` entry of one figure."""
        return asdict(self)


def more_repeats(n: int, estimate: float, low: float, high: float, reference: float, minimum: int) -> int | None:
    """How many more pairs would make the interval exclude ``reference`` at the observed
    spread, assuming it narrows as 1/sqrt(n); at least enough to reach ``minimum``.
    None when no difference was seen at all (more repeats would not make one)."""
    gap = abs(estimate - reference)
    if gap == 0:
        return None
    reach = estimate - low if estimate > reference else high - estimate
    need = n if reach <= 0 else math.ceil(n * (reach / gap) ** 2)
    return max(need, minimum, n + 1) - n


def _judge(kind: str, estimate: float, low: float | None, high: float | None, p: float | None, n: int,
           better: str, minimum: int, test: str) -> Comparison:
    """The verdict of one comparison from its estimate, interval and p-value."""
    ref = 1.0 if kind == "ratio" else 0.0
    if low is None or high is None:
        return Comparison(kind, estimate, None, None, p, n, UNDISTINGUISHED, minimum - n,
                          "one value: no interval")
    excludes = low > ref or high < ref
    if excludes and p is not None and p < ALPHA:
        up = estimate > ref
        verdict = WORSE if up == (better == "lower") else BETTER
        return Comparison(kind, estimate, low, high, p, n, verdict, None, f"interval excludes {ref:g}, p < {ALPHA:g}")
    more = more_repeats(n, estimate, low, high, ref, minimum)
    if n < minimum:
        why = f"{n} < {minimum}: {test} cannot reach p < {ALPHA:g} yet"
    elif excludes:
        why = f"interval excludes {ref:g} but p = {p:.2g}" if p is not None else f"interval excludes {ref:g}, no test"
    else:
        why = f"interval includes {ref:g}"
    return Comparison(kind, estimate, low, high, p, n, UNDISTINGUISHED, more, why)


def _wilcoxon(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p of paired differences ``d`` (1.0 when every
    difference is 0: nothing to rank)."""
    if not np.any(d):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = float(scipy.stats.wilcoxon(d).pvalue)
    return p if math.isfinite(p) else 1.0


def paired_comparison(pairs: Sequence[tuple[float | None, float | None]], better: str,
                      seed: int = RNG_SEED) -> Comparison:
    """The variant against the baseline over ``pairs`` of (baseline, variant) values,
    one pair per seed; ``better`` is "lower" or "higher" (which way is better)."""
    ok = [(float(b), float(v)) for b, v in pairs
          if b is not None and v is not None and math.isfinite(float(b)) and math.isfinite(float(v))]
    n = len(ok)
    if n == 0:
        return Comparison("ratio", None, None, None, None, 0, UNMEASURED, None, "not measured")
    base = np.array([b for b, _ in ok])
    other = np.array([v for _, v in ok])
    p = _wilcoxon(other - base) if n >= 2 else None
    if np.all(base > 0) and np.all(other >= 0):
        kind, x = "ratio", other / base
    else:
        kind, x = "difference", other - base
    est = float(np.median(x))
    if n == 1:
        low = high = None
    elif np.all(x == x[0]):
        low = high = est
    else:
        low, high = _bootstrap((x,), _median, seed)
    return _judge(kind, est, low, high, p, n, better, MIN_PAIRS, "the signed-rank test")


def _mannwhitney_min_n(alpha: float = ALPHA) -> int:
    """Fewest values per side with which the exact two-sided Mann-Whitney U test can
    reach ``p < alpha``: its smallest p-value is ``2 / C(2n, n)``."""
    return next(n for n in count(1) if 2 / math.comb(2 * n, n) < alpha)


MIN_PER_SIDE = _mannwhitney_min_n()  #: 4 at alpha 0.05


def two_sample_comparison(old: Sequence[float | None], new: Sequence[float | None], better: str,
                          seed: int = RNG_SEED) -> Comparison:
    """``new`` against ``old``, two independent samples (two bench runs): the ratio of
    medians (the difference when the old median is 0) with a two-sample bootstrap
    interval, and a Mann-Whitney U p-value.  ``better``: "lower" or "higher"."""
    a, b = finite(old), finite(new)
    n = min(len(a), len(b))
    if n == 0:
        return Comparison("ratio", None, None, None, None, 0, UNMEASURED, None, "not measured on both sides")
    ma, mb = float(np.median(a)), float(np.median(b))
    kind = "ratio" if ma > 0 and mb >= 0 else "difference"

    def stat(x: np.ndarray, y: np.ndarray, axis: int = -1) -> Any:
        mx, my = np.median(x, axis=axis), np.median(y, axis=axis)
        if kind == "difference":
            return my - mx
        with np.errstate(divide="ignore", invalid="ignore"):
            return my / mx

    est = mb / ma if kind == "ratio" else mb - ma
    low: float | None = None
    high: float | None = None
    p: float | None = None
    if len(a) >= 2 and len(b) >= 2:
        if np.all(a == a[0]) and np.all(b == b[0]):
            low = high = est
        else:
            low, high = _bootstrap((a, b), stat, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = float(scipy.stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
        p = p if math.isfinite(p) else 1.0
    return _judge(kind, est, low, high, p, n, better, MIN_PER_SIDE, "the Mann-Whitney test")
