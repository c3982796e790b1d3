"""Gated PolyNorm, PolyNorm(gate) * up, for GLU-style MLPs (Motif; with r = 2, Swiss AI's PNGLU).

Not in the PolyCom paper (Zhuo et al., ICLR 2025): the GLU-style use of PolyNorm
found in the wild (Motif's models; Swiss AI's PNGLU). The
family: formula, functional form, module and registry entries ("gated_polynorm",
"pnglu"); its fast paths are the op of ``ops/gated_poly_norm.py``.
"""

from __future__ import annotations

import math

import torch

from ..ops import dispatch
from ..ops import gated_poly_norm as gated_poly_norm_op
from ..ops.sharded_poly_norm import sharded_poly_norm
from ..reference import compute_dtype
from ..registry import register_activation
from ..validation import check_coefficients, check_eps, check_float_tensor, check_same_shape
from dataclasses import asdict

from .coefficients import PolyCoefficients
from .polynorm import bounds_repr, poly_norm_reference
from .polynorm_bounds import MOTIF_BOUNDS, PolyNormBounds, fused_arguments

__all__ = ["gated_poly_norm_reference", "gated_poly_norm", "GatedPolyNorm"]


def gated_poly_norm_reference(
    gate: torch.Tensor, up: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-6,
    input_bound: float = math.inf,
) -> torch.Tensor:
    """Gated PolyNorm, PolyNorm(gate) * up (Motif's models; with r = 2, Swiss AI's PNGLU).

    Not in the PolyCom paper; the GLU-style use of PolyNorm found in the wild. ``input_bound`` clamps
    the gate, as ``poly_norm_reference``'s.
    """
    dt = compute_dtype(gate.dtype)
    act = poly_norm_reference(gate.to(dt), weight, bias, eps, input_bound)
    return (act * up.to(dt)).to(gate.dtype)


def gated_poly_norm(
    gate: torch.Tensor,
    up: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float = 1e-6,
    implementation: str = "auto",
    bounds: PolyNormBounds | None = None,
    statistics_group=None,
) -> torch.Tensor:
    """Gated PolyNorm: ``PolyNorm(gate) * up``; ``bounds`` and ``statistics_group`` as ``poly_norm``'s."""
    check_float_tensor(gate, "gate")
    check_float_tensor(up, "up")
    check_same_shape(gate, up, "gate", "up")
    check_coefficients(weight, bias, gate)
    check_eps(eps)
    weight, bias, input_bound = fused_arguments(bounds, weight, bias)
    if statistics_group is not None:
        return sharded_poly_norm(gate, up, weight, bias, None, eps, input_bound, implementation, statistics_group)
    return dispatch.call("gated_poly_norm", implementation, gate, up, weight, bias, eps, input_bound,
                         order=weight.numel())


class GatedPolyNorm(PolyCoefficients):
    """Gated PolyNorm for GLU-style MLPs: ``forward(gate, up) = PolyNorm(gate) * up``.

    Used by Motif's models; with ``order=2`` it is Swiss AI's PNGLU (linear and
    quadratic terms only). Same ``weight``/``bias`` layout as ``PolyNorm``; ``statistics_group``
    as ``PolyNorm``'s.
    """

    tensor_parallel_rule = "statistics"  # normalises over the row: TP all_reduces its statistics

    gated = True
    statistics_group = None

    def __init__(self, order: int = 3, eps: float = 1e-6, implementation: str = "auto", device=None, dtype=None, *,
                 sigmoid_coefficients: bool = False, bias_bound: float | None = None, output_scale: float = 1.0,
                 input_bound: float | None = None):
        check_eps(eps)
        self.bounds = PolyNormBounds(sigmoid_coefficients, bias_bound, output_scale, input_bound)
        super().__init__(order, device=device, dtype=dtype)
        self.eps = float(eps)
        self.implementation = implementation

    def reset_parameters(self) -> None:
        super().reset_parameters()
        with torch.no_grad():
            self.weight.fill_(self.bounds.initial_weight(self.order))

    def forward(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return gated_poly_norm(gate, up, self.weight, self.bias, self.eps, self.implementation, self.bounds,
                               self.statistics_group)

    def extra_repr(self) -> str:
        s = f"order={self.order}, eps={self.eps:g}"
        if not self.bounds.is_paper:
            s += f", {bounds_repr(self.bounds)}"
        return s + (f", implementation={self.implementation}" if self.implementation != "auto" else "")


dispatch.register_op("gated_poly_norm", reference=gated_poly_norm_reference, kernels=gated_poly_norm_op.KERNELS)
register_activation("gated_polynorm", GatedPolyNorm, gated=True, description="PolyNorm(gate) * up (Motif)",
                    paper="Motif's models (GLU-style PolyNorm); PolyNorm: Zhuo et al., ICLR 2025")
register_activation("pnglu", GatedPolyNorm, gated=True, description="PolyNorm of order 2 (gate) * up (Swiss AI PNGLU)",
                    paper="Swiss AI's PNGLU; PolyNorm: Zhuo et al., ICLR 2025", default_kwargs={"order": 2})
register_activation("motif_gated_polynorm", GatedPolyNorm, gated=True, default_kwargs=asdict(MOTIF_BOUNDS),
                    description="Motif's bounded PolyNorm (motif_polynorm) of the gate * up",
                    paper="Motif Technologies' PolyNorm models; PolyNorm: Zhuo et al., ICLR 2025")
