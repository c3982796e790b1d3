"""PolyNorm: a_0 + sum_{i=1..r} a_i N(x^i), N the RMS norm (PolyCom Type II with rho = RMS norm).

Zhuo et al., "Polynomial Composition Activations", ICLR 2025, eq. (3). The family:
formula, functional form, module and registry entry; its fast paths are the op of
``ops/poly_norm.py`` (closed-form eager/compiled kernels, Triton in ``ops/triton_poly_norm.py``).
"""

from __future__ import annotations

import math
from dataclasses import asdict

import torch

from ..ops import dispatch
from ..ops import poly_norm as poly_norm_op
from ..ops.sharded_poly_norm import sharded_poly_norm
from ..reference import compute_dtype
from ..registry import register_activation
from ..validation import check_coefficients, check_eps, check_float_tensor
from .general import PAPER, PolyCom
from .polynorm_bounds import MOTIF_BOUNDS, PolyNormBounds, fused_arguments

__all__ = ["normalized_powers", "poly_norm_reference", "poly_norm", "PolyNorm", "bounds_repr"]


def _row_scale(x: torch.Tensor) -> torch.Tensor:
    """s = max(1, max|x|) per row, shape (..., 1): divides x so no power of it overflows."""
    return x.abs().amax(-1, keepdim=True).clamp(min=1.0)


def normalized_powers(x: torch.Tensor, order: int, eps: float) -> list[torch.Tensor]:
    """[N(x^1), ..., N(x^r)] with N(z) = z / sqrt(mean(z^2, -1) + eps), overflow-safely.

    With s = max(1, max|x|) per row and u = x / s (so |u| <= 1):
        N(x^i) = u^i / sqrt(mean(u^(2i)) + eps * s^(-2i)),
    the same value as the plain formula (identical when max|x| <= 1), but no
    intermediate exceeds 1 in magnitude, so it stays finite for every finite x
    (x^6 of a bf16 value overflows even float32).
    """
    s = _row_scale(x)
    u = x / s
    out = []
    for i in range(1, order + 1):
        u_pow = u.pow(i)
        eps_scaled = eps * s.pow(-2 * i)
        out.append(u_pow * torch.rsqrt(u_pow.square().mean(-1, keepdim=True) + eps_scaled))
    return out


def poly_norm_reference(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-6, input_bound: float = math.inf
) -> torch.Tensor:
    """PolyNorm (PolyCom Type II with rho = RMS normalisation), Zhuo et al. 2025, eq. (3):

        PolyNorm(x) = a_0 + sum_{i=1..r} a_i * N(x^i),   N(z) = z / sqrt(mean(z^2, -1) + eps)

    with a_i = weight[r - i] and a_0 = bias. Not elementwise: N couples all
    features of a row (the MLP hidden vector of one token). A finite ``input_bound`` c evaluates it
    at clamp(x, -c, c) (Motif's bounded PolyNorm, ``polynorm_bounds.py``).
    """
    r = weight.numel()
    dt = compute_dtype(x.dtype)
    xf = x.to(dt).clamp(-input_bound, input_bound) if math.isfinite(input_bound) else x.to(dt)
    w = weight.to(dt)
    out = bias.to(dt).expand_as(xf)
    for i, n_i in enumerate(normalized_powers(xf, r, eps), start=1):
        out = out + w[r - i] * n_i
    return out.to(x.dtype)


def poly_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float = 1e-6,
    implementation: str = "auto",
    bounds: PolyNormBounds | None = None,
    statistics_group=None,
) -> torch.Tensor:
    """PolyNorm: ``bias + sum_i weight[r-i] * N(x^i)``, N = RMS norm over the last dim.

    ``bounds``: Motif's bounded form (``polynorm_bounds.py``); None is the paper's PolyNorm.
    ``statistics_group``: a process group over which each row's features are split (tensor
    parallelism); the row statistics are then summed over it (``ops/sharded_poly_norm.py``)."""
    check_float_tensor(x, "x")
    check_coefficients(weight, bias, x)
    check_eps(eps)
    weight, bias, input_bound = fused_arguments(bounds, weight, bias)
    if statistics_group is not None:
        return sharded_poly_norm(x, None, weight, bias, None, eps, input_bound, implementation, statistics_group)
    return dispatch.call("poly_norm", implementation, x, weight, bias, eps, input_bound, order=weight.numel())


class PolyNorm(PolyCom):
    """PolyNorm: ``a_0 + sum_{i=1..r} a_i * N(x^i)`` with N the RMS norm over the last dim.

    N(z) = z * rsqrt(mean(z^2, -1) + eps), without gain, per row: PolyNorm must
    see each token's whole hidden vector. ``sigmoid_coefficients``, ``bias_bound``,
    ``output_scale``, ``input_bound``: Motif's bounded PolyNorm (``polynorm_bounds.py``; the
    defaults are the paper's, ``polycom.get_activation("motif_polynorm")`` sets Motif's values).
    ``statistics_group``: None, or the tensor-parallel process group that holds the other
    features of each row (set by ``train.tensor_parallel.apply_tensor_parallel``).
    """

    tensor_parallel_rule = "statistics"  # normalises over the row: TP all_reduces its statistics

    statistics_group = None

    def __init__(self, order: int = 3, eps: float = 1e-6, implementation: str = "auto", device=None, dtype=None, *,
                 sigmoid_coefficients: bool = False, bias_bound: float | None = None, output_scale: float = 1.0,
                 input_bound: float | None = None):
        self.bounds = PolyNormBounds(sigmoid_coefficients, bias_bound, output_scale, input_bound)
        super().__init__("rmsnorm", order, "II", eps, implementation, device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        with torch.no_grad():
            self.weight.fill_(self.bounds.initial_weight(self.order))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return poly_norm(x, self.weight, self.bias, self.eps, self.implementation, self.bounds, self.statistics_group)

    def extra_repr(self) -> str:
        s = f"order={self.order}, eps={self.eps:g}"
        if not self.bounds.is_paper:
            s += f", {bounds_repr(self.bounds)}"
        return s + (f", implementation={self.implementation}" if self.implementation != "auto" else "")


def bounds_repr(bounds: PolyNormBounds) -> str:
    return ", ".join(f"{k}={v}" for k, v in asdict(bounds).items() if v != getattr(PolyNormBounds(), k))


dispatch.register_op("poly_norm", reference=poly_norm_reference, kernels=poly_norm_op.KERNELS)
register_activation("polynorm", PolyNorm, description="a0 + sum_i a_i N(x^i), N = RMS norm (PolyCom Type II)",
                    paper=PAPER)
register_activation("motif_polynorm", PolyNorm, default_kwargs=asdict(MOTIF_BOUNDS),
                    description="0.5 (clamp(a0, +-0.5) + sum_i sigmoid(w_i) N(clamp(x, +-1e6)^i)) (Motif's bounded PolyNorm)",
                    paper="Motif Technologies' PolyNorm models; PolyNorm: Zhuo et al., ICLR 2025")
