"""The scaling law fits, lack-of-fit check, compute multipliers and wall-clock speedup of
``compare.scaling``, against closed-form synthetic laws."""

import math

import numpy as np
import pytest
from scipy import stats

from polycom.experiments.compare.scaling import (
    POWER_LAW, SHARED_LAW, SaturatingLaw, compute_multiplier_at, fit_shared_asymptote, lack_of_fit,
    scaling_comparison, wall_clock_speedup)
from polycom.experiments.compare.throughput import Throughput

COMPUTE = np.geomspace(1e15, 3e16, 5)  # 5 sizes over 30x compute
C0 = 1e15  # where A is compared: A C^-b = A0 (C / C0)^-b with A0 = A C0^-b of order 1
E = 1.8
TRUE = {"gelu": (2.0, 0.30), "relu": (2.3, 0.28), "polynorm": (1.8, 0.32)}  # (A0, b)


def law(a0: float, b: float) -> SaturatingLaw:
    return SaturatingLaw(E=E, A=a0 * C0 ** b, b=b)


def points(curve, sigma: float = 0.0, rng=None, seeds: int = 3, compute=COMPUTE) -> np.ndarray:
    """(seeds, sizes, 2) of (compute, loss) with gaussian noise of sd ``sigma`` on the loss."""
    loss = np.broadcast_to(curve(compute), (seeds, compute.size)).copy()
    if sigma:
        loss += sigma * rng.standard_normal(loss.shape)
    return np.stack([np.broadcast_to(compute, loss.shape), loss], axis=2)


def standard_errors(sigma: float, seeds: int) -> np.ndarray:
    """Asymptotic standard errors of (E, log A0_i, b_i for each activation) for least squares
    with noise sd sigma: sqrt(diag(sigma^2 (J^T J)^-1)), J the model's Jacobian at the truth."""
    x = np.tile(COMPUTE / C0, seeds)
    blocks = []
    for i, (a0, b) in enumerate(TRUE.values()):
        jac = np.zeros((x.size, 1 + 2 * len(TRUE)))
        jac[:, 0] = 1.0
        jac[:, 1 + 2 * i] = a0 * x ** -b  # d/d log A0
        jac[:, 2 + 2 * i] = -a0 * x ** -b * np.log(x)  # d/db
        blocks.append(jac)
    jac = np.concatenate(blocks)
    return sigma * np.sqrt(np.diag(np.linalg.inv(jac.T @ jac)))


def test_shared_fit_recovers_a_noise_free_law_exactly():
    fits = fit_shared_asymptote({name: points(law(*p).loss) for name, p in TRUE.items()})
    for name, (a0, b) in TRUE.items():
        assert (fits[name].E, fits[name].A, fits[name].b) == pytest.approx((E, a0 * C0 ** b, b), rel=1e-6)


@pytest.mark.parametrize("rng_seed", range(5))
def test_shared_fit_recovers_a_noisy_law_within_four_standard_errors(rng_seed):
    # 4 asymptotic SEs: for a Gaussian estimate a miss has probability 6e-5 per parameter.
    # The SEs at sigma 0.005 (E: 0.014, log A0: 0.006-0.008, b: 0.003-0.004) are what the data
    # determine; the five RNG seeds here miss by at most 1.2 SE.
    sigma, seeds = 0.005, 3
    rng = np.random.default_rng(rng_seed)
    fits = fit_shared_asymptote({name: points(law(*p).loss, sigma, rng, seeds) for name, p in TRUE.items()})
    se = standard_errors(sigma, seeds)
    assert abs(fits["gelu"].E - E) < 4 * se[0]
    for i, (name, (a0, b)) in enumerate(TRUE.items()):
        fit = fits[name]
        assert fit.E == fits["gelu"].E  # one E for all
        assert abs(math.log(fit.A * C0 ** -fit.b) - math.log(a0)) < 4 * se[1 + 2 * i]
        assert abs(fit.b - b) < 4 * se[2 + 2 * i]


def test_shared_fit_drops_failed_runs_and_needs_four_sizes():
    pts = points(law(*TRUE["gelu"]).loss)
    pts[1, 2] = np.nan  # a failed run
    fit = fit_shared_asymptote({"gelu": pts})["gelu"]
    assert (fit.E, fit.b) == pytest.approx((E, TRUE["gelu"][1]), rel=1e-6)
    with pytest.raises(ValueError, match="3 distinct compute values"):
        fit_shared_asymptote({"gelu": pts[:, :3]})


def test_saturating_law_has_no_compute_for_a_loss_at_or_below_its_asymptote():
    fit = law(*TRUE["gelu"])
    assert fit.compute_for(float(fit.loss(2e15))) == pytest.approx(2e15, rel=1e-9)
    assert math.isnan(fit.compute_for(E)) and math.isnan(fit.compute_for(E - 0.1))
    assert math.isnan(SaturatingLaw(E=1.0, A=1.0, b=0.0).compute_for(2.0))


