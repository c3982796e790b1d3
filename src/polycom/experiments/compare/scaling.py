"""Scaling mode: loss versus training compute per activation, the effective compute
multiplier of an activation over the baseline, and its wall-clock equivalent.

Each activation is trained at several model sizes with tokens scaled with parameters,
giving points (C, L): C = training FLOPs of the run (``flops_per_token * tokens``,
PaLM-style accounting), L = its final validation loss; seed k of every activation shares
data order and initialisation, so seeds pair across activations.

The law. With 4 or more sizes every activation i is fitted jointly with the others as

    L_i(C) = E + A_i C^(-b_i)           (Kaplan et al. 2020; Hoffmann et al. 2022, eq. 2)

with the irreducible loss E shared: the data and tokenizer set E, not the activation, and
a free E per activation would let a multiplier come from different asymptotes rather than
from a faster approach. Fit: nonlinear least squares on the loss residuals
(``scipy.optimize.least_squares``, bounds 0 <= E < min observed loss, b_i >= 0), in the
parameters (E, log A_i, b_i) with compute divided by the geometric mean of all measured
compute: C itself is ~1e15 and A C^-b would span tens of orders of magnitude in b,
while C / C_ref is of order 1. The start is E0 = f * min L for a few f, each activation's
log A_i, b_i from the straight line through log(L - E0) against log C; the best of the
starts is kept. With 3 sizes E + A C^-b (3 parameters) fits every activation exactly, so
the two-parameter law L = a C^(-b) (a straight line in log-log) is used instead, as a local
description of the measured range; the comparison records which law it used. The
two-parameter law is also fitted alongside for comparison.

Lack of fit (the classical lack-of-fit F test, e.g. Draper & Smith, Applied Regression
Analysis, section 2.1): at each size j the mean residual r_j over its n_j seeds is set
against the seed noise, s_pooled^2 = the within-size variance pooled over sizes,
se_j = s_pooled / sqrt(n_j):

    chi2 = sum_j (r_j / se_j)^2,   dof = n_sizes - parameters per activation,
    p    = P(F(dof, nu) > chi2 / dof),   nu = sum_j (n_j - 1)

The F rather than the chi-square tail because s_pooled is itself estimated from few seeds
(nu = 10 with 3 seeds at 5 sizes); the chi-square tail would call a good law poor too often.

The effective compute multiplier at compute c (the baseline's):

    m(c) = C_act / c,   where L_act(C_act) = L_base(c)

the share of the baseline's compute the activation needs to match the baseline's fitted
loss at c; below 1 the activation is more compute-efficient. It is read at the largest
measured compute C_max and, as extrapolation beyond the measured sizes, at 10x and 100x
C_max. 95% intervals: percentile bootstrap over seeds, resampling seed indices jointly for
every activation in the fit (pairing holds across all of them). With S seeds only
C(2S-1, S) distinct resamples exist (10 for 3 seeds): the interval is coarse, only the
percentile method makes sense for it, and every statement carries the seed count. A
resample depends only on which seeds it holds, so each distinct one is fitted once.

Wall clock. The time to reach the baseline's loss at C_max, as a share of the baseline's
time, is m / s with s = the activation's tokens/s over the baseline's, measured side by
side in the same rounds (``throughput``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats
from scipy.optimize import least_squares

__all__ = ["PowerLaw", "fit_power_law", "SaturatingLaw", "fit_shared_asymptote", "LackOfFit", "lack_of_fit",
           "count_sizes", "compute_multiplier_at", "Multiplier", "ScalingComparison", "scaling_comparison",
           "WallClockSpeedup", "wall_clock_speedup"]

MIN_SIZES_SATURATING = 4
SHARED_LAW = "E + A C^-b, E shared"
POWER_LAW = "a C^-b"
MAX_FAILED_SHARE = 0.1  # above this the surviving replicates are a biased sample: no interval


def _exp(log_compute: float) -> float:
    """exp, with inf past float range: a law with a tiny exponent reaches a loss only at an
    astronomically large compute, and a bootstrap replicate may ask for one (inf then counts as
    a replicate without a finite multiplier)."""
    return math.exp(log_compute) if log_compute < 709.0 else math.inf


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
        return _exp(math.log(self.a / loss) / self.b)


@dataclass(frozen=True)
class SaturatingLaw:
    E: float  # irreducible loss
    A: float
    b: float  # L = E + A * C^(-b)

    def loss(self, compute) -> np.ndarray:
        return self.E + self.A * np.asarray(compute, dtype=float) ** (-self.b)

    def compute_for(self, loss: float) -> float:
        """The compute at which the fitted law reaches ``loss``; nan at or below E (never reached)."""
        if self.b <= 0 or self.A <= 0 or not loss > self.E:
            return math.nan
        return _exp(-math.log((loss - self.E) / self.A) / self.b)


def _finite_rows(points) -> np.ndarray:
    """(compute, loss) rows of any (..., 2) array without the failed runs' NaN rows."""
    rows = np.asarray(points, dtype=float).reshape(-1, 2)
    rows = rows[np.isfinite(rows).all(axis=1)]
    if np.any(rows <= 0):
        raise ValueError("scaling: compute and loss must be positive")
    return rows


