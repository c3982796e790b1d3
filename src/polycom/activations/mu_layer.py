r"""The Mu-layer of MONet as an MLP kind: an activation-free, multilinear MLP.

Cheng, Chrysos, Georgopoulos & Cevher, "Multilinear Operator Networks", ICLR 2024:

    Mu(x) = C [ (A x) * (Lambda x) + A x ],   Lambda = B D  (rank l),

A: d -> h, D: d -> l, B: l -> h, C: h -> d, ``*`` the elementwise (Hadamard) product;
the + A x shortcut keeps the degree-1 term, so the layer is a degree-2 polynomial of
x with no activation. Built by the MLP kind ``"mu"`` (``polycom.models.mlp.MuLayer``),
weights 2 d h + l (d + h), l = d / 2 (our choice; the rank is a fixed rule of d so the
width matching of ``matched_hidden`` is exact).

Registry entry ``mu_layer`` (kind ``mu``), dense and MoE models: MoE experts are
``polycom.models.mlp.MuExperts`` (A, D, B, C stacked per expert, grouped matmuls).
"""

from __future__ import annotations

from torch import nn

from ..registry import register_activation

__all__ = ["PAPER"]

PAPER = "Cheng, Chrysos, Georgopoulos, Cevher 2024, Multilinear Operator Networks (ICLR)"

register_activation("mu_layer", nn.Identity, mlp_kind="mu", paper=PAPER,
                    description="no activation: C((A x) * (B D x) + A x), low-rank B D (MLP kind mu)")
