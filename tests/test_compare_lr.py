"""The LR-fair comparison (issue 22 items 1 and 3): each activation's LR tuned on the main runs'
own schedule, a grid that grows past an edge holding the best LR, LRs interpolated between
tuned sizes, and the tuning seed's run at the chosen LR reused as its main run."""

from __future__ import annotations

import math

import pytest

from polycom.experiments.compare.lr_policy import choose_lr, grid_ratio, interpolate_lrs, next_grid_point
from polycom.experiments.compare.plan import plan_runs
from polycom.experiments.compare.sweep import compare
from polycom.train.config import ConfigError

from test_compare import small_spec


def test_choose_lr_finds_the_minimum_its_edge_and_its_sensitivity():
    c = choose_lr([4e-3, 1e-3, 2e-3], [3.0, 3.4, 3.1])  # unsorted input
    assert c["grid"] == [1e-3, 2e-3, 4e-3] and c["best_lr"] == 4e-3 and c["at_edge"] == "high"
    assert c["sensitivity"] == pytest.approx(0.1)
    c = choose_lr([1e-3, 2e-3, 4e-3], [3.2, 3.0, 3.6])
    assert c["at_edge"] is None and c["sensitivity"] == pytest.approx((0.2 + 0.6) / 2)
    c = choose_lr([1e-3, 2e-3, 4e-3], [3.2, 3.0, math.nan])  # a diverged neighbour still brackets the optimum
    assert c["best_lr"] == 2e-3 and c["at_edge"] is None and c["sensitivity"] == pytest.approx(0.2)
    c = choose_lr([1e-3, 2e-3], [math.nan, math.nan])
    assert c["best_lr"] is None and next_grid_point(c, [1e-3, 2e-3], 2) is None


def test_the_grid_grows_one_step_past_the_edge_up_to_its_limit():
    initial = [1e-3, 2e-3, 4e-3]
    assert grid_ratio(initial) == pytest.approx(2.0)
    high = choose_lr(initial, [3.3, 3.2, 3.1])
    assert next_grid_point(high, initial, 2) == pytest.approx(8e-3)
    once = choose_lr(initial + [8e-3], [3.3, 3.2, 3.1, 3.05])
    assert next_grid_point(once, initial, 2) == pytest.approx(1.6e-2)
    assert next_grid_point(once, initial, 1) is None  # the limit: one step per side
    low = choose_lr(initial, [3.0, 3.2, 3.3])
    assert next_grid_point(low, initial, 2) == pytest.approx(5e-4)
    assert next_grid_point(choose_lr(initial, [3.2, 3.0, 3.3]), initial, 2) is None  # interior: done
    assert next_grid_point(high, initial, 0) is None


def test_lrs_are_interpolated_in_log_size_and_never_extrapolated():
    params = {"s": 1e5, "m": 4e5, "l": 1.6e6, "xl": 6.4e6}
    lrs = interpolate_lrs(params, {"s": 8e-3, "l": 2e-3})
    # log LR linear in log params: halfway (in log) between s and l -> the geometric mean of the LRs
    assert lrs["m"] == pytest.approx(4e-3) and lrs["s"] == pytest.approx(8e-3) and lrs["l"] == pytest.approx(2e-3)
    assert lrs["xl"] == pytest.approx(2e-3)  # beyond the tuned range: the nearest tuned LR
    with pytest.raises(ValueError):
        interpolate_lrs(params, {})


def test_lr_phase_runs_on_the_full_schedule_and_its_seed_zero_run_is_the_main_run(tmp_path):
    spec = small_spec(tmp_path, activations=["gelu", "relu2"], seeds=2, lr_sweep=True, lr_grid=[1e-4, 3e-4],
                      lr_grid_extensions=1, throughput_rounds=0)
    said = []
    result = compare(spec, tmp_path / "out", say=said.append)
    sweep = result.summary["lr_sweep"]["by_size"]["base"]
    for act in ("gelu", "relu2"):
        recs = [r for r in result.lr_records if r.activation == act]
        best = min(recs, key=lambda r: r.val_loss)
        # At 8 steps, 1e-4 and 3e-4 are both far too small: the best is the high edge, so the grid
        # grew once (the limit) to 9e-4, which is then the best and still on the edge.
        assert sorted(r.lr for r in recs) == pytest.approx([1e-4, 3e-4, 9e-4])
        assert sweep[act]["best_lr"] == best.lr == pytest.approx(9e-4) and sweep[act]["at_edge"] == "high"
        assert all(r.steps == 8 for r in recs)  # the main runs' own schedule, not a shortened proxy
        main = [r for r in result.records if r.activation == act]
        assert all(r.lr == best.lr for r in main) and sweep[act]["lr_used"] == best.lr
        seed0 = next(r for r in main if r.seed == 0)
        assert seed0.run_id == best.run_id and seed0.val_loss == best.val_loss  # one run, one folder
    # 2 activations x 3 LRs in the LR phase, and only seed 1 of each in the main phase
    assert sum(state == "done" for state in result.states.values()) == 2 * 3 + 2
    unique = {r.run_id: r.elapsed_s for r in result.lr_records + result.records}
    assert len(unique) == 2 * 3 + 2  # the shared runs are counted once in the sweep's own timing
    assert result.timings["runs_training_s"] == pytest.approx(sum(unique.values()))
    assert any("LR grid extended past its edge" in line for line in said)
    assert any("2 of them trained in the LR phase" in line for line in said)
    report = (result.out / "REPORT.md").read_text()
    assert "tuned per activation (seed 0, the full schedule)" in report
    assert "optimum may lie beyond" in report and "## Learning rates" in report
    assert (result.out / "figures" / "lr_sweep.png").exists()
    again = compare(spec, tmp_path / "out", say=lambda *a: None)  # the same command: nothing retrained
    assert set(again.states.values()) == {"skipped"}
    assert again.summary["lr_sweep"] == result.summary["lr_sweep"]


