"""PolyReLU: a_0 + sum_{i=1..r} a_i relu(x)^i (PolyCom Type I with rho = ReLU).

Zhuo et al., "Polynomial Composition Activations", ICLR 2025, eq. (2). The family:
formula, functional form, module and registry entry; its fast paths are the op of
``ops/poly_relu.py`` (closed-form eager/compiled kernels, Triton in ``ops/triton_poly_relu.py``).
"""

from __future__ import annotations

import torch

from ..ops import dispatch
from ..ops import poly_relu as poly_relu_op
from ..reference import compute_dtype
from ..registry import register_activation
from ..validation import check_coefficients, check_float_tensor
from .general import PAPER, PolyCom

__all__ = ["poly_relu_reference", "poly_relu", "PolyReLU"]


def poly_relu_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """PolyReLU (PolyCom Type I with rho = ReLU), Zhuo et al. 2025, eq. (2):

        PolyReLU(x) = a_0 + sum_{i=1..r} a_i * relu(x)^i,   a_i = weight[r - i], a_0 = bias

    Elementwise. For x < 0 the output is a_0, not 0.
    """
    r = weight.numel()
    dt = compute_dtype(x.dtype)
    w = weight.to(dt)
    act = torch.relu(x.to(dt))
    out = bias.to(dt).expand_as(act)
    power = torch.ones_like(act)
    for i in range(1, r + 1):
        power = power * act
        out = out + w[r - i] * power
    return out.to(x.dtype)


def poly_relu(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, implementation: str = "auto"
) -> torch.Tensor:
    """PolyReLU: ``bias + sum_i weight[r-i] * relu(x)^i`` (see ``poly_relu_reference``)."""
    check_float_tensor(x, "x")
    check_coefficients(weight, bias, x)
    return dispatch.call("poly_relu", implementation, x, weight, bias, order=weight.numel())


class PolyReLU(PolyCom):
    """PolyReLU: ``a_0 + sum_{i=1..r} a_i * relu(x)^i`` (PolyCom Type I, rho = ReLU)."""

    tensor_parallel_rule = "elementwise"  # one function per feature: a column shard needs nothing (TP)

    def __init__(self, order: int = 3, implementation: str = "auto", device=None, dtype=None):
        super().__init__("relu", order, "I", implementation=implementation, device=device, dtype=dtype)

    def extra_repr(self) -> str:
        return f"order={self.order}" + (f", implementation={self.implementation}" if self.implementation != "auto" else "")


dispatch.register_op("poly_relu", reference=poly_relu_reference, kernels=poly_relu_op.KERNELS)
register_activation("polyrelu", PolyReLU, description="a0 + sum_i a_i relu(x)^i (PolyCom Type I)", paper=PAPER)
