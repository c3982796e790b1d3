"""Activation registry: one name -> a fresh module per call.

Models ask the registry for their activation by name, so swapping ReLU for
PolyNorm is a one-key change. Each entry records whether the activation is
gated (``forward(gate, up)``; the MLP then has a third projection and, to keep
parameters equal, 2/3 of the hidden width, as in the paper: 5504 vs 8256 at
d = 2048) and whether it has learnable coefficients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from .activations import GatedPolyNorm, PolyCom, PolyNorm, PolyReLU
from .baselines import GEGLU, ReLU2, SwiGLU

__all__ = ["ActivationInfo", "register_activation", "get_activation", "activation_info", "list_activations"]


@dataclass(frozen=True)
class ActivationInfo:
    """What a model needs to know about an activation before building it."""

    name: str
    factory: Callable[..., nn.Module]
    gated: bool
    description: str
    default_kwargs: dict = field(default_factory=dict)

    def build(self, **kwargs) -> nn.Module:
        return self.factory(**{**self.default_kwargs, **kwargs})


_REGISTRY: dict[str, ActivationInfo] = {}


def register_activation(
    name: str,
    factory: Callable[..., nn.Module],
    *,
    gated: bool = False,
    description: str = "",
    default_kwargs: dict | None = None,
    overwrite: bool = False,
) -> ActivationInfo:
    """Add an activation under ``name`` (lower case). ``factory(**kwargs)`` must return a new module."""
    if not isinstance(name, str) or not name or name != name.lower():
        raise ValueError(f"argument 'name' must be a non-empty lower-case string, got {name!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"activation {name!r} is already registered; pass overwrite=True to replace it")
    info = ActivationInfo(name, factory, gated, description, dict(default_kwargs or {}))
    _REGISTRY[name] = info
    return info


def activation_info(name: str) -> ActivationInfo:
    """The registry entry for ``name``; a ``ValueError`` lists the valid names."""
    if not isinstance(name, str):
        raise TypeError(f"argument 'name' must be a string, got {type(name).__name__}")
    key = name.lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown activation {name!r}; valid names: {', '.join(list_activations())}")
    return _REGISTRY[key]


def get_activation(name: str, **kwargs) -> nn.Module:
    """A new module for activation ``name`` (independent parameters on every call)."""
    return activation_info(name).build(**kwargs)


def list_activations(gated: bool | None = None) -> list[str]:
    """Registered names, sorted; ``gated=True/False`` filters by calling convention."""
    return sorted(n for n, i in _REGISTRY.items() if gated is None or i.gated == gated)


def _register_builtins() -> None:
    reg = register_activation
    reg("relu", nn.ReLU, description="max(0, x)")
    reg("gelu", nn.GELU, description="exact GELU, x * Phi(x)")
    reg("gelu_tanh", nn.GELU, description="tanh-approximated GELU", default_kwargs={"approximate": "tanh"})
    reg("silu", nn.SiLU, description="x * sigmoid(x)")
    reg("relu2", ReLU2, description="relu(x)^2 (Primer)")
    reg("swiglu", SwiGLU, gated=True, description="silu(gate) * up (the paper's gated baseline)")
    reg("geglu", GEGLU, gated=True, description="gelu(gate) * up")
    reg("polyrelu", PolyReLU, description="a0 + sum_i a_i relu(x)^i (PolyCom Type I)")
    reg("polynorm", PolyNorm, description="a0 + sum_i a_i N(x^i), N = RMS norm (PolyCom Type II)")
    reg("polycom", PolyCom, description="general PolyCom(base, order, kind)")
    reg("polyprelu", PolyCom, description="a0 + sum_i a_i prelu(x)^i (paper ablation)",
        default_kwargs={"base": "prelu", "kind": "I"})
    reg("gated_polynorm", GatedPolyNorm, gated=True, description="PolyNorm(gate) * up (Motif)")
    reg("pnglu", GatedPolyNorm, gated=True, description="PolyNorm of order 2 (gate) * up (Swiss AI PNGLU)",
        default_kwargs={"order": 2})


_register_builtins()