def count_sizes(compute) -> int:
    """Distinct compute values; seeds of one size agree to far better than 0.1%."""
    log_c = np.sort(np.log(np.asarray(compute, dtype=float)))
    return int(log_c.size and 1 + np.sum(np.diff(log_c) > 1e-3))


def fit_power_law(compute, loss) -> PowerLaw:
    c, y = np.asarray(compute, dtype=float), np.asarray(loss, dtype=float)
    if c.shape != y.shape or c.size < 2 or np.unique(c).size < 2:
        raise ValueError("fit_power_law: need points at two or more distinct compute values")
    if np.any(c <= 0) or np.any(y <= 0):
        raise ValueError("fit_power_law: compute and loss must be positive")
    slope, intercept = np.polyfit(np.log(c), np.log(y), 1)
    return PowerLaw(a=float(math.exp(intercept)), b=float(-slope))


def fit_shared_asymptote(points: dict) -> dict:
    """Joint least-squares fit of L_i = E + A_i C^-b_i with one E (module docstring).
    ``points``: name -> (compute, loss) array of any shape (..., 2); NaN rows are dropped.
    Returns name -> SaturatingLaw. Raises ValueError below 4 distinct compute values."""
    rows = {name: _finite_rows(p) for name, p in points.items()}
    for name, r in rows.items():
        if count_sizes(r[:, 0]) < MIN_SIZES_SATURATING:
            raise ValueError(f"fit_shared_asymptote: {name}: {count_sizes(r[:, 0])} distinct compute values; "
                             f"E + A C^-b needs {MIN_SIZES_SATURATING} or more")
    names = list(rows)
    c_ref = math.exp(np.mean(np.log(np.concatenate([r[:, 0] for r in rows.values()]))))
    log_x = [np.log(rows[n][:, 0] / c_ref) for n in names]
    y = [rows[n][:, 1] for n in names]
    min_loss = min(float(v.min()) for v in y)

    def residuals(theta):
        return np.concatenate([theta[0] + np.exp(theta[1 + 2 * i] - theta[2 + 2 * i] * lx) - yi
                               for i, (lx, yi) in enumerate(zip(log_x, y))])

    def jacobian(theta):
        jac = np.zeros((sum(v.size for v in y), theta.size))
        jac[:, 0] = 1.0
        start = 0
        for i, lx in enumerate(log_x):
            power = np.exp(theta[1 + 2 * i] - theta[2 + 2 * i] * lx)  # A_i x^-b_i
            jac[start:start + lx.size, 1 + 2 * i] = power
            jac[start:start + lx.size, 2 + 2 * i] = -power * lx
            start += lx.size
        return jac

    lower = np.r_[0.0, np.tile([-np.inf, 0.0], len(names))]
    upper = np.r_[min_loss * (1 - 1e-9), np.tile([np.inf, np.inf], len(names))]
    best = None
    for fraction in (0.0, 0.5, 0.9):  # E0: none, half, most of the lowest loss
        e0 = fraction * min_loss
        theta0 = [e0]
        for lx, yi in zip(log_x, y):
            slope, intercept = np.polyfit(lx, np.log(yi - e0), 1)
            theta0 += [intercept, max(-slope, 1e-3)]
        fit = least_squares(residuals, np.array(theta0), jac=jacobian, bounds=(lower, upper), x_scale="jac",
                            ftol=1e-14, xtol=1e-14, gtol=1e-14, max_nfev=2000)
        if np.all(np.isfinite(fit.x)) and (best is None or fit.cost < best.cost):
            best = fit
    if best is None:
        raise ValueError("fit_shared_asymptote: no start converged to finite parameters")
    e = float(best.x[0])
    return {n: SaturatingLaw(E=e, A=float(math.exp(best.x[1 + 2 * i]) * c_ref ** best.x[2 + 2 * i]),
                             b=float(best.x[2 + 2 * i])) for i, n in enumerate(names)}


