"""Scaling mode: loss versus training compute per activation, and the effective
compute multiplier of an activation over the baseline.

Each activation is trained at several model sizes with tokens scaled with
parameters, giving points (C, L): C = training FLOPs of the run
(``flops_per_token * tokens``, PaLM-style accounting), L = its final validation loss.
Per activation we fit the power law

    L(C) = a * C^(-b)          (a straight line in log-log: log L = log a - b log C)

by least squares over every (size, seed) point. A law with an irreducible term
E + A C^(-b) needs more sizes than a CPU sweep affords (3 sizes fit it exactly), so
the two-parameter law is used as a local description of the measured range; the
report says so. The effective compute multiplier at the largest size C_max:

    m = C_act / C_max,  where L_act(C_act) = L_base(C_max)

i.e. the share of the baseline's compute the activation needs to match the
baseline's (fitted) loss at the largest size; below 1 the activation is more
compute-efficient. Its 95% interval is a percentile bootstrap over seeds
(``scipy.stats.bootstrap``), resampling seed indices jointly for the activation and the
baseline so the pairing is kept. With 3 seeds only 10 distinct resamples exist: the
interval is coarse, and the report states the seed count.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

__all__ = ["PowerLaw", "fit_power_law", "compute_multiplier", "ComputeMultiplier", "compute_multiplier_ci"]


@dataclass(frozen=True)
class PowerLaw:
    a: float
    b: float  # L = a * C^(-b)

    def loss(self, compute) -> np.ndarray:
        return self.a * np.asarray(compute, dtype=float) ** (-self.b)

    def compute_for(self, loss: float) -> float:
        """The compute at which the fitted law reaches ``loss``."""
        if self.b <= 0:
            return math.nan  # loss does not fall with compute: no finite answer
        return float((self.a / loss) ** (1.0 / self.b))


def fit_power_law(compute, loss) -> PowerLaw:
    c, y = np.asarray(compute, dtype=float), np.asarray(loss, dtype=float)
    if c.shape != y.shape or c.size < 2 or np.unique(c).size < 2:
        raise ValueError("fit_power_law: need points at two or more distinct compute values")
    if np.any(c <= 0) or np.any(y <= 0):
        raise ValueError("fit_power_law: compute and loss must be positive")
    slope, intercept = np.polyfit(np.log(c), np.log(y), 1)
    return PowerLaw(a=float(math.exp(intercept)), b=float(-slope))


def compute_multiplier(act: PowerLaw, base: PowerLaw, c_max: float) -> float:
    return act.compute_for(float(base.loss(c_max))) / c_max


@dataclass(frozen=True)
class ComputeMultiplier:
    value: float
    ci_low: float
    ci_high: float
    act_fit: PowerLaw
    base_fit: PowerLaw
    c_max: float
    n_seeds: int

    def to_dict(self) -> dict:
        return asdict(self)


def compute_multiplier_ci(act_points: np.ndarray, base_points: np.ndarray, confidence: float = 0.95,
                          n_resamples: int = 2000, seed: int = 0) -> ComputeMultiplier:
    """``*_points``: arrays of shape (n_seeds, n_sizes, 2) holding (compute, loss) per seed
    and size; seed k of both arrays is one pair. The point estimate uses every point."""
    act_points, base_points = np.asarray(act_points, dtype=float), np.asarray(base_points, dtype=float)
    if act_points.shape != base_points.shape or act_points.ndim != 3 or act_points.shape[2] != 2:
        raise ValueError(f"compute_multiplier_ci: need two (seeds, sizes, 2) arrays of one shape, "
                         f"got {act_points.shape} and {base_points.shape}")
    n_seeds = act_points.shape[0]
    c_max = float(base_points[..., 0].max())

    def multiplier(seed_idx) -> float:
        idx = np.asarray(seed_idx, dtype=int)
        a = act_points[idx].reshape(-1, 2)  # (seeds * sizes, 2)
        b = base_points[idx].reshape(-1, 2)
        return compute_multiplier(fit_power_law(a[:, 0], a[:, 1]), fit_power_law(b[:, 0], b[:, 1]), c_max)

    act_fit = fit_power_law(*act_points.reshape(-1, 2).T)
    base_fit = fit_power_law(*base_points.reshape(-1, 2).T)
    value = compute_multiplier(act_fit, base_fit, c_max)
    low = high = math.nan
    if n_seeds >= 2:
        res = stats.bootstrap((np.arange(n_seeds),), multiplier, vectorized=False, method="percentile",
                              confidence_level=confidence, n_resamples=n_resamples,
                              random_state=np.random.default_rng(seed))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return ComputeMultiplier(value, low, high, act_fit, base_fit, c_max, n_seeds)
