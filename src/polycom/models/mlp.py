"""Dense transformer MLP with a registry activation, and the registry of MLP kinds.

An MLP kind is a layout of the MLP around its activation, and knows its weight
count as a function of (d_model, hidden), so widths are matched to a parameter
budget for any kind (``matched_hidden``):

- ``plain``: ``down(act(up(x)))``, 2 d h weights (the paper's placement for ReLU,
  GELU, PolyReLU, PolyNorm);
- ``gated``: ``down(act(gate(x), up(x)))``, 3 d h weights (SwiGLU, gated PolyNorm).

Both are built by :class:`MLP` from their projections. A layer that is not
``down(act(...(x)))`` (a multiplicative or KAN layer) registers a kind with its
own ``build`` function and ``parameters`` count; ``build_mlp`` then builds it, and
its ``build_experts`` (stacked per-expert weights, ``grouped.StackedExperts``) makes
it an MoE expert. Kinds: ``mu`` (below), ``afkan`` (``af_kan.py``).
Each activation's registry entry names its kind (``ActivationInfo.mlp_kind``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..registry import activation_info
from .grouped import ExpertGroups, StackedExperts, grouped_linear

__all__ = ["MLP", "MLPKind", "MLP_KINDS", "register_mlp_kind", "mlp_kind", "matched_hidden", "build_mlp"]


@dataclass(frozen=True)
class MLPKind:
    """One MLP layout.

    Attributes:
        parameters: (d_model, hidden) -> number of weights, the activation's own excluded.
        projections: the d_model -> hidden input projections ``<name>_proj`` of :class:`MLP`
            (and of each MoE expert), in state-dict order; empty for a kind with its own ``build``.
        activation_inputs: the projections the activation is called with, in call order.
        build: (d_model, hidden, activation, activation_kwargs) -> module, for a kind that
            :class:`MLP` does not build (None: :class:`MLP`).
        build_experts: (d_model, hidden, num_experts, activation, activation_kwargs,
            per_expert_coefficients) -> a ``grouped.StackedExperts`` computing, for each
            routed row, the ``build`` module with that row's expert's weights; None for the
            kinds with projections (the MoE stacks those itself) or a dense-only kind.
    """

    name: str
    description: str
    parameters: Callable[[int, int], int]
    projections: tuple[str, ...] = ()
    activation_inputs: tuple[str, ...] = ()
    build: Callable[..., nn.Module] | None = None
    build_experts: Callable[..., nn.Module] | None = None


MLP_KINDS: dict[str, MLPKind] = {}


def register_mlp_kind(kind: MLPKind, overwrite: bool = False) -> MLPKind:
    """Add ``kind`` under ``kind.name``."""
    if kind.name in MLP_KINDS and not overwrite:
        raise ValueError(f"MLP kind {kind.name!r} is already registered; pass overwrite=True to replace it")
    if kind.build is None and not kind.activation_inputs:
        raise ValueError(f"MLP kind {kind.name!r} needs either projections and activation_inputs or a build function")
    MLP_KINDS[kind.name] = kind
    return kind


def mlp_kind(name: str) -> MLPKind:
    """The kind ``name``; a ``ValueError`` lists the valid names."""
    if name not in MLP_KINDS:
        raise ValueError(f"unknown MLP kind {name!r}; valid kinds: {sorted(MLP_KINDS)}")
    return MLP_KINDS[name]


register_mlp_kind(MLPKind("plain", "down(act(up(x)))", lambda d, h: 2 * d * h, ("up",), ("up",)))
register_mlp_kind(MLPKind("gated", "down(act(gate(x), up(x)))", lambda d, h: 3 * d * h, ("up", "gate"), ("gate", "up")))


def _nearest_width(kind: MLPKind, d_model: int, target: int, multiple: int) -> int:
    """The positive multiple of ``multiple`` whose weight count is nearest ``target`` (ties: the wider).

    Counts grow with the width, so the answer is the first multiple at or above the
    target or the one below it; found by doubling, then bisection.
    """
    count = kind.parameters
    hi = 1  # in units of `multiple`
    while count(d_model, hi * multiple) < target:
        hi *= 2
    lo = hi // 2  # count(lo * multiple) < target, or lo == 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count(d_model, mid * multiple) < target:
            lo = mid
        else:
            hi = mid
    if lo >= 1 and target - count(d_model, lo * multiple) < count(d_model, hi * multiple) - target:
        return lo * multiple
    return hi * multiple


def matched_hidden(hidden: int, kind: str, multiple_of: int, d_model: int, reference_kind: str = "plain") -> int:
    """Width of a ``kind`` MLP with the weights of a ``reference_kind`` MLP of width ``hidden``.

    The one width-matching rule of polycom (model configs and ``hf.swap_activation``):
    the multiple of ``multiple_of`` whose weight count is nearest the reference's
    (ties: the wider), e.g. gated from plain: 2h/3 rounded, 8256 -> 5504 at multiple 64;
    plain from gated: 3h/2. If that misses the budget by more than 1% (small widths),
    the multiple is halved until it does not, so the match always holds within 1%.
    The same kind returns ``hidden`` unchanged.
    """
    if kind == reference_kind:
        return hidden
    target = mlp_kind(reference_kind).parameters(d_model, hidden)
    k = mlp_kind(kind)
    m = multiple_of
    while True:
        h = _nearest_width(k, d_model, target, m)
        if m == 1 or abs(k.parameters(d_model, h) - target) <= 0.01 * target:
            return h
        m = max(1, m // 2)


def build_mlp(d_model: int, hidden: int, activation: str, activation_kwargs: dict | None = None) -> nn.Module:
    """The MLP of ``activation``'s kind, ``hidden`` wide."""
    kind = mlp_kind(activation_info(activation).mlp_kind)
    if kind.build is not None:
        return kind.build(d_model, hidden, activation, activation_kwargs)
    return MLP(d_model, hidden, activation, activation_kwargs)