def test_scaling_lrs_tuned_at_the_ends_are_interpolated_between(tmp_path):
    sizes = [{"label": "d16", "model.d_model": 16}, {"label": "d24", "model.d_model": 24},
             {"label": "d32", "model.d_model": 32}]
    spec = small_spec(tmp_path, activations=["gelu", "relu"], seeds=1, baseline="gelu", scaling=True,
                      scaling_sizes=sizes, lr_sweep=True, lr_grid=[3e-3, 1e-2, 3e-2], lr_grid_extensions=0,
                      lr_tune_sizes="ends", throughput_rounds=0)
    plans = plan_runs(spec, tmp_path / "plan")
    assert {p.size for p in plans["lr"]} == {"d16", "d32"}  # the middle size is not tuned
    result = compare(spec, tmp_path / "out", say=lambda *a: None)
    sweep = result.summary["lr_sweep"]
    assert set(sweep["by_size"]) == {"d16", "d32"} and set(sweep["interpolated"]) == {"d24"}
    for act in ("gelu", "relu"):
        ends = [sweep["by_size"][s][act]["best_lr"] for s in ("d16", "d32")]
        middle = sweep["interpolated"]["d24"][act]
        assert min(ends) - 1e-12 <= middle <= max(ends) + 1e-12
        assert next(r.lr for r in result.records if r.activation == act and r.size == "d24") == middle
    # Item 8: the first screen describes the main table's runs (the largest size), not the first record's.
    largest = next(r for r in result.records if r.size == "d32")
    report = (result.out / "REPORT.md").read_text()
    assert f"budget (size d32, the largest of the ladder): {largest.steps * 4 * 32:,} tokens per run " \
           f"({largest.steps} steps x 4 x 32)" in report


@pytest.mark.parametrize("settings, message", [
    ({"lr_sweep": True, "lr_grid": [1e-3, 1e-3]}, "--lr-grid: duplicates"),
    ({"lr_grid_extensions": -1}, "lr_grid_extensions: must be an integer >= 0"),
    ({"lr_tune_seed": 1.5}, "lr_tune_seed: must be an integer"),
    ({"lr_tune_sizes": "some"}, "lr_tune_sizes: must be 'each' or 'ends'"),
    ({"tokens_per_param": -2.0}, "tokens_per_param: must be a number >= 0"),
    ({"lr_tie_tolerance": -0.1}, "lr_tie_tolerance: must be a number >= 0"),
])
def test_bad_lr_policy_settings_name_their_key(tmp_path, settings, message):
    with pytest.raises(ConfigError, match=message):
        small_spec(tmp_path, **settings).validate()


def test_log_axes_get_plain_tick_labels(tmp_path):
    import matplotlib.pyplot as plt

    from polycom.experiments.compare.plots import plain_log_axis

    fig, ax = plt.subplots()
    ax.plot([2.0, 9.0], [5.4, 5.9])
    plain_log_axis(ax, "x")
    plain_log_axis(ax, "y")
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels(minor=True) + ax.get_yticklabels(minor=True)
              + ax.get_xticklabels() + ax.get_yticklabels()]
    shown = [t for t in labels if t]
    assert shown and not any("times" in t or "^" in t or "$" in t for t in shown), shown
    assert "5" in shown and "2" in shown  # within one decade the minor ticks are labelled plainly
    plt.close(fig)


def test_lrs_one_seed_cannot_separate_go_to_the_smaller_one():
    # polynorm in the 2026-12-07 default sweep: 1.6e-2 beat 8e-3 by 0.008 nats on seed 0, then spiked on seed 1
    lrs, losses = [4e-3, 8e-3, 1.6e-2, 3.2e-2], [4.1731, 4.0565, 4.0481, 4.9924]
    assert choose_lr(lrs, losses)["best_lr"] == 1.6e-2  # the plain argmin
    c = choose_lr(lrs, losses, tie_tolerance=0.02)
    assert c["best_lr"] == 8e-3 and c["lowest_loss_lr"] == 1.6e-2 and c["at_edge"] is None
    assert c["sensitivity"] == pytest.approx(((4.1731 - 4.0565) + (4.0481 - 4.0565)) / 2)
    # a tie at the grid's low edge puts the chosen LR on the edge: the grid grows downwards
    c = choose_lr([4e-3, 8e-3, 1.6e-2], [4.2514, 4.2395, 4.5721], tie_tolerance=0.02)
    assert c["best_lr"] == 4e-3 and c["at_edge"] == "low"
    assert next_grid_point(c, [4e-3, 8e-3, 1.6e-2], 2) == pytest.approx(2e-3)
