"""The bounded PolyNorm of released models (Motif): options of PolyNorm and gated PolyNorm.

Motif Technologies' PolyNorm models (Motif-2.6B, Motif-2-12.7B, Motif-3-Beta with a PolyNorm per
routed expert) bound the polynomial. With the paper's PolyNorm P(x; a, a_0) = a_0 + sum_i a_i N(x^i):

    y = s * P(clamp(x, -c_x, c_x); sigma(w), clamp(b, -c_b, c_b))

- ``sigmoid_coefficients``: the stored ``weight`` holds logits w, a_i = sigmoid(w[r - i]) in (0, 1);
- ``bias_bound`` c_b (Motif: 0.5): a_0 = clamp(bias, -c_b, c_b);
- ``output_scale`` s (Motif: 0.5);
- ``input_bound`` c_x (Motif: 1e6): the input is clamped before the powers.

Parameter layout is the paper's (``weight`` (r,), ``weight[0]`` for the highest power, ``bias``
(1,)); only what the stored values mean changes. The defaults are the paper's PolyNorm (no option
set). The output scale is folded into the coefficients, s * P = P(x; s a, s a_0), exact in real
arithmetic, and the coefficient maps act on r + 1 numbers, so every path (reference, eager,
compiled, Triton) runs them unchanged. The input clamp is a constant of the fused ops
(``input_bound``, inf for none; ``ops/poly_norm.py``): their kernels clamp x as they read it and
mask the input gradient with -c_x <= x <= c_x, so a bounded PolyNorm reads and writes what the
plain one does. The reference formulas clamp explicitly (the ground truth).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["PolyNormBounds", "MOTIF_BOUNDS", "fused_arguments"]


def _check_positive(value, name: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"argument '{name}' must be a finite number > 0 or None, got {value!r}")


@dataclass(frozen=True)
class PolyNormBounds:
    """Motif's bounds on PolyNorm (module docstring); the defaults are the paper's PolyNorm."""

    sigmoid_coefficients: bool = False
    bias_bound: float | None = None
    output_scale: float = 1.0
    input_bound: float | None = None

    def __post_init__(self):
        if not isinstance(self.sigmoid_coefficients, bool):
            raise TypeError(f"argument 'sigmoid_coefficients' must be a bool, got {self.sigmoid_coefficients!r}")
        _check_positive(self.bias_bound, "bias_bound")
        _check_positive(self.output_scale, "output_scale")
        _check_positive(self.input_bound, "input_bound")

    @property
    def is_paper(self) -> bool:
        return self == PolyNormBounds()

    def coefficients(self, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a in the weight layout, a_0) that the plain PolyNorm formula uses: the maps and the scale applied."""
        if self.sigmoid_coefficients:
            weight = torch.sigmoid(weight)
        if self.bias_bound is not None:
            bias = bias.clamp(-self.bias_bound, self.bias_bound)
        if self.output_scale != 1.0:
            weight, bias = weight * self.output_scale, bias * self.output_scale
        return weight, bias

    def initial_weight(self, order: int) -> float:
        """The stored init value of every weight entry: the paper's a_i = 1/r, as a logit under the sigmoid
        (order 1 cannot reach a_1 = 1 through a sigmoid: it starts at a_1 = 1/2)."""
        if not self.sigmoid_coefficients:
            return 1.0 / order
        return -math.log(order - 1) if order > 1 else 0.0


def fused_arguments(bounds: PolyNormBounds | None, weight: torch.Tensor, bias: torch.Tensor):
    """(weight, bias, input_bound) for the PolyNorm ops: the coefficients mapped and scaled, and the input
    bound (inf for none), which the ops apply inside their kernels."""
    if bounds is None or bounds.is_paper:
        return weight, bias, math.inf
    input_bound = math.inf if bounds.input_bound is None else float(bounds.input_bound)
    return (*bounds.coefficients(weight, bias), input_bound)


MOTIF_BOUNDS = PolyNormBounds(sigmoid_coefficients=True, bias_bound=0.5, output_scale=0.5, input_bound=1e6)