class MLP(nn.Module):
    """Two- or three-matrix MLP, no biases. ``hidden`` is the width actually built.

    Has ``up_proj``, ``gate_proj`` (None for a plain kind), ``act`` (the activation
    module, one instance per layer, own coefficients; a natural place for hooks) and
    ``down_proj``.
    """

    def __init__(self, d_model: int, hidden: int, activation: str, activation_kwargs: dict | None = None):
        super().__init__()
        info = activation_info(activation)
        kind = mlp_kind(info.mlp_kind)
        if kind.build is not None:
            raise ValueError(f"activation {activation!r} has MLP kind {kind.name!r}, which MLP does not build; "
                             "use build_mlp")
        self.kind, self.gated, self.hidden = kind.name, info.gated, hidden
        self.gate_proj = None
        for name in kind.projections:
            setattr(self, f"{name}_proj", nn.Linear(d_model, hidden, bias=False))
        self.act = info.build(**(activation_kwargs or {}))
        self.down_proj = nn.Linear(hidden, d_model, bias=False)
        self._inputs = tuple(f"{name}_proj" for name in kind.activation_inputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(*[getattr(self, name)(x) for name in self._inputs]))


# --- Mu-layer (Cheng et al. 2024, "Multilinear Operator Networks", ICLR): an MLP with no activation.
MU_RANK_FRACTION = 0.5  # l = d / 2: our choice of the rank of Lambda = B D (a fixed rule of d, so counts are exact)


def mu_rank(d_model: int) -> int:
    return max(1, round(MU_RANK_FRACTION * d_model))


class MuLayer(nn.Module):
    """y = C((A x) * (B D x) + A x): the Mu-layer of MONet, multilinear (degree 2 in x), no activation.

    A (``up_proj``: d -> h), D (``rank_down``: d -> l), B (``rank_up``: l -> h), C
    (``down_proj``: h -> d), ``*`` the elementwise product, ``A x`` the shortcut that keeps
    the first-degree term. Lambda = B D is the paper's low-rank factorisation (rank l =
    ``mu_rank(d)``). Weights: 2 d h + l (d + h). The normalisation of x is the
    transformer block's pre-norm.
    """

    def __init__(self, d_model: int, hidden: int, activation: str = "mu_layer", activation_kwargs: dict | None = None):
        super().__init__()
        if activation_kwargs:
            raise ValueError(f"MLP kind 'mu' takes no activation_kwargs, got {activation_kwargs!r}")
        rank = mu_rank(d_model)
        self.hidden, self.rank = hidden, rank
        self.up_proj = nn.Linear(d_model, hidden, bias=False)  # A
        self.rank_down = nn.Linear(d_model, rank, bias=False)  # D
        self.rank_up = nn.Linear(rank, hidden, bias=False)  # B
        self.down_proj = nn.Linear(hidden, d_model, bias=False)  # C

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.up_proj(x)  # (..., h)
        return self.down_proj(a * self.rank_up(self.rank_down(x)) + a)


class MuExperts(StackedExperts):
    """E Mu-layers with stacked weights: row i is ``MuLayer`` with expert ``groups.expert[i]``'s A, D, B, C.

    Four grouped matmuls (A, D, then B, then C) over the padded (E, C, .) buffer, no
    per-expert loop; parameter names and shapes are ``MuLayer``'s with a leading E.
    """

    def __init__(self, d_model: int, hidden: int, num_experts: int, activation: str = "mu_layer",
                 activation_kwargs: dict | None = None, per_expert_coefficients: bool = False):
        super().__init__(num_experts)
        if activation_kwargs:
            raise ValueError(f"MLP kind 'mu' takes no activation_kwargs, got {activation_kwargs!r}")
        rank = mu_rank(d_model)
        self.hidden, self.rank = hidden, rank
        self.stacked("up_proj", hidden, d_model)  # A, (E, h, d)
        self.stacked("rank_down", rank, d_model)  # D, (E, l, d)
        self.stacked("rank_up", hidden, rank)  # B, (E, h, l)
        self.stacked("down_proj", d_model, hidden)  # C, (E, d, h)

    def forward(self, xs: torch.Tensor, groups: ExpertGroups) -> torch.Tensor:
        a = grouped_linear(xs, self.up_proj, groups)  # (M, h)
        lam_x = grouped_linear(grouped_linear(xs, self.rank_down, groups), self.rank_up, groups)  # (M, h)
        return grouped_linear(a * lam_x + a, self.down_proj, groups)  # (M, d)


register_mlp_kind(MLPKind("mu", "C((A x) * (B D x) + A x), rank(B D) = d/2 (MONet Mu-layer)",
                          lambda d, h: 2 * d * h + mu_rank(d) * (d + h), build=MuLayer, build_experts=MuExperts))
