"""Where things are in a model: weight matrices by (layer, kind, expert), MLP activations, blocks.

Found by module names and structure, not by class, so the same code reads
polycom's ``Transformer`` (dense and MoE), ``PolyComForCausalLM`` and Llama-family
Hugging Face models (``model.layers.3.self_attn.q_proj``, ``mlp.act_fn``, Mixtral's
``experts.5.w1``):

- the layer index is the number after the first ``layers`` / ``h`` / ``blocks`` in a name;
- the matrix kind comes from the last name component (``MATRIX_KINDS``);
- an expert is ``experts.J`` in a name (one ``nn.Linear`` per expert) or the leading
  dimension of a 3-d parameter (polycom's stacked (E, out, in) expert weights);
- an MLP activation is the ``act`` / ``act_fn`` submodule of a module that also has
  an ``up_proj``/``gate_proj``/``w1`` matrix (polycom's MLP and MoE, HF's MLPs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import AnalysisError

__all__ = ["AnalysisError", "Matrix", "MlpActivation", "MATRIX_KINDS", "weight_matrices", "mlp_activations",
           "find_blocks"]


# Last name component -> matrix kind. w1/w2/w3 are Mixtral's expert names (gate, down, up).
MATRIX_KINDS = {
    "q_proj": "q", "wq": "q", "query": "q",
    "k_proj": "k", "wk": "k", "key": "k",
    "v_proj": "v", "wv": "v", "value": "v",
    "o_proj": "o", "wo": "o", "out_proj": "o",
    "up_proj": "up", "w3": "up", "fc1": "up",
    "gate_proj": "gate", "w1": "gate",
    "down_proj": "down", "w2": "down", "fc2": "down",
}
_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)(?:\.|$)")
_EXPERT = re.compile(r"(?:^|\.)experts\.(\d+)(?:\.|$)")
_ACT_NAMES = ("act", "act_fn")
_WRAPPERS = re.compile(r"(^|\.)(?:module|_orig_mod)\.")


@dataclass(frozen=True)
class Matrix:
    """One weight matrix (out, in) and where it sits."""

    name: str  # parameter name, with "[j]" for expert j of a stacked parameter
    layer: int | None
    kind: str
    expert: int | None
    weight: torch.Tensor


@dataclass(frozen=True)
class MlpActivation:
    name: str  # module name of the activation, e.g. "layers.2.mlp.act"
    layer: int | None
    module: nn.Module


def _strip(name: str) -> str:
    """Names as the user wrote the model: drop DDP's ``module.`` and compile's ``_orig_mod.``."""
    return _WRAPPERS.sub(r"\1", name)


def layer_of(name: str) -> int | None:
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def weight_matrices(model: nn.Module) -> list[Matrix]:
    """Every attention/MLP weight matrix of ``model`` whose kind is known, experts one by one."""
    out = []
    for name, p in model.named_parameters():
        parts = _strip(name).split(".")
        component = parts[-2] if parts[-1] == "weight" else parts[-1]  # Linear.weight or a bare Parameter
        kind = MATRIX_KINDS.get(component)
        if kind is None or p.ndim not in (2, 3):
            continue
        full = _strip(name)
        layer = layer_of(full)
        if p.ndim == 3:  # stacked experts (E, out, in)
            out += [Matrix(f"{full}[{j}]", layer, kind, j, p[j]) for j in range(p.shape[0])]
        else:
            e = _EXPERT.search(full)
            out.append(Matrix(full, layer, kind, int(e.group(1)) if e else None, p))
    return out


def mlp_activations(model: nn.Module) -> list[MlpActivation]:
    """The activation module of every MLP, in model order; ``AnalysisError`` when there is none."""
    found = []
    for name, m in model.named_modules():
        if not any(isinstance(getattr(m, k, None), (nn.Linear, nn.Parameter)) for k in ("up_proj", "gate_proj", "w1")):
            continue
        for attr in _ACT_NAMES:
            act = getattr(m, attr, None)
            if isinstance(act, nn.Module):
                full = _strip(f"{name}.{attr}" if name else attr)
                found.append(MlpActivation(full, layer_of(full), act))
    if not found:
        raise AnalysisError(f"{type(model).__name__} has no MLP activations: expected MLP modules with an "
                            "'act' or 'act_fn' submodule next to up_proj/gate_proj (polycom.models, Llama-family "
                            "Hugging Face models)")
    return found


def find_blocks(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks: the longest ``ModuleList`` named layers / h / blocks."""
    lists = [m for n, m in model.named_modules()
             if isinstance(m, nn.ModuleList) and n.split(".")[-1] in ("layers", "h", "blocks") and len(m)]
    if not lists:
        raise AnalysisError(f"{type(model).__name__} has no list of transformer blocks "
                            "(a ModuleList named 'layers', 'h' or 'blocks')")
    return max(lists, key=len)
