"""The learnable coefficients every PolyCom family shares, in the official layout.

Parameter names and shapes match the official checkpoints (Zhuo et al. 2025,
``Open-Foundation-Models/PolyNorm_1B``): ``weight`` (r,) with ``weight[0]`` the
highest-power coefficient, ``bias`` (1,) = a_0. Init as the paper: every
a_i = 1/r, a_0 = 0. Each module instance owns its set (one per layer).
"""

from __future__ import annotations

import torch
from torch import nn

from ..validation import check_order

__all__ = ["PolyCoefficients"]


class PolyCoefficients(nn.Module):
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
