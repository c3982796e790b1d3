"""PolyNorm: a_0 + sum_{i=1..r} a_i N(x^i), N the RMS norm (PolyCom Type II with rho = RMS norm).

Zhuo et al., "Polynomial Composition Activations", ICLR 2025, eq. (3). The family:
formula, functional form, module and registry entry; its fast paths are the op of
``ops/poly_norm.py`` (closed-form eager/compiled kernels, Triton in ``ops/triton_poly_norm.py``).
"""

from __future__ import annotations

import torch

from ..ops import dispatch
from ..ops import poly_norm as poly_norm_op
from ..reference import compute_dtype
from ..registry import register_activation
from ..validation import check_coefficients, check_eps, check_float_tensor
from .general import PAPER, PolyCom

__all__ = ["normalized_powers", "poly_norm_reference", "poly_norm", "PolyNorm"]


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
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """PolyNorm (PolyCom Type II with rho = RMS normalisation), Zhuo et al. 2025, eq. (3):

        PolyNorm(x) = a_0 + sum_{i=1..r} a_i * N(x^i),   N(z) = z / sqrt(mean(z^2, -1) + eps)

    with a_i = weight[r - i] and a_0 = bias. Not elementwise: N couples all
    features of a row (the MLP hidden vector of one token).
    """
    r = weight.numel()
    dt = compute_dtype(x.dtype)
    xf = x.to(dt)
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
) -> torch.Tensor:
    """PolyNorm: ``bias + sum_i weight[r-i] * N(x^i)``, N = RMS norm over the last dim."""
    check_float_tensor(x, "x")
    check_coefficients(weight, bias, x)
    check_eps(eps)
    return dispatch.call("poly_norm", implementation, x, weight, bias, eps, order=weight.numel())


class PolyNorm(PolyCom):
    """PolyNorm: ``a_0 + sum_{i=1..r} a_i * N(x^i)`` with N the RMS norm over the last dim.

    N(z) = z * rsqrt(mean(z^2, -1) + eps), without gain, per row: PolyNorm must
    see each token's whole hidden vector.
    """

    def __init__(self, order: int = 3, eps: float = 1e-6, implementation: str = "auto", device=None, dtype=None):
        super().__init__("rmsnorm", order, "II", eps, implementation, device=device, dtype=dtype)

    def extra_repr(self) -> str:
        s = f"order={self.order}, eps={self.eps:g}"
        return s + (f", implementation={self.implementation}" if self.implementation != "auto" else "")


dispatch.register_op("poly_norm", reference=poly_norm_reference, kernels=poly_norm_op.KERNELS)
register_activation("polynorm", PolyNorm, description="a0 + sum_i a_i N(x^i), N = RMS norm (PolyCom Type II)",
                    paper=PAPER)
