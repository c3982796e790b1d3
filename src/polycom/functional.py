"""Functional API: argument checks, then dispatch to an implementation.

``implementation`` selects the code path: ``"reference"`` is the plain math in
``polycom.reference`` (the ground truth); ``"auto"`` (default) lets
``polycom.ops.dispatch`` pick the fastest correct path for the input's device
and dtype. Every path computes the same function; see ``polycom.reference`` for
the formulas and the coefficient layout.
"""

from __future__ import annotations

import torch

from . import reference as ref
from .ops import dispatch
from .validation import check_coefficients, check_eps, check_float_tensor, check_same_shape

__all__ = [
    "poly_relu",
    "poly_norm",
    "poly_com",
    "gated_poly_norm",
    "relu2",
    "swiglu",
    "geglu",
]


def poly_relu(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, implementation: str = "auto"
) -> torch.Tensor:
    """PolyReLU: ``bias + sum_i weight[r-i] * relu(x)^i`` (see ``reference.poly_relu_reference``)."""
    check_float_tensor(x, "x")
    check_coefficients(weight, bias, x)
    return dispatch.poly_relu(x, weight, bias, implementation)


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
    return dispatch.poly_norm(x, weight, bias, eps, implementation)


def gated_poly_norm(
    gate: torch.Tensor,
    up: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float = 1e-6,
    implementation: str = "auto",
) -> torch.Tensor:
    """Gated PolyNorm: ``PolyNorm(gate) * up``."""
    check_float_tensor(gate, "gate")
    check_float_tensor(up, "up")
    check_same_shape(gate, up, "gate", "up")
    check_coefficients(weight, bias, gate)
    check_eps(eps)
    return dispatch.gated_poly_norm(gate, up, weight, bias, eps, implementation)


def poly_com(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    base: str = "relu",
    kind: str = "I",
    eps: float = 1e-6,
    prelu_weight: torch.Tensor | None = None,
    implementation: str = "auto",
) -> torch.Tensor:
    """General PolyCom (Type I: powers of rho(x); Type II: rho of powers of x).

    (relu, "I") is PolyReLU and (rmsnorm, "II") is PolyNorm; those two use
    their dedicated (fast, overflow-safe) paths, selected by ``implementation``;
    the other combinations run the reference math.
    """
    check_float_tensor(x, "x")
    check_coefficients(weight, bias, x)
    check_eps(eps)
    if base not in ref.BASE_FUNCTIONS:
        raise ValueError(f"unknown base {base!r}; valid bases: {sorted(ref.BASE_FUNCTIONS)}")
    if kind not in ("I", "II"):
        raise ValueError(f"kind must be 'I' (rho then powers) or 'II' (powers then rho), got {kind!r}")
    if base == "relu" and kind == "I":
        return dispatch.poly_relu(x, weight, bias, implementation)
    if base == "rmsnorm" and kind == "II":
        return dispatch.poly_norm(x, weight, bias, eps, implementation)
    return ref.poly_com_reference(x, weight, bias, base, kind, eps, prelu_weight)


def relu2(x: torch.Tensor) -> torch.Tensor:
    """Squared ReLU."""
    check_float_tensor(x, "x")
    return ref.relu2_reference(x)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """SwiGLU: ``silu(gate) * up``."""
    check_float_tensor(gate, "gate")
    check_float_tensor(up, "up")
    check_same_shape(gate, up, "gate", "up")
    return ref.swiglu_reference(gate, up)


def geglu(gate: torch.Tensor, up: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """GEGLU: ``gelu(gate) * up``."""
    check_float_tensor(gate, "gate")
    check_float_tensor(up, "up")
    check_same_shape(gate, up, "gate", "up")
    return ref.geglu_reference(gate, up, approximate)