def test_an_activation_identical_to_the_baseline_has_multiplier_one():
    rng = np.random.default_rng(0)
    base = points(law(*TRUE["gelu"]).loss, 0.005, rng)
    other = {"relu": points(law(*TRUE["relu"]).loss, 0.005, rng)}
    res = scaling_comparison(base.copy(), base, other, n_resamples=500)
    assert res.law == SHARED_LAW
    for m in (res.at_c_max, *res.extrapolated):
        assert m.value == pytest.approx(1.0, rel=1e-9)  # both laws fitted from the same numbers
        assert m.ci_low <= 1.0 + 1e-9 and m.ci_high >= 1.0 - 1e-9


def test_an_activation_needing_0_7x_the_compute_has_multiplier_0_7_everywhere():
    base_law = law(*TRUE["gelu"])
    act_curve = lambda c: base_law.loss(c / 0.7)  # L_act(C) = L_base(C / 0.7)
    res = scaling_comparison(points(act_curve), points(base_law.loss), n_resamples=200)
    assert res.law == SHARED_LAW and res.n_seeds == 3
    assert res.at_c_max.compute == pytest.approx(COMPUTE[-1]) and not res.at_c_max.extrapolated
    assert [m.factor for m in res.extrapolated] == [10.0, 100.0] and all(m.extrapolated for m in res.extrapolated)
    for m in (res.at_c_max, *res.extrapolated):
        assert (m.value, m.ci_low, m.ci_high) == pytest.approx((0.7, 0.7, 0.7), rel=1e-6)
    for c in (1e14, 1e16, 1e19):
        assert compute_multiplier_at(res.act_law, res.base_law, c) == pytest.approx(0.7, rel=1e-6)
    assert "3 paired seeds" in res.describe() and "extrapolated" in res.describe()


def test_three_sizes_fall_back_to_the_two_parameter_law():
    base_law = law(*TRUE["gelu"])
    compute = COMPUTE[:3]
    res = scaling_comparison(points(lambda c: base_law.loss(c / 0.7), compute=compute),
                             points(base_law.loss, compute=compute), n_resamples=50)
    assert res.law == POWER_LAW and "3 sizes" in res.law_note and "3 sizes" in res.describe()
    assert res.act_law == res.act_power_law
    # A saturating curve is not a power law, but on one shared curve shifted by 0.7x compute
    # two fitted power laws cross near 0.7 over the measured range.
    assert res.at_c_max.value == pytest.approx(0.7, rel=0.05)


def test_lack_of_fit_passes_the_law_and_flags_a_curve_it_cannot_follow():
    rng = np.random.default_rng(1)
    pts = points(law(*TRUE["gelu"]).loss, 0.005, rng)
    check = lack_of_fit(pts, fit_shared_asymptote({"gelu": pts})["gelu"])
    assert check.dof == 2 and check.noise_dof == 10 and check.p_value > 0.01
    assert check.describe().startswith("the law fits within the seed noise") and "3 seeds per size" in check.describe()
    # Concave in log C (loss falls faster and faster): E + A C^-b is convex in log C and cannot follow it.
    concave = lambda c: 3.0 - 0.02 * np.log(c / C0) ** 2
    pts = points(concave, 0.002, rng)
    check = lack_of_fit(pts, fit_shared_asymptote({"act": pts})["act"])
    assert check.p_value < 0.01 and "poor description" in check.describe()


def test_lack_of_fit_is_the_classical_f_test_on_known_residuals():
    # Seeds at law + r_j + (-s, 0, s): the pure-error sum of squares is 2 s^2 per size, so
    # s_pooled = s, and the lack-of-fit sum of squares is 3 sum r_j^2 (Draper & Smith 2.1).
    truth, s = law(*TRUE["gelu"]), 0.01
    offsets = np.array([0.004, -0.02, 0.0, 0.013, 0.006])
    pts = points(truth.loss)
    pts[..., 1] += offsets + np.array([-s, 0.0, s])[:, None]
    check = lack_of_fit(pts, truth)
    assert check.mean_residual == pytest.approx(offsets, abs=1e-12)
    assert check.se == pytest.approx([s / math.sqrt(3)] * 5, rel=1e-9)
    assert check.chi2 == pytest.approx(3 * np.sum(offsets ** 2) / s ** 2, rel=1e-9)
    assert (check.dof, check.noise_dof) == (2, 10)
    f_statistic = (3 * np.sum(offsets ** 2) / 2) / (10 * s ** 2 / 10)
    assert check.p_value == pytest.approx(stats.f.sf(f_statistic, 2, 10), rel=1e-9)


