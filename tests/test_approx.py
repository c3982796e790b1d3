"""polycom approx: the theory's exact constructions, the slope statistics, the CLI and its bad input."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from polycom.cli import main
from polycom.experiments.approx import theory
from polycom.experiments.approx.mlp import ApproxMLP
from polycom.experiments.approx.rates import fit_slopes, predicted_slope, seed_slope
from polycom.experiments.approx.targets import get_target, target_function

F64 = torch.float64


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("implementation", ["auto", "reference"])
def test_polyrelu_with_only_a1_is_the_relu_network(depth, implementation):
    # Independent reference: the ReLU net written out with torch.relu and the layers' own matrices.
    layers = theory.random_relu_layers(3, [7] * depth, seed=depth)
    x = 4 * torch.randn(2000, 3, generator=torch.Generator().manual_seed(5), dtype=F64)
    h = x
    for lin in layers[:-1]:
        h = torch.relu(h @ lin.weight.T + lin.bias)
    expected = h @ layers[-1].weight.T + layers[-1].bias
    net = theory.network(layers, lambda: theory.polyrelu_as((0.0, 0.0, 1.0), implementation))
    assert net[1].weight.tolist() == [0.0, 0.0, 1.0]  # official layout: weight[-1] is a_1, weight[0] a_3
    with torch.no_grad():
        diff = (net(x) - expected).abs().max().item()
    # float64: only exact zeros are added to relu(x), so 1e-12 (~1e4 ulps at these magnitudes) is ample
    assert diff < 1e-12
    assert theory.check_relu_as_polyrelu(depth, seed=depth, implementation=implementation) < theory.EXACT_TOL


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_polyrelu_with_only_a2_is_the_relu2_network(depth):
    layers = theory.random_relu_layers(3, [5] * depth, seed=10 + depth)
    x = 0.5 * torch.rand(1000, 3, generator=torch.Generator().manual_seed(6), dtype=F64)
    h = x
    for lin in layers[:-1]:
        h = torch.clamp(h @ lin.weight.T + lin.bias, min=0) ** 2
    expected = h @ layers[-1].weight.T + layers[-1].bias
    net = theory.network(layers, lambda: theory.polyrelu_as((0.0, 1.0, 0.0)))
    with torch.no_grad():
        diff = (net(x) - expected).abs().max().item()
    assert diff < 1e-12 * max(1.0, expected.abs().max().item())  # relative to the output's scale
    assert theory.check_relu2_as_polyrelu(depth, seed=depth) < theory.EXACT_TOL


def test_a1_one_is_not_relu2_so_the_check_can_fail():
    layers = theory.random_relu_layers(2, [6], seed=0)
    x = torch.rand(100, 2, dtype=F64)
    relu2 = theory.network(layers, lambda: theory.polyrelu_as((0.0, 1.0, 0.0)))
    relu = theory.network(layers, lambda: theory.polyrelu_as((0.0, 0.0, 1.0)))
    with torch.no_grad():
        assert (relu2(x) - relu(x)).abs().max().item() > 1e-3


@pytest.mark.parametrize("m", [1, 2, 5, 9])
def test_sawtooth_error_is_four_to_the_minus_m_plus_one(m):
    # Independent measurement: a finer grid than the module's own (2^(m+6) cells) and numpy's x^2.
    net = theory.sawtooth_network(m)
    x = torch.linspace(0, 1, 2 ** (m + 6) + 1, dtype=F64).unsqueeze(-1)
    with torch.no_grad():
        err = (net(x).squeeze(-1).numpy() - x.squeeze(-1).numpy() ** 2).__abs__().max()
    assert abs(err / 4.0 ** (-(m + 1)) - 1) < 0.01  # the brief's 1%; measured exact to rounding
    # f_m interpolates x^2 at k / 2^m: zero error there
    knots = torch.arange(2 ** m + 1, dtype=F64).unsqueeze(-1) / 2 ** m
    with torch.no_grad():
        assert (net(knots) - knots ** 2).abs().max().item() < 1e-12
    assert sum(isinstance(mod, nn.ReLU) for mod in net) == m  # m hidden layers


def test_sawtooth_points_and_bad_m():
    points = theory.sawtooth_errors(6)
    assert [p.compositions for p in points] == list(range(1, 7))
    assert all(abs(p.max_error / p.predicted - 1) < 0.01 for p in points)
    with pytest.raises(ValueError, match="'m'"):
        theory.sawtooth_network(0)


def test_polyrelu_square_and_product_are_exact():
    x = 10 * torch.randn(3000, 1, generator=torch.Generator().manual_seed(1), dtype=F64)
    with torch.no_grad():
        assert (theory.square_network()(x) - x * x).abs().max().item() == 0.0  # relu(x)^2 + 0 is exact
        xy = torch.rand(3000, 2, dtype=F64) * 2 - 1
        prod = theory.product_network()(xy).squeeze(-1)
    assert (prod - xy[:, 0] * xy[:, 1]).abs().max().item() < 1e-15 * 8  # a few ulps of values <= 1
    assert sum(p.numel() for p in theory.square_network()[0].parameters()) == 2  # two units


def test_slope_statistics_match_a_direct_computation():
    p = np.array([10, 40, 160, 640])
    per_seed = {s: (p.tolist(), (3.0 * p ** -(0.5 + 0.1 * s)).tolist()) for s in range(3)}
    assert seed_slope(*per_seed[0]) == pytest.approx(-0.5, abs=1e-12)
    fit = fit_slopes(per_seed, predicted=-0.5)
    slopes = np.array([-0.5, -0.6, -0.7])
    half = stats.t.ppf(0.975, 2) * slopes.std(ddof=1) / math.sqrt(3)
    assert fit.mean == pytest.approx(-0.6) and fit.ci_low == pytest.approx(-0.6 - half)
    assert fit.ci_high == pytest.approx(-0.6 + half)
    assert math.isnan(seed_slope([1, 2], [1.0, math.nan]))  # one finite point: no slope
    assert predicted_slope("relu", math.inf, 4) == -0.5 and predicted_slope("gelu", 3.0, 2) == -1.5
    assert predicted_slope("polyrelu", math.inf, 4) == -math.inf


def test_targets_are_fixed_per_dimension_and_correct():
    x = torch.tensor([[0.5, -0.25], [-1.0, 0.3]], dtype=F64)
    f = target_function(get_target("sines"), 2)
    assert torch.allclose(f(x), torch.sin(math.pi * x[:, 0]) * torch.sin(math.pi * x[:, 1]))
    h1, h2 = target_function(get_target("hermite"), 2), target_function(get_target("hermite"), 2)
    assert torch.equal(h1(x), h2(x))
    assert torch.equal(target_function(get_target("abs"), 2)(x), x[:, 0].abs())


def test_gated_activations_use_the_gated_mlp():
    plain, gated = ApproxMLP(2, 8, 1, "gelu"), ApproxMLP(2, 8, 1, "swiglu")
    assert sum(p.numel() for p in gated.parameters()) - sum(p.numel() for p in plain.parameters()) == 2 * 8 + 8
    assert gated(torch.randn(4, 2, dtype=F64)).shape == (4,)


def _table_slopes(md: str) -> dict:
    rows = {}
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 10 and re.match(r"-?\d", cells[1]):
            rows[(cells[0], int(cells[1]), cells[3])] = cells[6]
    return rows


def test_quick_cli_writes_files_and_the_table_matches_the_raw_errors(tmp_path, capsys):
    # --quick, made smaller still (one target, 2 widths, 10 iterations) to keep the test fast
    argv = ["approx", "--quick", "--out", str(tmp_path), "--targets", "abs", "--widths", "2,4", "--steps", "10"]
    assert main(argv) == 0
    for name in ("rates.md", "rates.json", "rates.png"):
        assert (tmp_path / name).stat().st_size > 0
    raw = json.loads((tmp_path / "rates.json").read_text())
    table = _table_slopes((tmp_path / "rates.md").read_text())
    assert len(table) == len(raw["slopes"]) == 2  # 1 target x 1 dim x 2 activations
    for key, cell in table.items():
        fits = [f for f in raw["fits"] if (f["target"], f["dim"], f["activation"]) == key]
        slopes = []
        for seed in sorted({f["seed"] for f in fits}):
            mine = sorted((f for f in fits if f["seed"] == seed), key=lambda f: f["params"])
            slopes.append(stats.linregress(np.log([f["params"] for f in mine]),
                                           np.log([float(f["test_rmse"]) for f in mine])).slope)
        ci = stats.t.interval(0.95, len(slopes) - 1, loc=np.mean(slopes), scale=stats.sem(slopes))
        assert cell == f"{np.mean(slopes):.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def test_theory_cli(tmp_path, capsys):
    assert main(["approx", "--theory", "--out", str(tmp_path)]) == 0
    assert "18/18 exactness checks pass" in capsys.readouterr().out
    data = json.loads((tmp_path / "theory.json").read_text())
    assert all(c["passed"] for c in data["checks"]) and (tmp_path / "sawtooth.png").exists()


def test_width_study_weights_shrink_with_width(tmp_path):
    args = ["approx", "--width", "--out", str(tmp_path), "--ntk-widths", "64,1024", "--ntk-activations",
            "monomial2", "--seeds", "2", "--steps", "20"]
    assert main(args) == 0
    slopes = {r["quantity"]: r for r in json.loads((tmp_path / "width.json").read_text())["slopes"]}
    # theory -1/2; a 16x width range and 2 seeds: only the sign and rough size are asserted
    assert -1.0 < slopes["rel_change_u"]["mean"] < -0.25
    assert slopes["rel_change_ntk"]["mean"] < slopes["rel_change_u"]["mean"]  # the NTK moves faster to 0


@pytest.mark.parametrize("argv, flag", [
    (["--dims", "0"], "--dims"), (["--dims", "9"], "--dims"), (["--dims", "a"], "--dims"),
    (["--widths", ""], "--widths"), (["--widths", "4,-8"], "--widths"),
    (["--activations", "nope"], "--activations"), (["--targets", "nope"], "--targets"),
    (["--width", "--ntk-widths", "0"], "--ntk-widths"), (["--width", "--ntk-activations", "swiglu"],
                                                         "--ntk-activations"),
    (["--seeds", "0"], "--seeds"),
])
def test_bad_input_is_one_line_naming_the_flag(argv, flag, capsys, tmp_path):
    assert main(["approx", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err
    if flag in ("--activations", "--targets"):
        assert ("polynorm" if flag == "--activations" else "hermite") in err  # lists the valid names
