"""PolyCom activation modules: PolyCom, PolyReLU, PolyNorm and gated PolyNorm.

Drop-in replacements for ``nn.GELU()``: ``mlp.act = polycom.PolyNorm()``. Each
instance owns its coefficients (one set per layer, as in the paper). Parameter
names and shapes match the official checkpoints: ``weight`` (r,) with
``weight[0]`` the highest-power coefficient, ``bias`` (1,) = a_0. Init as the
paper: every a_i = 1/r, a_0 = 0.
"""

from __future__ import annotations

import torch
from torch import nn

from . import functional as PF
from .reference import BASE_FUNCTIONS
from .validation import check_eps, check_order

__all__ = ["PolyCom", "PolyReLU", "PolyNorm", "GatedPolyNorm"]


class _Coefficients(nn.Module):
    """Holds ``weight`` (r,) and ``bias`` (1,) with the PolyCom init."""

    def __init__(self, order: int, device=None, dtype=None):
        super().__init__()
        check_order(order)
        self.order = order
        self.weight = nn.Parameter(torch.empty(order, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(1, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Zhuo et al. 2025, Section 4: a_1..a_r = 1/r, a_0 = 0.
        with torch.no_grad():
            self.weight.fill_(1.0 / self.order)
            self.bias.zero_()


class PolyCom(_Coefficients):
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
        if getattr(self, "prelu_weight", None) is not None:  # absent while _Coefficients.__init__ runs
            with torch.no_grad():
                self.prelu_weight.fill_(0.25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return PF.poly_com(x, self.weight, self.bias, self.base, self.kind, self.eps, self.prelu_weight, self.implementation)

    def extra_repr(self) -> str:
        s = f"base={self.base}, kind={self.kind}, order={self.order}"
        if self.base == "rmsnorm":
            s += f", eps={self.eps:g}"
        if self.implementation != "auto":
            s += f", implementation={self.implementation}"
        return s


class PolyReLU(PolyCom):
    """PolyReLU: ``a_0 + sum_{i=1..r} a_i * relu(x)^i`` (PolyCom Type I, rho = ReLU)."""

    def __init__(self, order: int = 3, implementation: str = "auto", device=None, dtype=None):
        super().__init__("relu", order, "I", implementation=implementation, device=device, dtype=dtype)

    def extra_repr(self) -> str:
        return f"order={self.order}" + (f", implementation={self.implementation}" if self.implementation != "auto" else "")


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


class GatedPolyNorm(_Coefficients):
    """Gated PolyNorm for GLU-style MLPs: ``forward(gate, up) = PolyNorm(gate) * up``.

    Used by Motif's models; with ``order=2`` it is Swiss AI's PNGLU (linear and
    quadratic terms only). Same ``weight``/``bias`` layout as :class:`PolyNorm`.
    """

    gated = True

    def __init__(self, order: int = 3, eps: float = 1e-6, implementation: str = "auto", device=None, dtype=None):
        check_eps(eps)
        super().__init__(order, device=device, dtype=dtype)
        self.eps = float(eps)
        self.implementation = implementation

    def forward(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return PF.gated_poly_norm(gate, up, self.weight, self.bias, self.eps, self.implementation)

    def extra_repr(self) -> str:
        s = f"order={self.order}, eps={self.eps:g}"
        return s + (f", implementation={self.implementation}" if self.implementation != "auto" else "")
