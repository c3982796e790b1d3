"""Mixture-of-experts MLP: token-choice top-k routing, dropless, grouped matmuls.

Data flow for N tokens, E experts, top-k (M = N * k routed rows):

1. Router: scores s = W_r x (or act(W_r x) / tau), p = softmax(s) over experts,
   keep the top-k, optionally renormalise them to sum to 1 (OLMoE-style).
2. Dispatch: sort the M (token, expert) pairs by expert (a stable argsort of a
   static size): each expert's rows become one contiguous group; no token is
   dropped (no capacity factor). Group sizes and ends stay on the device.
3. Grouped matmul (``grouped.grouped_linear``): ``torch._grouped_mm`` with the
   group ends where it runs, else fixed-size tiles and one ``torch.bmm``; every
   shape depends on (N, k, E) only, never on the routing's values.
4. The activation runs on the packed (M, expert_hidden) rows: each row is one
   token's full hidden vector in one expert, so PolyNorm's RMS statistics are
   over exactly that vector, whatever the batch layout (the official code got
   this right for one block-sparse layout only). With per-expert
   coefficients, each expert's activation module sees only its own group.
5. Combine: outputs are weighted by the routing probabilities and summed per
   token with ``index_add_``.

No step reads a routed value on the host (no ``.tolist()``, ``.item()`` or branch
on the data), so a layer never waits for the device and the whole model compiles
with ``torch.compile(fullgraph=True)``. Expert parallelism would split at steps 2
and 5 (an all-to-all each; docs/architecture.md).

A kind with its own layer (the Mu-layer, AF-KAN: ``MLPKind.build_experts``) replaces
steps 3-4 by its ``experts`` module, which runs the whole layer on the packed rows
with every expert tensor stacked (the same grouped matmuls, no loop over experts).

Auxiliary losses (both returned per layer, averaged over layers by the model):
- load balance (Switch / OLMoE): E * sum_e f_e * P_e, f_e = share of the M
  routed rows sent to expert e, P_e = mean router probability of e (1 when
  perfectly balanced);
- router z-loss (ST-MoE): mean over tokens of logsumexp(s)^2.

"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..activations import GatedPolyNorm, PolyNorm
from ..activations.grouped_polynorm import grouped_gated_poly_norm, grouped_poly_norm
from ..registry import activation_info
from .config import MoEConfig
from .grouped import ExpertGroups, grouped_linear
from .mlp import build_mlp, mlp_kind

__all__ = ["Router", "MoE", "ExpertActivations", "grouped_linear", "load_balance_loss", "router_z_loss"]

_ROUTER_FUNCTIONS = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "identity": lambda s: s}


def load_balance_loss(probs: torch.Tensor, expert_idx: torch.Tensor, num_experts: int) -> torch.Tensor:
    """E * sum_e f_e P_e; probs (N, E) full softmax, expert_idx (N, k) chosen experts."""
    flat = expert_idx.reshape(-1)
    counts = probs.new_zeros(num_experts).index_add_(0, flat, probs.new_ones(flat.shape))  # static (E,), unlike bincount
    f = counts / expert_idx.numel()  # share of routed rows per expert; f is not differentiable
    return num_experts * (f * probs.mean(0)).sum()


def router_z_loss(scores: torch.Tensor) -> torch.Tensor:
    """mean over tokens of logsumexp(scores)^2 (Zoph et al. 2022); scores (N, E)."""
    return torch.logsumexp(scores, dim=-1).pow(2).mean()


class Router(nn.Module):
    """Linear scores -> softmax over experts -> top-k (weights, indices)."""

    def __init__(self, d_model: int, cfg: MoEConfig):
        super().__init__()
        self.num_experts, self.top_k, self.renormalize = cfg.num_experts, cfg.top_k, cfg.renormalize
        self.kind = cfg.router
        self.temperature = cfg.router_temperature  # a plain attribute: a trainer may anneal it
        self.gate = nn.Linear(d_model, cfg.num_experts, bias=False)
        self.score_act = None
        if cfg.router == "act_softmax" and cfg.router_activation not in _ROUTER_FUNCTIONS:
            self.score_act = activation_info(cfg.router_activation).build()
        self.act_name = cfg.router_activation

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        s = self.gate(x).float()  # (N, E), routing in fp32
        if self.kind == "act_softmax":
            act = self.score_act if self.score_act is not None else _ROUTER_FUNCTIONS[self.act_name]
            s = act(s) / self.temperature
        return s

    def forward(self, x: torch.Tensor):
        """x (N, d) -> scores (N, E), probs (N, E), top_w (N, k), top_idx (N, k)."""
        s = self.scores(x)
        probs = F.softmax(s, dim=-1)
        top_w, top_idx = torch.topk(probs, self.top_k, dim=-1)
        if self.renormalize:
            top_w = top_w / top_w.sum(-1, keepdim=True)
        return s, probs, top_w, top_idx


class ExpertActivations(nn.Module):
    """One activation module per expert (Motif's per-expert coefficients).

    ``forward(h, [up,] groups)``: row i of h belongs to expert ``groups.expert[i]``. PolyNorm and
    gated PolyNorm experts run as one grouped op (each row with its expert's coefficients, one
    kernel launch for all experts; ``activations/grouped_polynorm.py``); one without parameters
    or buffers runs once on every row (the experts' modules are alike); any other activation
    runs once per expert on every row, keeping that expert's rows (E times the elementwise work,
    but static shapes: a group's rows, taken out, would have a size known only on the device).
    The state dict holds one module per expert either way (``experts.<e>.weight``). Under tensor
    parallelism the grouped op sums each row's statistics over the experts' ``statistics_group``.
    """

    def __init__(self, activation: str, num_experts: int, activation_kwargs: dict | None = None):
        super().__init__()
        info = activation_info(activation)
        self.gated = info.gated
        self.experts = nn.ModuleList(info.build(**(activation_kwargs or {})) for _ in range(num_experts))
        first = self.experts[0]
        self.grouped = type(first) in (PolyNorm, GatedPolyNorm)  # exactly these: a subclass may change forward
        # Built alike with nothing to learn (GELU, SwiGLU): every expert computes one function, run once.
        self.stateless = not any(True for _ in first.parameters()) and not any(True for _ in first.buffers())

    def forward(self, h: torch.Tensor, *rest):
        *up, groups = rest
        if self.grouped:
            first = self.experts[0]
            weight = torch.stack([act.weight for act in self.experts])  # (E, r)
            bias = torch.stack([act.bias for act in self.experts])  # (E, 1)
            options = (first.eps, first.implementation, first.bounds)  # one construction for every expert
            # Under tensor parallelism h holds some of each row's columns; train.tensor_parallel sets
            # every expert's statistics_group (the experts' own forward, which would read it, is not run).
            group = getattr(first, "statistics_group", None)
            if self.gated:
                return grouped_gated_poly_norm(h, up[0], weight, bias, groups.expert, *options, statistics_group=group)
            return grouped_poly_norm(h, weight, bias, groups.expert, *options, statistics_group=group)
        if self.stateless:
            return self.experts[0](h, up[0]) if self.gated else self.experts[0](h)
        # A loop over experts (not tokens): each expert has its own coefficients.
        out = None
        for e, act in enumerate(self.experts):
            y = act(h, up[0]) if self.gated else act(h)
            out = y if out is None else torch.where((groups.expert == e).unsqueeze(-1), y, out)
        return out


class MoE(nn.Module):
    """Dropless top-k MoE MLP; ``forward(x)`` returns (output, aux_loss) with aux already weighted."""

    def __init__(self, d_model: int, hidden: int, activation: str, cfg: MoEConfig,
                 activation_kwargs: dict | None = None):
        super().__init__()
        info = activation_info(activation)
        kind = mlp_kind(info.mlp_kind)
        if not kind.projections and kind.build_experts is None:
            raise ValueError(f"activation {activation!r} has MLP kind {kind.name!r}, which has no expert "
                             "layout; MoE experts need a kind with projections or a build_experts")
        self.cfg, self.gated, self.hidden = cfg, info.gated, hidden
        self.num_experts, self.top_k = cfg.num_experts, cfg.top_k
        self.router = Router(d_model, cfg)
        E = cfg.num_experts
        self.gate_proj = None
        self.experts, self.act = None, None
        if kind.projections:
            # Stacked expert weights in nn.Linear layout (E, out, in), one per projection of the kind.
            for name in kind.projections:
                setattr(self, f"{name}_proj", nn.Parameter(torch.empty(E, hidden, d_model)))
            self.down_proj = nn.Parameter(torch.empty(E, d_model, hidden))
            self._inputs = tuple(f"{name}_proj" for name in kind.activation_inputs)
            for name in (*kind.projections, "down"):
                nn.init.normal_(getattr(self, f"{name}_proj"), std=0.02)
            if cfg.coefficients == "per_expert":
                self.act = ExpertActivations(activation, E, activation_kwargs)
            else:
                self.act = info.build(**(activation_kwargs or {}))
        else:
            # A kind with its own layer (Mu-layer, AF-KAN): its experts module computes the whole expert.
            self.experts = kind.build_experts(d_model, hidden, E, activation, activation_kwargs,
                                              cfg.coefficients == "per_expert")
        self.shared_expert = build_mlp(d_model, hidden, activation, activation_kwargs) if cfg.shared_expert else None
        self.last_stats: dict[str, torch.Tensor] = {}

    def _activate(self, xs: torch.Tensor, groups: ExpertGroups) -> torch.Tensor:
        extra = (groups,) if isinstance(self.act, ExpertActivations) else ()
        inputs = [grouped_linear(xs, getattr(self, name), groups) for name in self._inputs]  # each (M, h)
        return self.act(*inputs, *extra)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # (N, d)
        scores, probs, top_w, top_idx = self.router(x)
        flat_expert = top_idx.reshape(-1)  # (M,), row j belongs to token j // k
        order = torch.argsort(flat_expert, stable=True)
        token = order // self.top_k  # (M,) token of each sorted row
        groups = ExpertGroups.from_sorted(flat_expert[order], self.num_experts)
        xs = x[token]  # (M, d)
        if self.experts is not None:
            ys = self.experts(xs, groups)  # (M, d)
        else:
            ys = grouped_linear(self._activate(xs, groups), self.down_proj, groups)  # (M, d)
        ys = ys * top_w.reshape(-1)[order].unsqueeze(-1).to(ys.dtype)
        out = ys.new_zeros(x.shape).index_add_(0, token, ys)  # (N, d), ys's dtype under autocast
        if self.shared_expert is not None:
            out = out + self.shared_expert(x)
        lb = load_balance_loss(probs, top_idx, self.num_experts)
        z = router_z_loss(scores)
        self.last_stats = {"load_balance": lb.detach(), "z_loss": z.detach(),
                           "tokens_per_expert": groups.counts.detach()}  # on the device, read only by a logger
        aux = self.cfg.aux_loss_weight * lb + self.cfg.z_loss_weight * z
        return out.view(shape), aux

    def stacked_weights(self):
        """(name, parameter, is_output) of every stacked (E, out, in) expert matrix, for the model's init."""
        if self.experts is not None:
            for name, p, is_out in self.experts.stacked_weights():
                yield f"experts.{name}", p, is_out
            return
        for key in ("up_proj", "gate_proj", "down_proj"):
            w = getattr(self, key, None)
            if w is not None:
                yield key, w, key == "down_proj"

    def active_params(self) -> int:
        """Parameters one token touches: router, top_k experts, shared expert, activations."""
        shared = sum(p.numel() for p in self.shared_expert.parameters()) if self.shared_expert else 0
        if self.experts is not None:
            return self.router.gate.weight.numel() + self.experts.active_params(self.top_k) + shared
        per_expert = sum(p[0].numel() for name, p in self.named_parameters(recurse=False) if name.endswith("_proj"))
        act = sum(p.numel() for p in self.act.parameters())
        if isinstance(self.act, ExpertActivations):
            act = act * self.top_k // self.num_experts
        return self.router.gate.weight.numel() + self.top_k * per_expert + act + shared

    def extra_repr(self) -> str:
        return (f"num_experts={self.num_experts}, top_k={self.top_k}, hidden={self.hidden}, "
                f"router={self.cfg.router}, coefficients={self.cfg.coefficients}")

