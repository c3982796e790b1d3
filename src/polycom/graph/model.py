"""Polynormer (Deng, Yue, Zhang, ICLR 2024, arXiv 2403.01232) with a polycom activation.

The paper's base model (Sec. 3) makes every layer a Hadamard product of two linear maps of its
input, x <- (A V x) * (H x + beta): the degree of the learned polynomial in the input features
doubles per layer, so L layers reach degree 2^L without any activation. Polynormer makes it
permutation-equivariant twice:

- **local** (graph topology in the coefficients): A is a message-passing layer on the graph, a
  ``GATConv`` (the paper's local attention) or a ``GCNConv``. Each layer l computes
      h = act(W_h x + b_h)
      y = dropout(act(BN(conv(x) + W_x x + b_x)))          (BN optional: PyG's ``post_bn``)
      x <- (1 - beta_l) * LN(h * y) + beta_l * y
  and the local output is the sum of the L layer outputs, x_local = sum_l x_l.
- **global** (node features in the coefficients): the linear attention of ``attention.py``,
      a = linear_global_attention(W_q x, W_k x, W_v x)
      x <- dropout(act(W_o (LN(a) * (W_h x + b_h + beta_g)) + b_o))
  on x = LN(x_local), one block per global layer, without a residual (as PyTorch Geometric's PolynormerAttention).

The two phases follow the paper's training schedule: the first epochs train the local module
with its own head (``pred_local``); then ``use_global(True)`` switches on the global blocks and
their head (``pred_global``), and training goes on from the warmed-up local weights.

beta is learnable (beta = sigmoid(b), one b per layer and channel, b = 0 at init, so beta = 0.5)
or fixed (a float in [0, 1]). ``act`` is any plain (not gated) registry activation, one module
per place so learnable coefficients are per layer, or ``none``: the paper's activation-free
Polynormer, a pure polynomial of the input features.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GATConv, GCNConv

from ..errors import UsageError
from ..registry import activation_info
from .attention import linear_global_attention

__all__ = ["PolynormerConfig", "Polynormer", "LocalLayer", "GlobalBlock", "graph_activation", "NO_ACTIVATION"]

NO_ACTIVATION = "none"
LOCAL_CONVS = ("gat", "gcn")


def graph_activation(name: str) -> nn.Module:
    """A fresh module for ``name``: ``none`` is the identity, anything else a plain registry activation."""
    if name == NO_ACTIVATION:
        return nn.Identity()
    try:
        info = activation_info(name)
    except (TypeError, ValueError) as e:
        raise UsageError(f"activation: {e}; or {NO_ACTIVATION!r} for the activation-free Polynormer") from None
    if info.gated or info.mlp_kind != "plain":
        raise UsageError(f"activation: {name!r} is not an elementwise act(x) (it is {info.mlp_kind}); "
                         "Polynormer applies its activation to one tensor")
    return info.build()


@dataclass(frozen=True)
class PolynormerConfig:
    in_channels: int
    out_channels: int
    hidden: int = 64  # channels per head
    heads: int = 1
    local_layers: int = 3
    global_layers: int = 2
    local_conv: str = "gat"  # "gat" (the paper's local attention) or "gcn"
    activation: str = "relu"  # registry name or "none"
    beta: float | None = None  # None: learnable, sigmoid(b) per layer and channel; a float in [0, 1]: fixed
    in_dropout: float = 0.15
    dropout: float = 0.5
    global_dropout: float = 0.5
    # A Linear in -> heads*hidden before the local layers; PyG builds one (lin_in) but never applies it,
    # so input_projection=False is PyG's model.
    input_projection: bool = True
    batch_norm: bool = False  # BatchNorm after conv + skip (PyTorch Geometric's post_bn)
    qk_shared: bool = True  # queries = keys in the global attention

    def __post_init__(self):
        for name in ("in_channels", "out_channels", "hidden", "heads", "local_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"{name}: expected a positive integer, got {value!r}")
        if not isinstance(self.global_layers, int) or self.global_layers < 0:
            raise UsageError(f"global_layers: expected an integer >= 0, got {self.global_layers!r}")
        if self.local_conv not in LOCAL_CONVS:
            raise UsageError(f"local_conv: expected one of {', '.join(LOCAL_CONVS)}, got {self.local_conv!r}")
        if self.beta is not None and not 0.0 <= self.beta <= 1.0:
            raise UsageError(f"beta: expected a float in [0, 1] (fixed) or None (learnable), got {self.beta!r}")
        for name in ("in_dropout", "dropout", "global_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UsageError(f"{name}: expected a probability in [0, 1), got {getattr(self, name)!r}")
        graph_activation(self.activation)  # names the field on a bad key

    @property
    def width(self) -> int:
        return self.heads * self.hidden

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


class _Beta(nn.Module):
    """beta of each of ``layers`` layers: fixed, or sigmoid of a learnable (layers, width) tensor at 0."""

    def __init__(self, layers: int, width: int, fixed: float | None):
        super().__init__()
        self.fixed = fixed
        if fixed is None:
            self.logit = nn.Parameter(torch.zeros(layers, width))

    def forward(self, layer: int) -> torch.Tensor | float:
        return self.fixed if self.fixed is not None else torch.sigmoid(self.logit[layer])


class LocalLayer(nn.Module):
    """One equivariant local attention layer: ``x <- (1 - beta) LN(h * y) + beta y`` (module docstring)."""

    def __init__(self, in_channels: int, config: PolynormerConfig):
        super().__init__()
        c, width = config, config.width
        self.h_lin = nn.Linear(in_channels, width)
        if c.local_conv == "gat":
            self.conv = GATConv(in_channels, c.hidden, heads=c.heads, concat=True, add_self_loops=False, bias=False)
        else:
            self.conv = GCNConv(in_channels, width, cached=False, normalize=True)
        self.skip = nn.Linear(in_channels, width)
        self.norm = nn.LayerNorm(width)
        self.batch_norm = nn.BatchNorm1d(width) if c.batch_norm else None
        self.dropout = c.dropout

    def forward(self, x, edge_index, beta, act_h: nn.Module, act_y: nn.Module) -> torch.Tensor:
        h = act_h(self.h_lin(x))
        y = self.conv(x, edge_index) + self.skip(x)
        if self.batch_norm is not None:
            y = self.batch_norm(y)
        y = F.dropout(act_y(y), p=self.dropout, training=self.training)
        return (1 - beta) * self.norm(h * y) + beta * y


class GlobalBlock(nn.Module):
    """One equivariant global attention block: ``x <- act(W_o (LN(a) * (W_h x + beta)))`` (module docstring)."""

    def __init__(self, config: PolynormerConfig):
        super().__init__()
        width = config.width
        self.heads, self.hidden = config.heads, config.hidden
        self.h_lin = nn.Linear(width, width)
        self.k = nn.Linear(width, width, bias=False)  # the paper's W_k, W_q, W_v have no bias
        self.q = None if config.qk_shared else nn.Linear(width, width, bias=False)
        self.v = nn.Linear(width, width, bias=False)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, width)
        self.dropout = config.global_dropout

    def forward(self, x, beta, act: nn.Module) -> torch.Tensor:
        n = x.shape[0]
        k = self.k(x).view(n, self.heads, self.hidden)  # (N, heads, d)
        q = k if self.q is None else self.q(x).view(n, self.heads, self.hidden)
        v = self.v(x).view(n, self.heads, self.hidden)
        a = linear_global_attention(q, k, v).reshape(n, -1)  # (N, heads * d)
        x = act(self.out(self.norm(a) * (self.h_lin(x) + beta)))
        return F.dropout(x, p=self.dropout, training=self.training)


class Polynormer(nn.Module):
    """Polynormer for node classification: ``model(x, edge_index)`` -> logits (N, out_channels).

    Built under ``torch.manual_seed(seed)`` the shared weights (every Linear, conv and norm)
    are drawn before any activation module, so two models of the same seed that differ only
    in their activation start from the same shared weights (the pairing of a comparison).
    """

    def __init__(self, config: PolynormerConfig):
        super().__init__()
        c, width = config, config.width
        self.config = config
        self.global_enabled = False
        self.input = nn.Linear(c.in_channels, width) if c.input_projection else None
        first = width if c.input_projection else c.in_channels
        self.local_layers = nn.ModuleList(LocalLayer(first if i == 0 else width, c) for i in range(c.local_layers))
        self.local_beta = _Beta(c.local_layers, width, c.beta)
        self.global_norm = nn.LayerNorm(width)
        self.global_blocks = nn.ModuleList(GlobalBlock(c) for _ in range(c.global_layers))
        self.global_beta = _Beta(c.global_layers, width, c.beta)
        self.pred_local = nn.Linear(width, c.out_channels)
        self.pred_global = nn.Linear(width, c.out_channels)
        # Last, so that they draw no random number before a shared weight (see the class docstring).
        self.local_acts = nn.ModuleList(graph_activation(c.activation) for _ in range(2 * c.local_layers))
        self.global_acts = nn.ModuleList(graph_activation(c.activation) for _ in range(c.global_layers))

    def use_global(self, enabled: bool = True) -> None:
        """Switch to the second phase of the schedule: local layers, then the global blocks and their head."""
        if enabled and not self.global_blocks:
            raise UsageError("global_layers: 0, so there is no global phase to switch on")
        self.global_enabled = enabled

    def local_forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """x_local = sum_l x_l over the local layers, (N, heads * hidden)."""
        x = F.dropout(x, p=self.config.in_dropout, training=self.training)
        if self.input is not None:
            x = F.dropout(self.input(x), p=self.config.dropout, training=self.training)
        total = 0
        for i, layer in enumerate(self.local_layers):
            x = layer(x, edge_index, self.local_beta(i), self.local_acts[2 * i], self.local_acts[2 * i + 1])
            total = total + x
        return total

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        x_local = self.local_forward(x, edge_index)
        if not self.global_enabled:
            return self.pred_local(x_local)
        x = self.global_norm(x_local)
        for i, block in enumerate(self.global_blocks):
            x = block(x, self.global_beta(i), self.global_acts[i])
        return self.pred_global(x)