@dataclass(frozen=True)
class LackOfFit:
    compute: list  # per size: mean compute over its seeds
    mean_residual: list  # per size: mean observed loss minus fitted
    se: list  # per size: pooled seed standard deviation / sqrt(seeds at that size)
    n_seeds: list  # per size
    chi2: float
    dof: int
    noise_dof: int  # degrees of freedom of the pooled seed noise
    p_value: float

    def describe(self) -> str:
        seeds = (f"{self.n_seeds[0]} seeds per size" if len(set(self.n_seeds)) == 1
                 else f"{min(self.n_seeds)}-{max(self.n_seeds)} seeds per size")
        if self.noise_dof < 1:
            return f"the lack of fit cannot be checked: one seed per size gives no estimate of the seed noise ({seeds})"
        if not (self.se and self.se[0] > 0):
            return f"the lack of fit cannot be checked: the seeds agree exactly, there is no seed noise ({seeds})"
        if self.dof < 1:
            return f"the lack of fit cannot be checked: the law has as many parameters as there are sizes ({seeds})"
        numbers = f"chi2 = {self.chi2:.3g}, {self.dof} dof, p = {self.p_value:.2g}; {seeds}"
        if self.p_value >= 0.05:
            return f"the law fits within the seed noise ({numbers})"
        return f"the residuals exceed the seed noise ({numbers}): the law is a poor description of these sizes"

    def to_dict(self) -> dict:
        return asdict(self)


def lack_of_fit(points, law: PowerLaw | SaturatingLaw) -> LackOfFit:
    """``points``: (n_seeds, n_sizes, 2) of (compute, loss); NaN rows (failed runs) are skipped."""
    points = np.asarray(points, dtype=float)
    # Parameters per activation: E counted in full although it is shared, the fewest dof, so
    # the check errs toward reporting a lack of fit rather than hiding one.
    n_params = 3 if isinstance(law, SaturatingLaw) else 2
    compute, residual, n, sum_sq = [], [], [], 0.0
    for j in range(points.shape[1]):
        rows = _finite_rows(points[:, j])
        if rows.shape[0] == 0:
            continue
        r = rows[:, 1] - law.loss(rows[:, 0])
        compute.append(float(rows[:, 0].mean()))
        residual.append(float(r.mean()))
        n.append(int(rows.shape[0]))
        sum_sq += float(np.sum((r - r.mean()) ** 2))  # within-size scatter (the fit shifts all seeds alike)
    noise_dof = sum(k - 1 for k in n)
    dof = len(n) - n_params
    sd = math.sqrt(sum_sq / noise_dof) if noise_dof > 0 else math.nan
    se = [sd / math.sqrt(k) for k in n]
    chi2 = float(sum((r / s) ** 2 for r, s in zip(residual, se))) if sd > 0 else math.nan  # not for nan sd
    p = float(stats.f.sf(chi2 / dof, dof, noise_dof)) if sd > 0 and dof > 0 else math.nan
    return LackOfFit(compute, residual, se, n, chi2, dof, noise_dof, p)


def compute_multiplier_at(act_law, base_law, c: float) -> float:
    """C_act / c where the activation's law reaches the baseline's loss at c (either law kind)."""
    return act_law.compute_for(float(base_law.loss(c))) / c


@dataclass(frozen=True)
class Multiplier:
    compute: float  # the baseline compute it is read at
    factor: float  # compute / C_max: 1 is the largest measured size
    extrapolated: bool  # read beyond the measured sizes
    value: float
    ci_low: float
    ci_high: float
    failed_share: float  # bootstrap replicates whose fit failed or gave no finite multiplier
    note: str  # why there is no interval, when there is none


def _percentile_interval(replicates: np.ndarray, confidence: float) -> tuple[float, float, float, str]:
    failed = float(np.mean(~np.isfinite(replicates))) if replicates.size else math.nan
    if replicates.size == 0:
        return math.nan, math.nan, failed, "one seed: no interval over seeds"
    if failed > MAX_FAILED_SHARE:
        return math.nan, math.nan, failed, (f"{failed:.0%} of bootstrap replicates failed (fit or no finite "
                                            f"multiplier): no interval")
    tail = 50 * (1 - confidence)
    low, high = np.nanpercentile(replicates, [tail, 100 - tail])
    return float(low), float(high), failed, ""


