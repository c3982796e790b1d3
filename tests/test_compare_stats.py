"""The comparison statistics against values computed independently (closed forms, by hand)."""

import math
import statistics

import numpy as np
import pytest
from scipy import stats as sps

from polycom.experiments.compare import stats
from polycom.experiments.compare.efficiency import token_multiplier, tokens_to_reach
from polycom.experiments.compare.scaling import PowerLaw, fit_power_law, scaling_comparison


def test_describe_matches_the_t_interval_formula():
    x = np.array([3.10, 3.05, 3.20, 3.12])
    d = stats.describe(x)
    half = sps.t.ppf(0.975, 3) * x.std(ddof=1) / 2  # t_{0.975, n-1} * s / sqrt(n), n = 4
    assert d.mean == pytest.approx(3.1175, abs=1e-12)
    assert d.std == pytest.approx(statistics.stdev(x.tolist()), rel=1e-12)
    assert (d.ci_low, d.ci_high) == pytest.approx((3.1175 - half, 3.1175 + half), rel=1e-12)


def test_paired_comparison_on_fixed_inputs():
    base = np.array([3.00, 3.10, 2.95])
    act = np.array([2.97, 3.08, 2.91])  # d = -0.03, -0.02, -0.04
    c = stats.paired_comparison(act, base)
    # By hand: mean -0.03, s = 0.01, t = -0.03 / (0.01 / sqrt 3) = -5.196, df 2.
    assert c.mean_diff == pytest.approx(-0.03, abs=1e-12)
    assert c.std_diff == pytest.approx(0.01, rel=1e-9)
    t = -0.03 / (0.01 / math.sqrt(3))
    assert c.p_value == pytest.approx(2 * sps.t.cdf(t, 2), rel=1e-9)
    half = sps.t.ppf(0.975, 2) * 0.01 / math.sqrt(3)
    assert (c.ci_low, c.ci_high) == pytest.approx((-0.03 - half, -0.03 + half), rel=1e-9)
    assert c.p_permutation == pytest.approx(2 / 8)  # all 3 negative: 2 of 8 sign flips as extreme
    assert c.prob_improvement == 1.0
    assert c.se_paired == pytest.approx(0.01 / math.sqrt(3), rel=1e-9)
    assert c.se_unpaired == pytest.approx(math.sqrt(np.var(act, ddof=1) / 3 + np.var(base, ddof=1) / 3), rel=1e-12)
    assert c.se_paired < c.se_unpaired  # the pairing removed the shared seed noise


def test_holm_matches_the_step_down_by_hand():
    adjusted = stats.holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": math.nan})
    # Sorted 0.01, 0.03, 0.04 -> 3 * 0.01, 2 * 0.03, max(0.06, 1 * 0.04).
    assert adjusted["a"] == pytest.approx(0.03)
    assert adjusted["c"] == pytest.approx(0.06)
    assert adjusted["b"] == pytest.approx(0.06)
    assert math.isnan(adjusted["d"])


def test_minimum_detectable_difference_has_the_stated_power():
    sd, n = 0.01, 5
    mdd = stats.minimum_detectable_difference(sd, n)
    # Monte Carlo check of the power with an independent simulation (paired t-test on normal data).
    rng = np.random.default_rng(0)
    d = rng.normal(mdd, sd, size=(20000, n))
    power = np.mean(sps.ttest_1samp(d, 0.0, axis=1).pvalue < 0.05)
    assert power == pytest.approx(0.8, abs=0.015)  # 20000 draws: binomial sd of the estimate 0.003
    # Large-n limit: (z_{0.975} + z_{0.8}) * sd / sqrt(n).
    assert stats.minimum_detectable_difference(sd, 2000) == pytest.approx(
        (sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) * sd / math.sqrt(2000), rel=2e-3)


def test_seeds_needed_is_the_smallest_n_with_the_power():
    n = stats.seeds_needed(0.01, 0.01)
    assert stats.minimum_detectable_difference(0.01, n) <= 0.01 < stats.minimum_detectable_difference(0.01, n - 1)


def test_verdict_uses_the_holm_adjusted_p_value():
    c = stats.paired_comparison([2.97, 3.08, 2.91], [3.00, 3.10, 2.95])
    assert stats.verdict(c) == "better"
    import dataclasses

    assert stats.verdict(dataclasses.replace(c, p_holm=0.2)) == "no significant difference at this budget"
    worse = stats.paired_comparison([3.03, 3.12, 2.99], [3.00, 3.10, 2.95])
    assert stats.verdict(worse) == "worse"
    assert stats.verdict(stats.paired_comparison([3.0], [3.1])).startswith("not testable")


def test_token_multiplier_is_exact_on_a_time_stretched_curve():
    tokens = np.arange(1, 11) * 1000.0
    base = 5.0 - 0.2 * tokens / 1000  # linear: final loss 3.0 at 10k tokens
    for k in (0.5, 0.8):
        act = 5.0 - 0.2 * tokens / 1000 / k  # the same curve run 1/k times faster
        m = token_multiplier(tokens, act, tokens, base)
        assert m.reached and m.value == pytest.approx(k, rel=1e-12)
    slower = token_multiplier(tokens, 5.0 - 0.1 * tokens / 1000, tokens, base)
    assert not slower.reached and math.isnan(slower.value)  # censored, never extrapolated


def test_tokens_to_reach_interpolates_between_eval_points():
    assert tokens_to_reach([10, 20, 30], [4.0, 3.0, 2.0], 2.5) == pytest.approx(25.0)
    assert tokens_to_reach([10, 20], [2.0, 1.0], 3.0) == 10.0  # already there at the first point
    with pytest.raises(ValueError, match="strictly increasing"):
        tokens_to_reach([10, 10], [2.0, 1.0], 1.5)


def test_power_law_fit_and_compute_multiplier_are_exact_on_synthetic_laws():
    compute = np.array([1e12, 1e13, 1e14])
    base = PowerLaw(a=40.0, b=0.08)
    fit = fit_power_law(compute, base.loss(compute))
    assert (fit.a, fit.b) == pytest.approx((40.0, 0.08), rel=1e-9)
    # The activation reaches any loss with 0.7x the compute: L_act(C) = L_base(C / 0.7).
    act_loss = base.loss(compute / 0.7)
    seeds = 3
    act_pts = np.stack([np.stack([compute, act_loss], axis=1)] * seeds)  # (seeds, sizes, 2)
    base_pts = np.stack([np.stack([compute, base.loss(compute)], axis=1)] * seeds)
    res = scaling_comparison(act_pts, base_pts).at_c_max  # 3 sizes: the two-parameter law
    assert res.value == pytest.approx(0.7, rel=1e-9)
    assert res.ci_low == pytest.approx(0.7, rel=1e-9) and res.ci_high == pytest.approx(0.7, rel=1e-9)
