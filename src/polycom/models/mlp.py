"""Dense transformer MLP with a registry activation.

Non-gated: ``down(act(up(x)))`` (the paper's placement for ReLU, GELU,
PolyReLU, PolyNorm). Gated: ``down(act(gate(x), up(x)))`` (SwiGLU, gated
PolyNorm). Widths come from ``ModelConfig.mlp_hidden`` so every activation
gets the same parameter budget; ``.act`` is the activation module, one
instance per layer (own coefficients), and a natural place for hooks.
"""

from __future__ import annotations

import torch
from torch import nn

from ..registry import activation_info

__all__ = ["MLP"]


class MLP(nn.Module):
    """Two- or three-matrix MLP, no biases. ``hidden`` is the width actually built."""

    def __init__(self, d_model: int, hidden: int, activation: str, activation_kwargs: dict | None = None):
        super().__init__()
        info = activation_info(activation)
        self.gated = info.gated
        self.hidden = hidden
        self.up_proj = nn.Linear(d_model, hidden, bias=False)
        self.gate_proj = nn.Linear(d_model, hidden, bias=False) if self.gated else None
        self.act = info.build(**(activation_kwargs or {}))
        self.down_proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gated:
            return self.down_proj(self.act(self.gate_proj(x), self.up_proj(x)))
        return self.down_proj(self.act(self.up_proj(x)))
