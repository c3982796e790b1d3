"""General PolyCom: a_0 + sum_i a_i rho(x)^i (Type I) or a_0 + sum_i a_i rho(x^i) (Type II).

Zhuo et al., "Polynomial Composition Activations: Unleashing the Dynamics of Large
Language Models", ICLR 2025, eq. (1), with rho one of ``BASE_FUNCTIONS``. (relu, I)
is PolyReLU and (rmsnorm, II) is PolyNorm: their own modules (``polyrelu``,
``polynorm``) subclass :class:`PolyCom` and this module routes those two
combinations to their fast paths through ``polycom.ops.dispatch``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import dispatch
from ..reference import compute_dtype, rms_normalize
from ..registry import register_activation
from ..validation import check_coefficients, check_eps, check_float_tensor
from .coefficients import PolyCoefficients

__all__ = ["BASE_FUNCTIONS", "poly_com_reference", "poly_com", "PolyCom"]

PAPER = "Zhuo et al., Polynomial Composition Activations, ICLR 2025"


def _prelu(x: torch.Tensor, slope: torch.Tensor | None) -> torch.Tensor:
    if slope is None:
        raise ValueError("base 'prelu' needs a slope tensor (argument 'prelu_weight')")
    return F.prelu(x, slope.to(x.dtype))


BASE_FUNCTIONS = {
    "relu": lambda x, eps, slope: torch.relu(x),
    "prelu": lambda x, eps, slope: _prelu(x, slope),
    "gelu": lambda x, eps, slope: F.gelu(x),
    "silu": lambda x, eps, slope: F.silu(x),
    "sigmoid": lambda x, eps, slope: torch.sigmoid(x),
    "rmsnorm": lambda x, eps, slope: rms_normalize(x, eps),
}
"""The base functions rho of general PolyCom (Zhuo et al. 2025, Section 3)."""


def poly_com_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    base: str = "relu",
    kind: str = "I",
    eps: float = 1e-6,
    prelu_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """General PolyCom of order r = len(weight), Zhuo et al. 2025, eq. (1):

        Type I:  PolyCom(x) = a_0 + sum_{i=1..r} a_i * rho(x)^i   (rho, then powers)
        Type II: PolyCom(x) = a_0 + sum_{i=1..r} a_i * rho(x^i)   (powers, then rho)

    with a_i = weight[r - i], a_0 = bias, and rho one of ``BASE_FUNCTIONS``.
    PolyReLU is (relu, I) and PolyNorm is (rmsnorm, II); this direct form is
    used for the other combinations (for 'rmsnorm' it is not overflow-safe the
    way ``poly_norm_reference`` is).
    """
    r = weight.numel()
    rho = BASE_FUNCTIONS[base]
    dt = compute_dtype(x.dtype)
    xf = x.to(dt)
    w = weight.to(dt)
    out = bias.to(dt).expand_as(xf)
    if kind == "I":
        act = rho(xf, eps, prelu_weight)
        terms = [act.pow(i) for i in range(1, r + 1)]
    else:
        terms = [rho(xf.pow(i), eps, prelu_weight) for i in range(1, r + 1)]
    for i, term in enumerate(terms, start=1):
        out = out + w[r - i] * term
    return out.to(x.dtype)


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
    if base not in BASE_FUNCTIONS:
        raise ValueError(f"unknown base {base!r}; valid bases: {sorted(BASE_FUNCTIONS)}")
    if kind not in ("I", "II"):
        raise ValueError(f"kind must be 'I' (rho then powers) or 'II' (powers then rho), got {kind!r}")
    if base == "relu" and kind == "I":
        return dispatch.call("poly_relu", implementation, x, weight, bias, order=weight.numel())
    if base == "rmsnorm" and kind == "II":
        return dispatch.call("poly_norm", implementation, x, weight, bias, eps, math.inf, order=weight.numel())
    return poly_com_reference(x, weight, bias, base, kind, eps, prelu_weight)


class PolyCom(PolyCoefficients):
    """General polynomial composition activation of order r.

    Type I: ``a_0 + sum_i a_i * rho(x)^i``; Type II: ``a_0 + sum_i a_i * rho(x^i)``,
    with rho in {relu, prelu, gelu, silu, sigmoid, rmsnorm}. For ``prelu`` the
    slope is a learnable scalar ``prelu_weight`` (init 0.25, as ``nn.PReLU``).

    Args:
        base: the base function rho.
        order: r >= 1.
        kind: "I" or "II".
        eps: added to the mean square inside the RMS normalisation.
        implementation: "auto" or a path name from ``polycom.ops.IMPLEMENTATIONS``
            (used for the PolyReLU and PolyNorm instances).
    """

    @property
    def tensor_parallel_rule(self) -> str:
        """How ``train/tensor_parallel.py`` runs this on a column shard of the hidden vector."""
        if self.base == "rmsnorm":
            return ("a PolyCom with base 'rmsnorm' normalises over the hidden vector and has no statistics "
                    "all_reduce")
        return "elementwise"

    def __init__(
        self,
        base: str = "relu",
        order: int = 3,
        kind: str = "I",
        eps: float = 1e-6,
        implementation: str = "auto",
        device=None,
        dtype=None,
    ):
        if base not in BASE_FUNCTIONS:
            raise ValueError(f"argument 'base' must be one of {sorted(BASE_FUNCTIONS)}, got {base!r}")
        if kind not in ("I", "II"):
            raise ValueError(f"argument 'kind' must be 'I' (rho then powers) or 'II' (powers then rho), got {kind!r}")
        check_eps(eps)
        super().__init__(order, device=device, dtype=dtype)
        self.base = base
        self.kind = kind
        self.eps = float(eps)
        self.implementation = implementation
        self.prelu_weight = None
        if base == "prelu":
            self.prelu_weight = nn.Parameter(torch.empty(1, device=device, dtype=dtype))
            self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if getattr(self, "prelu_weight", None) is not None:  # absent while PolyCoefficients.__init__ runs
            with torch.no_grad():
                self.prelu_weight.fill_(0.25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return poly_com(x, self.weight, self.bias, self.base, self.kind, self.eps, self.prelu_weight, self.implementation)

    def extra_repr(self) -> str:
        s = f"base={self.base}, kind={self.kind}, order={self.order}"
        if self.base == "rmsnorm":
            s += f", eps={self.eps:g}"
        if self.implementation != "auto":
            s += f", implementation={self.implementation}"
        return s


register_activation("polycom", PolyCom, description="general PolyCom(base, order, kind)", paper=PAPER)
register_activation("polyprelu", PolyCom, description="a0 + sum_i a_i prelu(x)^i (paper ablation)", paper=PAPER,
                    default_kwargs={"base": "prelu", "kind": "I"})
