"""Baseline activations with polycom's interface: ReLU, GELU, SiLU, ReLU^2, SwiGLU, GEGLU.

Non-gated modules take ``forward(x)``; gated ones take ``forward(gate, up)``
(the MLP computes both projections and the activation combines them), the same
calling convention as ``polycom.GatedPolyNorm``. ReLU, GELU and SiLU are
PyTorch's own modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_activation
from ..validation import check_float_tensor, check_same_shape

__all__ = [
    "relu2_reference",
    "swiglu_reference",
    "geglu_reference",
    "relu2",
    "swiglu",
    "geglu",
    "ReLU2",
    "SwiGLU",
    "GEGLU",
]


def relu2_reference(x: torch.Tensor) -> torch.Tensor:
    """Squared ReLU, relu(x)^2 (So et al. 2021, Primer)."""
    return torch.relu(x).square()


def swiglu_reference(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """SwiGLU, silu(gate) * up (Shazeer 2020)."""
    return F.silu(gate) * up


def geglu_reference(gate: torch.Tensor, up: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """GEGLU, gelu(gate) * up (Shazeer 2020)."""
    return F.gelu(gate, approximate=approximate) * up


def relu2(x: torch.Tensor) -> torch.Tensor:
    """Squared ReLU."""
    check_float_tensor(x, "x")
    return relu2_reference(x)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """SwiGLU: ``silu(gate) * up``."""
    check_float_tensor(gate, "gate")
    check_float_tensor(up, "up")
    check_same_shape(gate, up, "gate", "up")
    return swiglu_reference(gate, up)


def geglu(gate: torch.Tensor, up: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """GEGLU: ``gelu(gate) * up``."""
    check_float_tensor(gate, "gate")
    check_float_tensor(up, "up")
    check_same_shape(gate, up, "gate", "up")
    return geglu_reference(gate, up, approximate)


class ReLU2(nn.Module):
    """Squared ReLU, relu(x)^2 (Primer). PolyReLU with a_2 = 1 and the rest 0."""

    tensor_parallel_rule = "elementwise"  # one function per feature: a column shard needs nothing (TP)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return relu2(x)


class SwiGLU(nn.Module):
    """``silu(gate) * up``: the gated baseline of the PolyCom paper."""

    tensor_parallel_rule = "elementwise"  # one function per feature: a column shard needs nothing (TP)

    gated = True

    def forward(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return swiglu(gate, up)


class GEGLU(nn.Module):
    """``gelu(gate) * up``, exact or tanh-approximated GELU."""

    tensor_parallel_rule = "elementwise"  # one function per feature: a column shard needs nothing (TP)

    gated = True

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"argument 'approximate' must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return geglu(gate, up, self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate}"


_GELU = "Hendrycks & Gimpel 2016, Gaussian Error Linear Units"
_GLU = "Shazeer 2020, GLU Variants Improve Transformer"
register_activation("relu", nn.ReLU, description="max(0, x)", paper="Nair & Hinton 2010")
register_activation("gelu", nn.GELU, description="exact GELU, x * Phi(x)", paper=_GELU)
register_activation("gelu_tanh", nn.GELU, description="tanh-approximated GELU", paper=_GELU,
                    default_kwargs={"approximate": "tanh"})
register_activation("silu", nn.SiLU, description="x * sigmoid(x)", paper="Elfwing et al. 2018; Ramachandran et al. 2017")
register_activation("relu2", ReLU2, description="relu(x)^2 (Primer)", paper="So et al. 2021, Primer")
register_activation("swiglu", SwiGLU, gated=True, description="silu(gate) * up (the paper's gated baseline)", paper=_GLU)
register_activation("geglu", GEGLU, gated=True, description="gelu(gate) * up", paper=_GLU)
