r"""AF-KAN's univariate function: shifted activations combined on a grid, one coefficient per basis.

Ta & Tran 2025, "AF-KAN: Activation Function-Based Kolmogorov-Arnold Networks for
Efficient Representation Learning" (arXiv:2503.06112), which extends the basis of
ReLU-KAN (Qiu et al. 2024, arXiv:2406.02075) from ReLU to other activations.

**The basis.** A grid of G intervals on [lo, hi] (step t = (hi - lo) / G) and order k
give G + k functions, function i living on [s_i, e_i], s_i = lo + (i - k) t,
e_i = lo + (i + 1) t (width w = (k + 1) t). ReLU-KAN's basis is

    R_i(x) = [ReLU(x - s_i) ReLU(e_i - x)]^2 * 16 / w^4        (peak 1 at the centre);

AF-KAN's "quad1" function type writes the same squared product with the activation f
in place of ReLU:

    b_i(x) = [f(x - s_i) f(e_i - x)]^2 * 16 / w^4,    f = SiLU by default,

and the univariate function is

    phi(x) = sum_{i=0..G+k-1} c_i b_i(x),

with learnable c (``coefficients``, one vector for every input feature: the
parameter-reduced form the paper uses so that an AF-KAN layer has about the weights of
a linear layer; ``polycom.models.af_kan`` writes the whole layer).

**What we could verify, and what is our choice.** The search tool reached the paper's
abstract and third-party summaries, not its method section. Verified there: AF-KAN
extends ReLU-KAN with other activations and "function types" up to degree three,
reduces parameters with attention and data normalisation, and its ablations name SiLU
the best activation, ``quad1`` a robust function type, and small grids with order-3
splines (summary of the ablation section). The defaults follow that: f = SiLU, quad1,
G = 3, k = 3. Our reading (not checked against the paper's equations): quad1 as the
ReLU-KAN squared product with f, the global coefficient vector c as the parameter
reduction, the grid range [-1, 1] (the input is layer-normalised, so the G + k = 6
supports cover [-3, 3]), and the init of c: c_i = kappa * m_i, m_i = (s_i + e_i) / 2 the
centre of b_i (so phi rises with x, as a spline with its control points on the identity
does), kappa such that E[phi(x)^2] = 1 for x ~ N(0, 1) (64-node Gauss-Hermite quadrature),
the variance-preserving rule of polycom's other learnable activations.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..reference import compute_dtype
from ..registry import register_activation
from ..validation import check_float_tensor, check_interval

__all__ = ["BASE_ACTIVATIONS", "check_grid", "grid_knots", "af_kan_basis", "af_kan_function",
           "variance_preserving_af_kan_coefficients", "AFKANFunction", "PAPER"]

PAPER = "Ta & Tran 2025, AF-KAN: Activation Function-Based Kolmogorov-Arnold Networks"

# f of the basis; "relu" gives ReLU-KAN's basis exactly.
BASE_ACTIVATIONS = {"silu": F.silu, "gelu": F.gelu, "relu": F.relu, "elu": F.elu, "selu": F.selu,
                    "softplus": F.softplus}


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"argument '{name}' must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"argument '{name}' must be >= 1, got {value}")
    return value


def check_grid(grid_size, spline_order, grid_range, base_activation) -> tuple[int, int, tuple[float, float], str]:
    """The basis hyper-parameters, validated; each error names its argument."""
    _check_positive_int(grid_size, "grid_size")
    _check_positive_int(spline_order, "spline_order")
    lo, hi = check_interval(grid_range, "grid_range")
    if base_activation not in BASE_ACTIVATIONS:
        raise ValueError(f"argument 'base_activation' must be one of {sorted(BASE_ACTIVATIONS)}, "
                         f"got {base_activation!r}")
    return grid_size, spline_order, (lo, hi), base_activation


def grid_knots(grid_size: int, spline_order: int, grid_range: tuple[float, float]) -> tuple[list[float], list[float]]:
    """(s_0..s_{G+k-1}, e_0..e_{G+k-1}): start and end of each basis function's support."""
    lo, hi = grid_range
    step = (hi - lo) / grid_size
    n = grid_size + spline_order
    starts = [lo + (i - spline_order) * step for i in range(n)]
    ends = [lo + (i + 1) * step for i in range(n)]
    return starts, ends


