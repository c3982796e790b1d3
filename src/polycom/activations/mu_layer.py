r"""The Mu-layer of MONet as an MLP kind: an activation-free, multilinear MLP.

Cheng, Chrysos, Georgopoulos & Cevher, "Multilinear Operator Networks", ICLR 2024:

    Mu(x) = C [ (A x) * (Lambda x) + A x ],   Lambda = B D  (rank l),

A: d -> h, D: d -> l, B: l -> h, C: h -> d, ``*`` the elementwise (Hadamard) product;
the + A x shortcut keeps the degree-1 term, so the layer is a degree-2 polynomial of
x with no activation. Built by the MLP kind ``"mu"`` (``polycom.models.mlp.MuLayer``),
weights 2 d h + l (d + h), l = d / 2 (our choice; the rank is a fixed rule of d so the
width matching of ``matched_hidden`` is exact).

Registry entries:

- ``mu_layer`` (kind ``mu``): dense models only. MoE experts are stacked d -> h
  projections followed by ``act(...)`` and a down projection (``models/moe.py``); the
  low-rank factor B D passes through an l-wide layer, which that layout cannot hold,
  so an MoE model with ``mu_layer`` is refused (the MoE error names the kind).
- ``mu_layer_full_rank`` (gated kind): the same layer with a full-rank Lambda, i.e.
  act(gate, up) = up * gate + up with up = A x, gate = Lambda x: three d x h matrices,
  which the gated layout (dense and MoE) holds, matched like SwiGLU.
"""

from __future__ import annotations

import torch
from torch import nn

from ..registry import register_activation

__all__ = ["MuProduct", "PAPER"]

PAPER = "Cheng, Chrysos, Georgopoulos, Cevher 2024, Multilinear Operator Networks (ICLR)"


class MuProduct(nn.Module):
    """act(gate, up) = up * gate + up: the Mu-layer's product and shortcut, gate = Lambda x, up = A x."""

    def forward(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(up, up, gate)


register_activation("mu_layer", nn.Identity, mlp_kind="mu", paper=PAPER,
                    description="no activation: C((A x) * (B D x) + A x), low-rank B D (MLP kind mu, dense only)")
register_activation("mu_layer_full_rank", MuProduct, gated=True, paper=PAPER,
                    description="Mu-layer with full-rank Lambda: down(up * gate + up), gated layout (MoE too)")
