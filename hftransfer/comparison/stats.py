"""The statistics of a comparison, on plain lists of numbers (one number per seed).

Seeds are few (3 to 10), so every interval is for small samples: a Student t interval of a mean,
a paired bootstrap interval of a mean difference, and the exact two-sided Wilcoxon signed-rank
test, whose smallest reachable p with ``n`` non-zero differences is ``2 / 2**n`` (so 5 seeds or
fewer can never show p < 0.05; :func:`smallest_p` says so instead of printing a hopeless test).
Everything here is deterministic: the bootstrap and the permutation fall-back draw from a fixed
seed, so a report rendered twice says the same.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
"""The level of every interval in the report."""
ALPHA = 0.05
"""The significance level of the paired tests."""
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
"""Fixed, so the bootstrap interval of a pair is the same on every render."""
PERMUTATIONS = 2**16
"""Sign flips of the Wilcoxon test with tied differences: exact (all 2**n) up to 16 seeds."""
DECIMALS = 10
"""Differences are rounded to this many decimals before testing, so that 0.81 - 0.79 and
0.83 - 0.81 are the same tie and 0.8 - 0.8 is a zero (floating-point noise is not a difference)."""


@dataclass(frozen=True)
class MeanCI:
    """The mean of ``n`` values with its sample standard deviation and Student t interval
    (``std``, ``low`` and ``high`` are None when ``n`` < 2; every field is None when ``n`` is 0)."""

    n: int
    mean: float | None
    std: float | None
    low: float | None
    high: float | None


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> MeanCI:
    """Mean, standard deviation (ddof=1) and the Student t confidence interval of the mean."""
    from scipy import stats

    data = np.asarray(values, dtype=float)
    n = int(data.size)
    if n == 0:
        return MeanCI(0, None, None, None, None)
    mean = float(data.mean())
    if n == 1:
        return MeanCI(1, mean, None, None, None)
    std = float(data.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return MeanCI(n, mean, std, mean - half, mean + half)


def differences(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    """``a - b`` per pair, rounded to :data:`DECIMALS` (see there)."""
    return np.round(np.asarray(a, dtype=float) - np.asarray(b, dtype=float), DECIMALS)


def bootstrap_ci(diffs: Sequence[float], confidence: float = CONFIDENCE, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> tuple[float, float] | None:
    """The percentile bootstrap interval of the mean of paired differences (pairs resampled with
    replacement); None for fewer than two pairs (one pair has nothing to resample)."""
    data = np.asarray(diffs, dtype=float)
    if data.size < 2:
        return None
    rng = np.random.default_rng(seed)  # a fresh generator per call: the order of pairs is irrelevant
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def _signed_rank_sum(diffs: np.ndarray) -> float:
    from scipy import stats

    nonzero = diffs[diffs != 0]
    return float((np.sign(nonzero) * stats.rankdata(np.abs(nonzero))).sum())


def smallest_p(n_nonzero: int) -> float:
    """The smallest two-sided p an exact Wilcoxon signed-rank test can give with ``n_nonzero``
    non-zero differences: all of one sign, 2 of the 2**n sign patterns."""
    return min(1.0, 2.0 / 2**n_nonzero) if n_nonzero > 0 else 1.0


def wilcoxon_p(diffs: Sequence[float]) -> float | None:
    """The two-sided exact Wilcoxon signed-rank p of paired differences; zeros are dropped (the
    Wilcoxon convention), ties in their sizes are handled by the exact permutation distribution
    of the tied ranks. None when every difference is zero (there is nothing to test)."""
    from scipy import stats

    data = np.asarray(diffs, dtype=float)
    nonzero = data[data != 0]
    if nonzero.size == 0:
        return None
    if np.unique(np.abs(nonzero)).size == nonzero.size:
        result = stats.wilcoxon(nonzero, alternative="two-sided", method="exact")
    else:
        # scipy's "exact" table assumes untied ranks; with ties the sign-flip distribution of the
        # tied ranks is the exact one (all 2**n flips while 2**n <= PERMUTATIONS).
        method = stats.PermutationMethod(n_resamples=PERMUTATIONS, rng=np.random.default_rng(BOOTSTRAP_SEED))
        result = stats.wilcoxon(nonzero, alternative="two-sided", method=method)
    return float(min(1.0, result.pvalue))


@dataclass(frozen=True)
class Paired:
    """A paired comparison of A against B over their shared seeds (differences are A - B)."""

    n: int
    """Shared seeds."""
    n_nonzero: int
    mean: float | None
    boot_low: float | None
    boot_high: float | None
    p: float | None
    """None when the test was not run: too few seeds, or all differences zero."""
    min_p: float
    outcome: str
    """``"a"`` or ``"b"`` (that one is better, p < ALPHA), ``"no clear difference"``,
    ``"too few seeds to tell"``, ``"identical"`` or ``"no shared seeds"``."""


def compare_paired(a: Sequence[float], b: Sequence[float], higher_is_better: bool = True) -> Paired:
    """Mean difference, paired bootstrap interval and exact Wilcoxon p of A against B (paired
    values, one per shared seed), and what they allow one to say."""
    diffs = differences(a, b)
    n = int(diffs.size)
    if n == 0:
        return Paired(0, 0, None, None, None, None, 1.0, "no shared seeds")
    n_nonzero = int(np.count_nonzero(diffs))
    mean = float(diffs.mean())
    boot = bootstrap_ci(diffs)
    min_p = smallest_p(n_nonzero)
    if n_nonzero == 0:
        return Paired(n, 0, mean, *(boot or (None, None)), None, min_p, "identical")
    p = wilcoxon_p(diffs)
    if min_p >= ALPHA:
        outcome = "too few seeds to tell"
    elif p is not None and p < ALPHA:
        # The direction the test saw: the signed ranks' sum (the mean can, rarely, disagree).
        outcome = "a" if (_signed_rank_sum(diffs) > 0) == higher_is_better else "b"
    else:
        outcome = "no clear difference"
    return Paired(n, n_nonzero, mean, *(boot or (None, None)), p, min_p, outcome)
