"""Rows grouped by expert and the grouped matmul: the batched core of every MoE expert layout.

The MoE (``moe.py``) sorts its M routed (token, expert) rows by expert; ``ExpertGroups``
records where each row sits in a zero-padded (E, C, .) buffer (C = the largest group),
and ``grouped_linear`` multiplies every row by its own expert's matrix with one
``torch.bmm`` over that buffer. The experts of the plain and gated kinds (``moe.py``)
and of the kinds with their own layer (``mlp.py``'s Mu-layer, ``af_kan.py``) all use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["ExpertGroups", "grouped_linear", "StackedExperts"]


@dataclass
class ExpertGroups:
    """Where each packed row sits in the padded (E, C, .) buffer."""

    counts: list[int]  # rows per expert
    expert: torch.Tensor  # (M,) expert of each packed row
    slot: torch.Tensor  # (M,) position inside its expert's group
    capacity: int  # C = the largest group

    @classmethod
    def from_sorted(cls, sorted_expert: torch.Tensor, num_experts: int) -> "ExpertGroups":
        counts = torch.bincount(sorted_expert, minlength=num_experts)
        starts = torch.cumsum(counts, 0) - counts  # (E,)
        slot = torch.arange(sorted_expert.numel(), device=sorted_expert.device) - starts[sorted_expert]
        counts_list = counts.tolist()  # one host sync per layer: the buffer size depends on it
        return cls(counts_list, sorted_expert, slot, max(counts_list) if counts_list else 0)




def grouped_linear(x: torch.Tensor, weight: torch.Tensor, groups: ExpertGroups) -> torch.Tensor:
    """Row i of x times expert ``groups.expert[i]``'s matrix: x (M, in), weight (E, out, in) -> (M, out)."""
    E, _, n_in = weight.shape
    padded = x.new_zeros(E, groups.capacity, n_in)  # (E, C, in)
    padded[groups.expert, groups.slot] = x
    out = torch.bmm(padded, weight.transpose(1, 2))  # (E, C, out)
    return out[groups.expert, groups.slot]  # (M, out)


class StackedExperts(nn.Module):
    """Base of the MoE experts of an MLP kind with its own layer (``MLPKind.build_experts``).

    A subclass holds each expert matrix stacked as one (E, out, in) parameter in
    ``nn.Linear`` layout (expert e's matrix is ``param[e]``, made by ``stacked``) and each
    per-expert vector as one flat (E * n,) parameter (``stacked_vector``; flat so that the
    optimizer's rule "ndim >= 2: weight decay" leaves gains and biases undecayed, as
    in the dense layer), and implements ``forward(xs, groups) -> (M, d_model)`` with
    ``grouped_linear``: row i of xs goes through expert ``groups.expert[i]`` only.
    Parameters made otherwise are shared by the experts.
    """

    OUT_WEIGHTS: tuple[str, ...] = ("down_proj",)  # matrices writing to the residual stream

    def __init__(self, num_experts: int):
        super().__init__()
        self.num_experts = num_experts
        self._per_expert: set[str] = set()

    def stacked(self, name: str, out_features: int, in_features: int) -> None:
        """Register ``name``: an (E, out, in) expert matrix, N(0, 0.02^2) until the model's init replaces it."""
        self._per_expert.add(name)
        self.register_parameter(name, nn.Parameter(
            torch.empty(self.num_experts, out_features, in_features).normal_(std=0.02)))

    def stacked_vector(self, name: str, size: int, fill: float) -> None:
        """Register ``name``: E vectors of ``size`` held flat (E * size,), every entry ``fill``."""
        self._per_expert.add(name)
        self.register_parameter(name, nn.Parameter(torch.full((self.num_experts * size,), float(fill))))

    def per_row(self, name: str, groups: ExpertGroups) -> torch.Tensor:
        """Each routed row's expert's vector ``name``: (M, size)."""
        return getattr(self, name).view(self.num_experts, -1)[groups.expert]

    def stacked_weights(self):
        """(name, parameter, is_output) of every stacked matrix, for the model's initialisation."""
        for name, p in self.named_parameters(recurse=False):
            if name in self._per_expert and p.dim() == 3:
                yield name, p, name in self.OUT_WEIGHTS

    def active_params(self, top_k: int) -> int:
        """Parameters one token touches: top_k experts' tensors and every shared one."""
        return sum(top_k * p.numel() // self.num_experts if name in self._per_expert else p.numel()
                   for name, p in self.named_parameters())
