"""The network of the rate sweep: an MLP with any registered activation, in float64.

Plain activations (``forward(x)``):

    h_0 = x,   h_l = act_l(W_l h_{l-1} + b_l)  (l = 1..depth),   f(x) = w_out . h_depth + b_out

Gated activations (``forward(gate, up)``: swiglu, geglu, gated_polynorm, pnglu) get the
gated MLP of the transformer, h_l = act_l(G_l h_{l-1} + c_l, U_l h_{l-1} + e_l): one
more matrix per layer, so at equal width they have more parameters; the sweep's
x-axis is the parameter count, so they are compared at equal parameters anyway.

Each layer gets a fresh activation module (``polycom.get_activation``), so learnable
coefficients (PolyReLU, PolyNorm: a_0..a_3, order 3, init a_i = 1/3, a_0 = 0) are per
layer and trained with the weights; they count in the parameter count. PolyNorm is
not elementwise: N(z) = z / sqrt(mean(z^2) + eps) is taken over the ``width`` hidden
units of each input point, per power, so a PolyNorm MLP is this MLP with that
normalisation inside every hidden layer.
"""

from __future__ import annotations

import torch
from torch import nn

from ...registry import activation_info

__all__ = ["ApproxMLP", "count_parameters"]


class _GatedLayer(nn.Module):
    def __init__(self, d_in: int, width: int, act: nn.Module):
        super().__init__()
        self.gate = nn.Linear(d_in, width, dtype=torch.float64)
        self.up = nn.Linear(d_in, width, dtype=torch.float64)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.gate(x), self.up(x))


class _PlainLayer(nn.Module):
    def __init__(self, d_in: int, width: int, act: nn.Module):
        super().__init__()
        self.linear = nn.Linear(d_in, width, dtype=torch.float64)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.linear(x))


class ApproxMLP(nn.Module):
    """``depth`` hidden layers of ``width`` units with activation ``activation``, scalar output."""

    def __init__(self, d_in: int, width: int, depth: int, activation: str):
        super().__init__()
        info = activation_info(activation)
        layer = _GatedLayer if info.gated else _PlainLayer
        dims = [d_in] + [width] * depth
        self.hidden = nn.ModuleList(
            layer(a, b, info.build().to(torch.float64)) for a, b in zip(dims[:-1], dims[1:]))
        self.out = nn.Linear(width, 1, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, d) -> (N,)
        for layer in self.hidden:
            x = layer(x)
        return self.out(x).squeeze(-1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