def test_lack_of_fit_p_value_is_calibrated_on_data_from_the_law():
    # Under the law a 5% test should alarm on about 5% of data sets; 100 data sets give a
    # binomial sd of 0.022, so more than 12% would mean a miscounted dof or noise.
    p = []
    for rng_seed in range(100):
        pts = points(law(*TRUE["gelu"]).loss, 0.005, np.random.default_rng(1000 + rng_seed))
        p.append(lack_of_fit(pts, fit_shared_asymptote({"gelu": pts})["gelu"]).p_value)
    assert 0.01 <= np.mean(np.array(p) < 0.05) <= 0.12


def test_lack_of_fit_with_one_seed_has_no_noise_estimate():
    pts = points(law(*TRUE["gelu"]).loss, seeds=1)
    check = lack_of_fit(pts, law(*TRUE["gelu"]))
    assert math.isnan(check.p_value) and "no estimate of the seed noise" in check.describe()


def test_failed_bootstrap_replicates_are_counted_not_raised():
    rng = np.random.default_rng(2)
    base = points(law(*TRUE["gelu"]).loss, 0.005, rng)
    act = points(law(*TRUE["relu"]).loss, 0.005, rng)
    act[:2, 3:] = np.nan  # seeds 0 and 1 failed at the two largest sizes: a resample without seed 2 has 3 sizes
    res = scaling_comparison(act, base, n_resamples=1000)
    assert res.law == SHARED_LAW and math.isfinite(res.at_c_max.value)
    # P(no seed 2 among 3 draws) = (2/3)^3 = 0.30; 1000 draws give a binomial sd of 0.014.
    assert res.at_c_max.failed_share == pytest.approx(8 / 27, abs=0.05)
    assert math.isnan(res.at_c_max.ci_low) and "failed" in res.at_c_max.note
    assert sum(math.isnan(r) for r in res.replicates) == round(res.at_c_max.failed_share * 1000)
    act[0, 3:] = act[2, 3:]  # now only resamples of seed 1 alone fail: 1/27 < 10%
    res = scaling_comparison(act, base, n_resamples=1000)
    assert 0 < res.at_c_max.failed_share < 0.1 and res.at_c_max.ci_low <= res.at_c_max.ci_high


@pytest.mark.parametrize("speed, expected", [(1.0, 0.5), (0.8, 0.625)])
def test_wall_clock_speedup_divides_the_multiplier_by_the_speed(speed, expected):
    base_rounds = np.array([1.0, 1.05, 0.97, 1.02, 0.99])  # the reference's ratio to itself drifts by round
    res = wall_clock_speedup([0.5] * 10, 0.5, speed * base_rounds, base_rounds)
    assert res.value == pytest.approx(expected, rel=1e-12) and res.speed == pytest.approx(speed, rel=1e-12)
    assert res.n_rounds == 5 and res.ci_low == pytest.approx(expected) and res.ci_high == pytest.approx(expected)


def test_wall_clock_interval_combines_both_noises_and_contains_the_estimate():
    rng = np.random.default_rng(3)
    replicates = 0.5 * np.exp(0.05 * rng.standard_normal(200))  # the multiplier: 5% noise
    act_rounds, base_rounds = 0.8 * np.exp(0.1 * rng.standard_normal(10)), np.ones(10)  # the speed: ~4% on a median of 10
    res = wall_clock_speedup(replicates, 0.5, act_rounds, base_rounds)
    only_multiplier = wall_clock_speedup(replicates, 0.5, [0.8] * 10, [1.0] * 10)
    assert res.ci_low < res.value < res.ci_high
    assert math.log(res.ci_high / res.ci_low) > 1.1 * math.log(only_multiplier.ci_high / only_multiplier.ci_low)
    assert math.isnan(wall_clock_speedup([math.nan], 0.5, [0.8, 0.8], [1.0, 1.0]).ci_low)


def test_throughput_summaries_without_round_ratios_still_load():
    old = dict(activation="gelu", tokens_per_s=1e4, ratio=1.0, ratio_q25=0.98, ratio_q75=1.02, memory_bytes=1,
               memory_kind="saved for backward (CPU)", num_params=10, flops_per_token=60.0, reference="gelu")
    assert Throughput(**old).round_ratios == []
    assert Throughput(**old, round_ratios=[1.0, 0.99]).to_dict()["round_ratios"] == [1.0, 0.99]


def test_a_nearly_flat_law_asks_for_infinite_compute_not_an_overflow():
    from polycom.experiments.compare.scaling import PowerLaw, SaturatingLaw

    assert SaturatingLaw(E=1.0, A=2.0, b=1e-4).compute_for(1.5) == math.inf
    assert PowerLaw(a=5.0, b=1e-5).compute_for(1.0) == math.inf
    assert SaturatingLaw(E=1.0, A=2.0, b=0.5).compute_for(2.0) == pytest.approx(4.0)