@dataclass(frozen=True)
class ScalingComparison:
    law: str  # SHARED_LAW or POWER_LAW
    law_note: str  # why the two-parameter law, when it is used
    act_law: PowerLaw | SaturatingLaw
    base_law: PowerLaw | SaturatingLaw
    act_power_law: PowerLaw  # the two-parameter law, for comparison
    base_power_law: PowerLaw
    power_law_multiplier: float  # at C_max, from the two-parameter laws
    c_max: float
    at_c_max: Multiplier
    extrapolated: list  # Multiplier at each factor x C_max, extrapolation
    act_fit_check: LackOfFit
    base_fit_check: LackOfFit
    n_seeds: int
    confidence: float
    replicates: list  # the C_max multiplier per bootstrap replicate, nan where it failed (for wall_clock_speedup)

    def describe(self) -> str:
        def one(m: Multiplier) -> str:
            ci = f"[{m.ci_low:.3g}, {m.ci_high:.3g}]" if math.isfinite(m.ci_low) else f"(no interval: {m.note})"
            return f"{m.value:.3g} {ci}"
        extra = "; ".join(f"at {m.factor:g}x C_max {one(m)}" for m in self.extrapolated)
        return (f"compute multiplier at the largest size {one(self.at_c_max)} ({self.law}; "
                f"{self.confidence:.0%} interval over {self.n_seeds} paired seeds)"
                + (f"; extrapolated beyond the measured sizes: {extra}" if extra else "")
                + (f" ({self.law_note})" if self.law_note else ""))

    def to_dict(self) -> dict:
        return asdict(self)


