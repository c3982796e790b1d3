"""polycom's PolyNorm, PolyReLU and gated PolyNorm through the Hugging Face ``kernels`` library.

A model marks a layer as replaceable with ``@kernels.use_kernel_forward_from_hub("PolyNorm")``;
``kernels.kernelize(model, mode=..., device=...)`` then gives every such layer the ``forward`` of
the layer that a *kernel mapping* names for that layer name, device and mode. Usually the mapping
points at a repository on the Hub; ``kernel_mapping()`` points at polycom's layers below, in this
process (no download), for every mode, training and ``torch.compile`` included::

    from kernels import Mode, kernelize, use_kernel_mapping
    from polycom.kernels_hub import kernel_mapping

    with use_kernel_mapping(kernel_mapping()):
        model = kernelize(model, mode=Mode.TRAINING | Mode.TORCH_COMPILE, device="cuda")

Layer names (``LAYER_NAMES``) and the host layer each one serves:

- ``"PolyNorm"``: ``forward(x)``; a_0 + sum_i a_i N(x^i) over the last dim;
- ``"PolyReLU"``: ``forward(x)``; a_0 + sum_i a_i relu(x)^i;
- ``"GatedPolyNorm"``: ``forward(gate, up)``; PolyNorm(gate) * up.

The host keeps its parameters; the new forward reads them from it, in the layout of the
PolyCom paper's checkpoints and polycom's modules: ``weight`` (r,) with ``weight[0]`` the
coefficient of the highest power, ``bias`` (1,) or a scalar = a_0, and the normaliser's epsilon as
``eps`` (or ``variance_epsilon``; 1e-6, the paper's, if the host has neither). A host that
is a polycom module also passes its ``implementation`` and Motif ``bounds``. The forward
calls ``polycom.functional``: Triton kernels on CUDA, compiled or eager PyTorch elsewhere
(``ops/dispatch.py``), each tested against ``polycom.reference``.

kernels checks the replacement layers when it loads them: no constructor, no members other
than ``forward``, ``can_torch_compile`` and ``has_backward``, and a ``forward`` that takes the
host's arguments. This module imports neither ``kernels`` nor transformers; ``import polycom``
does not import it.
"""

from __future__ import annotations

import torch
from torch import nn

from .activations.gated_polynorm import gated_poly_norm
from .activations.polynorm import poly_norm
from .activations.polyrelu import poly_relu

__all__ = ["LAYER_NAMES", "DEVICES", "PolyNorm", "PolyReLU", "GatedPolyNorm", "PolycomRepository",
           "kernel_mapping"]

PAPER_EPS = 1e-6


def _eps(host: nn.Module) -> float:
    for name in ("eps", "variance_epsilon"):
        value = getattr(host, name, None)
        if value is not None:
            return value
    return PAPER_EPS


def _bias(host: nn.Module) -> torch.Tensor:
    """a_0 as polycom's (1,) tensor; some hosts keep it as a scalar (0-dim) parameter."""
    return host.bias.reshape(1) if host.bias.dim() == 0 else host.bias


class PolyNorm(nn.Module):
    """Replacement forward for a host PolyNorm layer (``forward(x)``)."""

    can_torch_compile = True
    has_backward = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return poly_norm(x, self.weight, _bias(self), _eps(self), getattr(self, "implementation", "auto"),
                         getattr(self, "bounds", None))


class PolyReLU(nn.Module):
    """Replacement forward for a host PolyReLU layer (``forward(x)``)."""

    can_torch_compile = True
    has_backward = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return poly_relu(x, self.weight, _bias(self), getattr(self, "implementation", "auto"))


class GatedPolyNorm(nn.Module):
    """Replacement forward for a host gated PolyNorm layer (``forward(gate, up)`` = PolyNorm(gate) * up)."""

    can_torch_compile = True
    has_backward = True

    def forward(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return gated_poly_norm(gate, up, self.weight, _bias(self), _eps(self), getattr(self, "implementation", "auto"),
                               getattr(self, "bounds", None))


LAYERS: dict[str, type[nn.Module]] = {"PolyNorm": PolyNorm, "PolyReLU": PolyReLU, "GatedPolyNorm": GatedPolyNorm}
LAYER_NAMES = tuple(LAYERS)
# Device types of kernels' mappings where polycom's ops run (Triton on cuda; compiled / eager PyTorch elsewhere).
DEVICES = ("cuda", "rocm", "cpu", "mps", "xpu")


class PolycomRepository:
    """A kernels layer repository (what ``kernels.LayerRepository`` is for a Hub repository) that
    is polycom itself: ``load()`` returns polycom's layer class, with no download."""

    def __init__(self, layer_name: str):
        if layer_name not in LAYERS:
            raise ValueError(f"argument 'layer_name' must be one of {list(LAYERS)}, got {layer_name!r}")
        self.layer_name = layer_name

    def load(self) -> type[nn.Module]:
        return LAYERS[self.layer_name]

    def __eq__(self, other) -> bool:
        return isinstance(other, PolycomRepository) and other.layer_name == self.layer_name

    def __hash__(self) -> int:
        return hash((PolycomRepository, self.layer_name))

    def __str__(self) -> str:
        return f"polycom (layer `{self.layer_name}`)"


def kernel_mapping(layer_names=LAYER_NAMES, devices=DEVICES) -> dict:
    """The mapping for ``kernels.use_kernel_mapping`` / ``register_kernel_mapping``: each layer name
    to polycom's layer on each device type. A repository given without modes is kernels' fallback,
    used in every mode (inference, training, with or without ``torch.compile``)."""
    return {name: {device: PolycomRepository(name) for device in devices} for name in layer_names}
