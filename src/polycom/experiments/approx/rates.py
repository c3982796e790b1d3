"""Log-log slopes of error vs size, their CIs over seeds, and the slopes the theory predicts.

Per seed, ``scipy.stats.linregress`` fits log(test RMSE) = c + slope * log(params) over
the sizes of the sweep; the seeds' slopes then give a mean and a 95% Student-t
interval (``scipy.stats.ttest_1samp(...).confidence_interval``), so the interval
covers the seed-to-seed variation of the whole fit (initialisation and training
inputs), not the residuals of one regression. A seed with a diverged fit at some
size is fitted on its remaining sizes (at least 2), and the table says how many.

Predicted slopes (Zhuo et al. 2025, Section 2; Yarotsky 2017): networks of size P
reach error ~ P^(-n/d) on the unit ball of W^{n,inf}([0,1]^d), so the predicted slope
is -n/d; for analytic targets (n = inf) it is steeper than every power (reported as
-inf). For ReLU networks the rate needs depth growing like log(1/eps); at the fixed
depth swept here a ReLU net is piecewise linear, and a piecewise-linear function on P
well-shaped cells approximates a non-linear C^2 target no better than P^(-2/d), so the
ReLU reference is -min(n, 2)/d: a reference line for fixed depth, not a theorem about
every ReLU network.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

__all__ = ["SlopeFit", "seed_slope", "fit_slopes", "predicted_slope", "PIECEWISE_LINEAR_ORDER"]

PIECEWISE_LINEAR_ORDER = 2  # a piecewise-linear interpolant's error is O(h^2) for a C^2 target
PIECEWISE_LINEAR = ("relu",)  # activations whose fixed-depth networks are piecewise linear


@dataclass(frozen=True)
class SlopeFit:
    seeds: int  # seeds with a slope (>= 2 finite sizes)
    slopes: list  # one per seed, in seed order
    mean: float
    ci_low: float  # 95% t-interval over seeds; nan with one seed
    ci_high: float
    predicted: float

    def to_dict(self) -> dict:
        return asdict(self)


def seed_slope(params, errors) -> float:
    """Slope of log(error) vs log(params) for one seed; nan with fewer than 2 finite points."""
    p, e = np.asarray(params, float), np.asarray(errors, float)
    keep = np.isfinite(e) & (e > 0)
    if keep.sum() < 2:
        return math.nan
    return float(stats.linregress(np.log(p[keep]), np.log(e[keep])).slope)


def predicted_slope(activation: str, smoothness: float, d: int) -> float:
    n = min(smoothness, PIECEWISE_LINEAR_ORDER) if activation in PIECEWISE_LINEAR else smoothness
    return -n / d


def fit_slopes(per_seed: dict, predicted: float) -> SlopeFit:
    """``per_seed``: seed -> (params list, error list) for one (target, d, activation)."""
    slopes = [seed_slope(*per_seed[s]) for s in sorted(per_seed)]
    finite = np.array([s for s in slopes if math.isfinite(s)])
    if finite.size == 0:
        return SlopeFit(0, slopes, math.nan, math.nan, math.nan, predicted)
    if finite.size == 1:
        return SlopeFit(1, slopes, float(finite[0]), math.nan, math.nan, predicted)
    ci = stats.ttest_1samp(finite, 0.0).confidence_interval(0.95)
    return SlopeFit(int(finite.size), slopes, float(finite.mean()), float(ci.low), float(ci.high), predicted)