def af_kan_basis(x: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor, base_activation: str) -> torch.Tensor:
    """b_i(x) = [f(x - s_i) f(e_i - x)]^2 * 16 / (e_i - s_i)^4; x (...,) -> (..., G + k)."""
    f = BASE_ACTIVATIONS[base_activation]
    xe = x.unsqueeze(-1)  # (..., 1) against the (G + k,) knots
    width = ends - starts
    return (f(xe - starts) * f(ends - xe)).square() * (16.0 / width.pow(4))


def af_kan_function(x: torch.Tensor, coefficients: torch.Tensor, starts, ends,
                    base_activation: str = "silu") -> torch.Tensor:
    """phi(x) = sum_i c_i b_i(x) elementwise; Ta & Tran 2025 (module docstring).

    ``starts``, ``ends``: the knots s_i, e_i (``grid_knots``), Python floats, so that they
    stay exact whatever dtype a model is cast to. ``coefficients`` (G + k,), or any shape
    broadcasting against (..., G + k) (the MoE's per-expert rows pass (M, 1, G + k)).
    Evaluated in fp32 for 16-bit inputs.
    """
    dt = compute_dtype(x.dtype)
    s, e = (torch.tensor(v, dtype=dt, device=x.device) for v in (starts, ends))
    basis = af_kan_basis(x.to(dt), s, e, base_activation)  # (..., G + k)
    return (basis * coefficients.to(dt)).sum(-1).to(x.dtype)


def variance_preserving_af_kan_coefficients(grid_size: int, spline_order: int, grid_range=(-1.0, 1.0),
                                            base_activation: str = "silu") -> torch.Tensor:
    """c_i = kappa * m_i with E[phi(x)^2] = 1 for x ~ N(0, 1) (module docstring), float64 on the CPU."""
    # On the CPU explicitly: modules may be built under torch.device("meta") (parameter counting).
    starts, ends = grid_knots(grid_size, spline_order, grid_range)
    centres = torch.tensor([(s + e) / 2 for s, e in zip(starts, ends)], dtype=torch.float64, device="cpu")
    nodes, weights = np.polynomial.hermite_e.hermegauss(64)  # weight exp(-x^2/2): E[g] = sum w g / sqrt(2 pi)
    x, w = torch.from_numpy(nodes), torch.from_numpy(weights) / math.sqrt(2 * math.pi)
    second_moment = (w * af_kan_function(x, centres, starts, ends, base_activation).square()).sum()
    if not second_moment > 0:
        raise ValueError(f"argument 'grid_range' = {grid_range!r} gives a basis that vanishes on N(0, 1); "
                         "centre it near 0")
    return centres / second_moment.sqrt()


class AFKANFunction(nn.Module):
    """phi(x) = sum_i c_i [f(x - s_i) f(e_i - x)]^2 16 / w^4, elementwise, learnable c (AF-KAN, quad1)."""

    def __init__(self, grid_size: int = 3, spline_order: int = 3, grid_range=(-1.0, 1.0),
                 base_activation: str = "silu", device=None, dtype=None):
        super().__init__()
        self.grid_size, self.spline_order, self.grid_range, self.base_activation = check_grid(
            grid_size, spline_order, grid_range, base_activation)
        self.starts, self.ends = grid_knots(self.grid_size, self.spline_order, self.grid_range)  # fixed, floats
        self.coefficients = nn.Parameter(torch.empty(self.num_basis, device=device, dtype=dtype))
        self.reset_parameters()

    @property
    def num_basis(self) -> int:
        return self.grid_size + self.spline_order

    def reset_parameters(self) -> None:
        init = variance_preserving_af_kan_coefficients(self.grid_size, self.spline_order, self.grid_range,
                                                       self.base_activation)
        if not self.coefficients.is_meta:
            with torch.no_grad():
                self.coefficients.copy_(init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_float_tensor(x, "x")
        return af_kan_function(x, self.coefficients, self.starts, self.ends, self.base_activation)

    def extra_repr(self) -> str:
        return (f"grid_size={self.grid_size}, spline_order={self.spline_order}, grid_range={self.grid_range}, "
                f"base_activation={self.base_activation}")


register_activation("af_kan", AFKANFunction, mlp_kind="afkan", paper=PAPER,
                    description="AF-KAN layers d -> h -> d: W phi(LN(x)), phi = sum_i c_i [SiLU(x-s_i) SiLU(e_i-x)]^2 "
                                "(MLP kind afkan)")
