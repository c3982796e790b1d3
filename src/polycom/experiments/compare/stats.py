"""The statistics of an activation comparison, on top of ``scipy.stats``.

A sweep gives, per activation, one final validation loss per seed; seed k of every
activation shares data order and every initial tensor that does not depend on the
activation (``Transformer.reset_parameters``), so activation - baseline is measured
*pairwise per seed*. With the 3-5 seeds a sweep can afford, everything below is
exact small-sample theory (Student t), never a normal approximation:

- ``describe``: mean, sample std and the 95% t-interval of one activation's losses.
- ``paired_comparison``: the per-seed differences d_k = act_k - base_k: their mean,
  95% t-interval, the two-sided paired t-test, the exact sign-flip permutation
  p-value (2^n relabellings; it cannot go below 2 / 2^n, so with 3 seeds it is never
  significant and is reported as a robustness check only), the probability of
  improvement (share of seeds in which the activation has the lower loss), and the
  paired vs unpaired standard errors (how much the pairing removed).
- ``holm``: Holm's step-down adjustment for comparing several activations with one
  baseline (controls the family-wise error rate, no independence needed).
- ``minimum_detectable_difference`` / ``seeds_needed``: power of the paired t-test
  from the noncentral t distribution, with the measured spread of the differences.
- ``verdict``: "better" / "worse" only when the Holm-adjusted p-value is below alpha;
  otherwise "no significant difference at this budget".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize, stats

__all__ = ["Description", "PairedComparison", "describe", "paired_comparison", "holm",
           "minimum_detectable_difference", "seeds_needed", "verdict"]

ALPHA = 0.05
POWER = 0.8


@dataclass(frozen=True)
class Description:
    n: int
    mean: float
    std: float  # sample std (ddof 1); nan with one value
    ci_low: float  # 95% t-interval of the mean; nan with one value
    ci_high: float

    def to_dict(self) -> dict:
        return asdict(self)


def describe(values, confidence: float = 0.95) -> Description:
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("describe: no values")
    if x.size == 1:
        return Description(1, float(x[0]), math.nan, math.nan, math.nan)
    ci = stats.ttest_1samp(x, 0.0).confidence_interval(confidence)
    return Description(int(x.size), float(x.mean()), float(x.std(ddof=1)), float(ci.low), float(ci.high))


@dataclass(frozen=True)
class PairedComparison:
    n: int
    mean_diff: float  # mean of act - baseline (negative: the activation has the lower loss)
    std_diff: float
    ci_low: float
    ci_high: float
    p_value: float  # two-sided paired t-test
    p_permutation: float  # exact two-sided sign-flip test
    prob_improvement: float  # share of seeds with act < baseline
    se_paired: float  # std(d) / sqrt(n)
    se_unpaired: float  # sqrt(var(a)/n + var(b)/n): what independent seeds would give
    p_holm: float = math.nan  # filled in by ``holm`` across the family of comparisons

    def to_dict(self) -> dict:
        return asdict(self)


def paired_comparison(act, baseline, confidence: float = 0.95) -> PairedComparison:
    """``act[k]`` and ``baseline[k]`` come from the same seed k."""
    a, b = np.asarray(act, dtype=float), np.asarray(baseline, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_comparison: need two equal-length 1-D samples, got {a.shape} and {b.shape}")
    d, n = a - b, a.size
    wins = float(np.mean(d < 0)) if n else math.nan
    if n < 2:
        return PairedComparison(n, float(d[0]) if n else math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, wins,
                                math.nan, math.nan)
    if np.all(d == d[0]):
        # No spread: the t statistic is undefined (scipy returns nan); the interval is the point.
        ci_low = ci_high = float(d[0])
        p = 1.0 if d[0] == 0 else 0.0
    else:
        res = stats.ttest_rel(a, b)
        ci = res.confidence_interval(confidence)
        ci_low, ci_high, p = float(ci.low), float(ci.high), float(res.pvalue)
    perm = stats.permutation_test((d,), np.mean, permutation_type="samples", alternative="two-sided",
                                  n_resamples=math.inf)
    return PairedComparison(
        n=n, mean_diff=float(d.mean()), std_diff=float(d.std(ddof=1)), ci_low=ci_low, ci_high=ci_high,
        p_value=p, p_permutation=float(perm.pvalue), prob_improvement=wins,
        se_paired=float(d.std(ddof=1) / math.sqrt(n)),
        se_unpaired=float(math.sqrt(a.var(ddof=1) / n + b.var(ddof=1) / n)),
    )


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm (1979) step-down adjusted p-values: sort ascending, p_(i) * (m - i + 1),
    made monotone by a running maximum and capped at 1. NaN p-values are left out
    of the family and stay NaN."""
    valid = sorted((p, k) for k, p in p_values.items() if not math.isnan(p))
    m, running, out = len(valid), 0.0, {k: math.nan for k in p_values}
    for i, (p, k) in enumerate(valid):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    return out


def _power(delta: float, sd: float, n: int, alpha: float) -> float:
    """Power of the two-sided one-sample (paired) t-test at true mean difference ``delta``."""
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)
    nc = abs(delta) / sd * math.sqrt(n)
    power = float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))
    if math.isnan(power):  # scipy's noncentral t fails at large df, where it is normal anyway
        power = float(stats.norm.sf(crit - nc) + stats.norm.cdf(-crit - nc))
    return power


def minimum_detectable_difference(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest |mean difference| the paired t-test with ``n`` seeds detects with
    probability ``power``, if the differences have standard deviation ``sd``."""
    if n < 2 or not sd > 0 or not math.isfinite(sd):
        return math.nan
    hi = sd
    while _power(hi, sd, n, alpha) < power:
        hi *= 2
    return float(optimize.brentq(lambda delta: _power(delta, sd, n, alpha) - power, 0.0, hi, xtol=1e-12 * hi))


def seeds_needed(delta: float, sd: float, alpha: float = ALPHA, power: float = POWER, max_seeds: int = 10_000) -> int:
    """Seeds the paired t-test needs to detect a true difference ``delta`` with probability ``power``."""
    if delta == 0 or not sd > 0 or not math.isfinite(sd):
        return 0 if sd == 0 and delta != 0 else -1  # -1: not computable
    for n in range(2, max_seeds + 1):
        if _power(delta, sd, n, alpha) >= power:
            return n
    return max_seeds


def verdict(cmp: PairedComparison, alpha: float = ALPHA) -> str:
    """'better' / 'worse' (Holm-adjusted p below alpha) or 'no significant difference at
    this budget'; 'not testable' below 2 seeds. Lower loss is better."""
    p = cmp.p_holm if not math.isnan(cmp.p_holm) else cmp.p_value
    if cmp.n < 2 or math.isnan(p):
        return "not testable (fewer than 2 seeds)"
    if p < alpha:
        return "better" if cmp.mean_diff < 0 else "worse"
    return "no significant difference at this budget"
