"""Activation registry: one name -> a fresh module per call.

Models ask the registry for their activation by name, so swapping ReLU for
PolyNorm is a one-key change. Each family module in ``polycom.activations``
registers its activations when it is imported (``import polycom`` imports them
all). An entry records what a model needs before building the activation: the
MLP kind it goes into (``"plain"``: ``down(act(up(x)))``; ``"gated"``: the
activation takes ``(gate, up)`` and the MLP has a third projection, so for equal
parameters 2/3 of the hidden width, as in the paper: 5504 vs 8256 at d = 2048;
see ``polycom.models.mlp.MLP_KINDS``), a one-line description and the paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

__all__ = [
    "ActivationInfo",
    "register_activation",
    "get_activation",
    "activation_info",
    "list_activations",
    "registered",
]


@dataclass(frozen=True)
class ActivationInfo:
    """What a model needs to know about an activation before building it."""

    name: str
    factory: Callable[..., nn.Module]
    gated: bool
    description: str
    default_kwargs: dict = field(default_factory=dict)
    paper: str = ""
    mlp_kind: str = "plain"  # a name in polycom.models.mlp.MLP_KINDS

    def build(self, **kwargs) -> nn.Module:
        return self.factory(**{**self.default_kwargs, **kwargs})


_REGISTRY: dict[str, ActivationInfo] = {}


def register_activation(
    name: str,
    factory: Callable[..., nn.Module],
    *,
    gated: bool = False,
    description: str = "",
    paper: str = "",
    mlp_kind: str | None = None,
    default_kwargs: dict | None = None,
    overwrite: bool = False,
) -> ActivationInfo:
    """Add an activation under ``name`` (lower case). ``factory(**kwargs)`` must return a new module.

    ``gated=True``: the module is called as ``act(gate, up)``. ``mlp_kind`` (default
    ``"gated"`` if gated else ``"plain"``) names the MLP layout it is built into.
    """
    if not isinstance(name, str) or not name or name != name.lower():
        raise ValueError(f"argument 'name' must be a non-empty lower-case string, got {name!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"activation {name!r} is already registered; pass overwrite=True to replace it")
    if mlp_kind is not None and (not isinstance(mlp_kind, str) or not mlp_kind):
        raise ValueError(f"argument 'mlp_kind' must be a non-empty string (an MLP kind name), got {mlp_kind!r}")
    kind = mlp_kind or ("gated" if gated else "plain")
    info = ActivationInfo(name, factory, gated, description, dict(default_kwargs or {}), paper, kind)
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


def registered() -> list[ActivationInfo]:
    """Every registry entry, sorted by name."""
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]


def list_activations(gated: bool | None = None) -> list[str]:
    """Registered names, sorted; ``gated=True/False`` filters by calling convention."""
    return [i.name for i in registered() if gated is None or i.gated == gated]