def _bootstrap_multipliers(multipliers, n_seeds: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, k) replicates of ``multipliers(seed_idx)`` over resampled seed indices.
    A fit that fails gives a row of nan; a distinct multiset of seeds is fitted once."""
    draws = np.sort(np.random.default_rng(seed).integers(0, n_seeds, size=(n_resamples, n_seeds)), axis=1)
    cache: dict[tuple, np.ndarray] = {}
    out = []
    for idx in map(tuple, draws):
        if idx not in cache:
            try:
                cache[idx] = np.asarray(multipliers(np.array(idx)), dtype=float)
            except (ValueError, np.linalg.LinAlgError, FloatingPointError):
                cache[idx] = None
        out.append(cache[idx])
    width = len(next((r for r in out if r is not None), [math.nan]))
    return np.array([r if r is not None else np.full(width, math.nan) for r in out])


def scaling_comparison(act_points, base_points, other_points: dict | None = None,
                       extrapolate: tuple = (10, 100), confidence: float = 0.95, n_resamples: int = 2000,
                       seed: int = 0) -> ScalingComparison:
    """``act_points``, ``base_points``, each of ``other_points`` (name -> array; the other
    activations, which share E in the joint fit): arrays of shape (n_seeds, n_sizes, 2) of
    (compute, loss); seed k of every array is one pairing; NaN rows are failed runs.
    With 4 or more sizes for activation and baseline the law is E + A C^-b with E shared
    (other activations with fewer sizes are left out of the joint fit), else a C^-b.
    The interval is the percentile bootstrap only (few distinct resamples: module docstring).
    Runtime, measured for 4 activations x 5 sizes, one call per non-baseline activation,
    default n_resamples, on a 2-core AMD EPYC: 1.6 s in all with 3 seeds (10 distinct
    resamples, each fitted once), 13 s with 5 seeds (126)."""
    act, base = np.asarray(act_points, dtype=float), np.asarray(base_points, dtype=float)
    if act.shape != base.shape or act.ndim != 3 or act.shape[2] != 2:
        raise ValueError(f"scaling_comparison: need (seeds, sizes, 2) arrays of one shape, "
                         f"got {act.shape} and {base.shape}")
    sizes = min(count_sizes(_finite_rows(p)[:, 0]) for p in (act, base))
    shared = sizes >= MIN_SIZES_SATURATING
    others = {name: np.asarray(p, dtype=float) for name, p in (other_points or {}).items()
              if shared and count_sizes(_finite_rows(p)[:, 0]) >= MIN_SIZES_SATURATING}
    if any(p.shape[0] != act.shape[0] for p in others.values()):
        raise ValueError("scaling_comparison: every activation needs the same seeds (pairing)")
    law_note = "" if shared else (f"{sizes} sizes: E + A C^-b needs {MIN_SIZES_SATURATING}; the two-parameter law "
                                  f"describes the measured range only")

    def fit(idx):
        pick = slice(None) if idx is None else idx
        if shared:
            laws = fit_shared_asymptote({"(activation)": act[pick], "(baseline)": base[pick],
                                         **{n: p[pick] for n, p in others.items()}})
            return laws["(activation)"], laws["(baseline)"]
        return fit_power_law(*_finite_rows(act[pick]).T), fit_power_law(*_finite_rows(base[pick]).T)

    c_max = float(_finite_rows(base)[:, 0].max())
    factors = (1.0, *map(float, extrapolate))
    act_law, base_law = fit(None)
    values = [compute_multiplier_at(act_law, base_law, f * c_max) for f in factors]
    n_seeds = int(np.sum(np.isfinite(act).all(axis=2).any(axis=1) & np.isfinite(base).all(axis=2).any(axis=1)))

    def resampled_multipliers(idx):
        laws = fit(idx)
        return [compute_multiplier_at(*laws, f * c_max) for f in factors]

    replicates = (_bootstrap_multipliers(resampled_multipliers, act.shape[0], n_resamples, seed)
                  if n_seeds >= 2 else np.empty((0, len(factors))))
    multipliers = [Multiplier(f * c_max, f, f > 1, v, *_percentile_interval(replicates[:, i], confidence))
                   for i, (f, v) in enumerate(zip(factors, values))]
    act_power, base_power = fit_power_law(*_finite_rows(act).T), fit_power_law(*_finite_rows(base).T)
    return ScalingComparison(
        law=SHARED_LAW if shared else POWER_LAW, law_note=law_note, act_law=act_law, base_law=base_law,
        act_power_law=act_power, base_power_law=base_power,
        power_law_multiplier=compute_multiplier_at(act_power, base_power, c_max), c_max=c_max,
        at_c_max=multipliers[0], extrapolated=multipliers[1:],
        act_fit_check=lack_of_fit(act, act_law), base_fit_check=lack_of_fit(base, base_law),
        n_seeds=n_seeds, confidence=confidence, replicates=replicates[:, 0].tolist())


@dataclass(frozen=True)
class WallClockSpeedup:
    value: float  # time to the baseline's loss at C_max, as a share of the baseline's time
    ci_low: float
    ci_high: float
    speed: float  # median per-round tokens/s of the activation over the baseline's
    speed_q25: float
    speed_q75: float
    n_rounds: int
    note: str  # why there is no interval, when there is none

    def to_dict(self) -> dict:
        return asdict(self)


def wall_clock_speedup(multiplier_replicates, multiplier_value: float, act_round_ratios, base_round_ratios,
                       confidence: float = 0.95, n_resamples: int = 4000, seed: int = 0) -> WallClockSpeedup:
    """Time to the baseline's loss as a share of the baseline's time: m / s, s = the median
    over rounds of (act tokens/s) / (baseline tokens/s). ``*_round_ratios``: the per-round
    ratios to the throughput reference (``Throughput.round_ratios``); both were timed in the
    same rounds, so round k of one pairs with round k of the other and the reference cancels.
    Interval: percentile over m* / s*, m* drawn from the multiplier's bootstrap replicates
    (nan ones skipped), s* the median of a resample of the rounds, drawn independently of
    m*: the training runs and the timing process share no noise."""
    act_r, base_r = np.asarray(act_round_ratios, dtype=float), np.asarray(base_round_ratios, dtype=float)
    if act_r.shape != base_r.shape or act_r.ndim != 1 or act_r.size == 0:
        raise ValueError(f"wall_clock_speedup: need per-round ratios of one length, got {act_r.shape} and {base_r.shape}")
    speeds = act_r / base_r
    q25, q50, q75 = np.percentile(speeds, [25, 50, 75])
    value = multiplier_value / q50
    reps = np.asarray(multiplier_replicates, dtype=float)
    reps = reps[np.isfinite(reps)]
    low = high = math.nan
    note = ("one timing round: no speed noise estimate" if speeds.size < 2 else
            "no finite multiplier replicates" if reps.size == 0 else "")
    if not note:
        rng = np.random.default_rng(seed)
        m = rng.choice(reps, size=n_resamples)
        s = np.median(rng.choice(speeds, size=(n_resamples, speeds.size)), axis=1)
        tail = 50 * (1 - confidence)
        low, high = map(float, np.percentile(m / s, [tail, 100 - tail]))
    return WallClockSpeedup(float(value), low, high, float(q50), float(q25), float(q75), int(speeds.size), note)
