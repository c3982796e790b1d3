"""Baseline activations with polycom's interface.

Non-gated modules take ``forward(x)``; gated ones take ``forward(gate, up)``
(the MLP computes both projections and the activation combines them), the same
calling convention as :class:`polycom.GatedPolyNorm`.
"""

from __future__ import annotations

import torch
from torch import nn

from . import functional as PF

__all__ = ["ReLU2", "SwiGLU", "GEGLU"]


class ReLU2(nn.Module):
    """Squared ReLU, relu(x)^2 (Primer). PolyReLU with a_2 = 1 and the rest 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return PF.relu2(x)


class SwiGLU(nn.Module):
    """``silu(gate) * up``: the gated baseline of the PolyCom paper."""

    gated = True

    def forward(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return PF.swiglu(gate, up)


class GEGLU(nn.Module):
    """``gelu(gate) * up``, exact or tanh-approximated GELU."""

    gated = True

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"argument 'approximate' must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return PF.geglu(gate, up, self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate}"
