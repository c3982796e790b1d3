"""Exact constructions behind the PolyCom theory (Zhuo et al. 2025, Section 2), in float64.

1. A ReLU network is a PolyReLU network: PolyReLU(x) = a_0 + a_1 relu(x) + a_2 relu(x)^2
   + a_3 relu(x)^3 with (a_0, a_1, a_2, a_3) = (0, 1, 0, 0) is relu(x). In polycom's
   (the official) layout ``weight[0]`` is the highest power and ``weight[r - 1]`` a_1,
   so this is ``weight = (0, 0, 1)``, ``bias = 0`` for order 3. The same weights with
   PolyReLU units compute the same function at every depth.
2. ``weight = (0, 1, 0)`` (a_2 = 1 alone) turns a PolyReLU network into a ReLU^2 one.
3. The sawtooth construction (Telgarsky 2016; Yarotsky 2017, Proposition 2): with the
   hat g(x) = 2 relu(x) - 4 relu(x - 1/2) + 2 relu(x - 1) and g_s its s-fold composition,
   f_m(x) = x - sum_{s=1..m} g_s(x) / 4^s is the piecewise-linear interpolant of x^2 at
   the points k / 2^m, so max_{[0,1]} |f_m(x) - x^2| = 4^(-(m+1)), attained at the
   midpoints. Built here as an m-hidden-layer ReLU network of width 5 (three hat units
   and two carried channels, x and the running sum; both are >= 0 on [0, 1], so ReLU
   passes them unchanged).
4. PolyReLU writes x^2 exactly with two units: x^2 = relu(x)^2 + relu(-x)^2; and the
   product with four: xy = ((x + y)^2 - (x - y)^2) / 4.

The ReLU network of 3 needs 3m hat units for error 4^(-(m+1)), i.e. size ~ log(1/eps);
PolyReLU needs 2 units for error 0: the size gap of the paper's Theorem 2, in miniature.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ...activations import PolyReLU
from ...baselines import ReLU2

__all__ = ["ExactnessCheck", "SawtoothPoint", "random_relu_layers", "network", "polyrelu_as",
           "check_relu_as_polyrelu", "check_relu2_as_polyrelu", "sawtooth_network", "sawtooth_errors",
           "square_network", "product_network", "run_theory_checks", "EXACT_TOL"]

F64 = torch.float64
# The PolyReLU units compute a_1 relu(x) + 0 * relu(x)^2 + ... in float64; the only rounding
# beyond the ReLU net's own is adding exact zeros, so agreement is expected to be exact and
# 1e-12 (10^4 float64 ulps at unit scale) leaves room only for a reordered sum.
EXACT_TOL = 1e-12
RELU_COEFFICIENTS = (0.0, 0.0, 1.0)  # (a_3, a_2, a_1): official layout, highest power first
RELU2_COEFFICIENTS = (0.0, 1.0, 0.0)


@dataclass(frozen=True)
class ExactnessCheck:
    name: str
    description: str
    max_abs_diff: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.max_abs_diff < self.tolerance

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


@dataclass(frozen=True)
class SawtoothPoint:
    compositions: int  # m
    relu_units: int  # hidden units of the network
    max_error: float  # measured max |f_m - x^2| on a grid containing the midpoints
    predicted: float  # 4^(-(m+1))

    def to_dict(self) -> dict:
        return asdict(self)


def random_relu_layers(d_in: int, widths: list[int], seed: int) -> list[nn.Linear]:
    """Random float64 linear layers d_in -> widths[0] -> ... -> widths[-1] -> 1."""
    torch.manual_seed(seed)
    dims = [d_in, *widths, 1]
    return [nn.Linear(a, b, dtype=F64) for a, b in zip(dims[:-1], dims[1:])]


def network(layers: list[nn.Linear], make_act) -> nn.Sequential:
    """Linear, act, Linear, act, ..., Linear: an activation after every layer but the last."""
    mods = []
    for lin in layers[:-1]:
        mods += [lin, make_act()]
    return nn.Sequential(*mods, layers[-1])


def polyrelu_as(coefficients: tuple, implementation: str = "auto") -> PolyReLU:
    act = PolyReLU(order=len(coefficients), implementation=implementation, dtype=F64)
    with torch.no_grad():
        act.weight.copy_(torch.tensor(coefficients, dtype=F64))
        act.bias.zero_()
    return act


def _max_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((a(x) - b(x)).abs().max())


def check_relu_as_polyrelu(depth: int, seed: int = 0, d_in: int = 4, width: int = 16,
                           implementation: str = "auto", n: int = 4096) -> float:
    """max |ReLU net(x) - PolyReLU(0, 1, 0, 0) net(x)| over n Gaussian inputs (scale 3)."""
    layers = random_relu_layers(d_in, [width] * depth, seed)
    x = 3 * torch.randn(n, d_in, generator=torch.Generator().manual_seed(seed + 1), dtype=F64)
    return _max_diff(network(layers, nn.ReLU), network(layers, lambda: polyrelu_as(RELU_COEFFICIENTS, implementation)), x)


def check_relu2_as_polyrelu(depth: int, seed: int = 0, d_in: int = 4, width: int = 16,
                            implementation: str = "auto", n: int = 4096) -> float:
    """max |ReLU^2 net(x) - PolyReLU(0, 0, 1, 0) net(x)|, inputs scaled so outputs stay O(1)."""
    layers = random_relu_layers(d_in, [width] * depth, seed)
    x = 0.5 * torch.rand(n, d_in, generator=torch.Generator().manual_seed(seed + 1), dtype=F64)
    return _max_diff(network(layers, ReLU2), network(layers, lambda: polyrelu_as(RELU2_COEFFICIENTS, implementation)), x)


def sawtooth_network(m: int) -> nn.Sequential:
    """The ReLU network of f_m: m hidden layers of width 5, state (x, sum, relu(h), relu(h-1/2), relu(h-1))."""
    if m < 1:
        raise ValueError(f"argument 'm' (sawtooth compositions) must be >= 1, got {m}")
    hat = torch.tensor([2.0, -4.0, 2.0], dtype=F64)  # g(h) = 2 relu(h) - 4 relu(h - 1/2) + 2 relu(h - 1)
    shifts = torch.tensor([0.0, -0.5, -1.0], dtype=F64)
    first = nn.Linear(1, 5, dtype=F64)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0], [0.0], [1.0], [1.0], [1.0]], dtype=F64))
        first.bias.copy_(torch.cat([torch.zeros(2, dtype=F64), shifts]))
    mods = [first, nn.ReLU()]
    for s in range(1, m):  # layer s + 1 computes g_s from the hat units, adds g_s / 4^s to the sum
        lin = nn.Linear(5, 5, dtype=F64)
        w = torch.zeros(5, 5, dtype=F64)
        w[0, 0] = 1.0  # carry x
        w[1, 1], w[1, 2:] = 1.0, hat / 4.0 ** s  # sum + g_s / 4^s
        w[2:, 2:] = hat.expand(3, 3)  # each new hat unit sees g_s
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.copy_(torch.cat([torch.zeros(2, dtype=F64), shifts]))
        mods += [lin, nn.ReLU()]
    last = nn.Linear(5, 1, dtype=F64)  # f_m = x - (sum + g_m / 4^m)
    with torch.no_grad():
        last.weight.copy_(torch.cat([torch.tensor([1.0, -1.0], dtype=F64), -hat / 4.0 ** m]).unsqueeze(0))
        last.bias.zero_()
    return nn.Sequential(*mods, last)


def sawtooth_errors(max_m: int) -> list[SawtoothPoint]:
    points = []
    for m in range(1, max_m + 1):
        # the grid k / 2^(m+4) contains every midpoint (2k + 1) / 2^(m+1), where the error peaks
        x = torch.linspace(0, 1, 2 ** (m + 4) + 1, dtype=F64).unsqueeze(-1)
        with torch.no_grad():
            err = float((sawtooth_network(m)(x) - x.square()).abs().max())
        points.append(SawtoothPoint(m, 5 * m, err, 4.0 ** (-(m + 1))))
    return points


def square_network(implementation: str = "auto") -> nn.Sequential:
    """x -> relu(x)^2 + relu(-x)^2 = x^2: two PolyReLU units with a_2 = 1."""
    inp, out = nn.Linear(1, 2, bias=False, dtype=F64), nn.Linear(2, 1, bias=False, dtype=F64)
    with torch.no_grad():
        inp.weight.copy_(torch.tensor([[1.0], [-1.0]], dtype=F64))
        out.weight.fill_(1.0)
    return nn.Sequential(inp, polyrelu_as(RELU2_COEFFICIENTS, implementation), out)


def product_network(implementation: str = "auto") -> nn.Sequential:
    """(x, y) -> ((x + y)^2 - (x - y)^2) / 4 = xy: four PolyReLU units with a_2 = 1."""
    inp, out = nn.Linear(2, 4, bias=False, dtype=F64), nn.Linear(4, 1, bias=False, dtype=F64)
    with torch.no_grad():
        inp.weight.copy_(torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]], dtype=F64))
        out.weight.copy_(torch.tensor([[0.25, 0.25, -0.25, -0.25]], dtype=F64))
    return nn.Sequential(inp, polyrelu_as(RELU2_COEFFICIENTS, implementation), out)


def _square_error(n: int = 4096) -> float:
    x = 10 * torch.randn(n, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    with torch.no_grad():
        return float((square_network()(x) - x.square()).abs().max())


def _product_error(n: int = 4096) -> float:
    xy = 2 * torch.rand(n, 2, generator=torch.Generator().manual_seed(0), dtype=F64) - 1
    with torch.no_grad():
        return float((product_network()(xy).squeeze(-1) - xy[:, 0] * xy[:, 1]).abs().max())


def run_theory_checks(max_depth: int = 4, sawtooth_m: int = 10) -> tuple[list[ExactnessCheck], list[SawtoothPoint]]:
    checks = []
    for depth in range(1, max_depth + 1):
        for impl in ("auto", "reference"):
            checks.append(ExactnessCheck(
                f"relu_as_polyrelu/depth{depth}/{impl}",
                f"ReLU net (4-16-...-1, {depth} hidden) vs the same weights with PolyReLU (a_1 = 1), {impl} path",
                check_relu_as_polyrelu(depth, implementation=impl), EXACT_TOL))
            checks.append(ExactnessCheck(
                f"relu2_as_polyrelu/depth{depth}/{impl}",
                f"ReLU^2 net ({depth} hidden) vs PolyReLU with a_2 = 1 alone, {impl} path",
                check_relu2_as_polyrelu(depth, implementation=impl), EXACT_TOL))
    checks.append(ExactnessCheck("square/2_units", "x^2 = relu(x)^2 + relu(-x)^2, x ~ 10 N(0, 1)",
                                 _square_error(), EXACT_TOL))
    # ((x+y)^2 - (x-y)^2)/4 rounds: a few ulps of values <= 1 on [-1, 1]^2
    checks.append(ExactnessCheck("product/4_units", "xy = ((x+y)^2 - (x-y)^2) / 4 on [-1, 1]^2",
                                 _product_error(), EXACT_TOL))
    return checks, sawtooth_errors(sawtooth_m)
