"""Put polycom activations into existing Hugging Face models.

Two tools:

- ``register_hf_activations()``: adds polycom's non-gated activations to
  ``transformers.activations.ACT2FN`` under their registry names ("polynorm",
  "polyrelu", ...), so ``LlamaConfig(hidden_act="polynorm")`` builds gated
  PolyNorm MLPs (``down(PolyNorm(gate) * up)``), one coefficient set per layer.
  Names HF already defines (e.g. "relu2", "gelu") are left untouched, so models
  that do not use polycom's names behave exactly as before.
- ``swap_activation(model, name, mode=...)``: edits a built Llama-family model
  (any MLP with ``gate_proj``, ``up_proj``, ``down_proj`` and ``act_fn``:
  Llama, Mistral, Qwen2, ...) and returns a ``SwapReport``.
  ``mode="gated"`` keeps the three matrices and replaces ``act_fn`` (weights
  kept). With a registered name it sets ``config.hidden_act`` and, for Llama, Mistral and
  Qwen2, ``make_portable`` gives the model a polycom model type whose saved folder loads
  without polycom (``trust_remote_code=True``; ``hf/remote/modeling_polycom_swap.py``).
  ``mode="non_gated"`` replaces each MLP by polycom's
  ``down(act(up(x)))`` MLP of width 3h/2 (same parameter count, by
  ``polycom.models.mlp.matched_hidden``, the rule model configs use), newly
  initialised: the pretrained MLP weights cannot be carried over.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.activations import ACT2FN

from ..models.mlp import MLP, matched_hidden
from ..registry import activation_info, list_activations
from .remote import modeling_polycom_swap as portable

__all__ = ["register_hf_activations", "swap_activation", "make_portable", "SwapReport", "GATED_AS_ACT_FN",
           "PORTABLE_CLASSES"]

# transformers class -> (its polycom subclass, that subclass's config): a model type of their own with remote code.
PORTABLE_CLASSES = {
    portable.LlamaForCausalLM: (portable.PolyComLlamaForCausalLM, portable.PolyComLlamaConfig),
    portable.MistralForCausalLM: (portable.PolyComMistralForCausalLM, portable.PolyComMistralConfig),
    portable.Qwen2ForCausalLM: (portable.PolyComQwen2ForCausalLM, portable.PolyComQwen2Config),
}
for _model_class, _config_class in PORTABLE_CLASSES.values():
    _config_class.register_for_auto_class()
    _model_class.register_for_auto_class("AutoModelForCausalLM")

# A gated polycom activation act(gate, up) is act_fn(gate) * up for these act_fn.
GATED_AS_ACT_FN = {
    "gated_polynorm": ("polynorm", {}),
    "pnglu": ("polynorm", {"order": 2}),
    "swiglu": ("silu", {}),
    "geglu": ("gelu", {}),
}


def register_hf_activations() -> list[str]:
    """Add polycom's elementwise (plain-MLP) activations to ACT2FN where the name is free; returns the
    names added. Layers that replace the whole MLP (e.g. ``mu_layer``) are not activations an HF MLP can call."""
    added = []
    for name in list_activations(gated=False):
        if name not in ACT2FN and activation_info(name).mlp_kind == "plain":
            ACT2FN[name] = (activation_info(name).build, {})  # ACT2FN builds a fresh module per lookup
            added.append(name)
    return added


@dataclass
class SwapReport:
    """What ``swap_activation`` changed."""

    activation: str
    mode: str
    modules: list[str] = field(default_factory=list)
    old_activations: list[str] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    hidden_act: str | None = None  # config.hidden_act after the swap (None: config not updated)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"swap_activation: {len(self.modules)} MLPs -> {self.activation} ({self.mode}); "
                 f"replaced {sorted(set(self.old_activations))}; "
                 f"params {self.params_before:,} -> {self.params_after:,}"]
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


def _is_gated_mlp(m: nn.Module) -> bool:
    return all(isinstance(getattr(m, a, None), nn.Linear) for a in ("gate_proj", "up_proj", "down_proj")) and \
        hasattr(m, "act_fn")


def swap_activation(model: nn.Module, activation: str, mode: str = "gated",
                    activation_kwargs: dict | None = None, multiple_of: int = 2) -> SwapReport:
    """Replace the activation of every Llama-style MLP in ``model``.

    Args:
        activation: a polycom registry name. In "gated" mode a non-gated name
            becomes act_fn (``act(gate) * up``); a gated name must be one of
            ``GATED_AS_ACT_FN``. In "non_gated" mode it must be non-gated.
        mode: "gated" (keep gate/up/down, swap act_fn) or "non_gated" (new
            2-matrix MLP with the gated MLP's weight count, its width a multiple
            of ``multiple_of``: ``matched_hidden``).
    """
    if mode not in ("gated", "non_gated"):
        raise ValueError(f"argument 'mode' must be 'gated' or 'non_gated', got {mode!r}")
    info = activation_info(activation)  # ValueError lists the valid names
    kwargs = dict(activation_kwargs or {})
    act_name, act_kwargs = activation, kwargs
    if info.gated:
        if mode == "non_gated" or activation not in GATED_AS_ACT_FN:
            raise ValueError(f"activation {activation!r} is gated; for mode={mode!r} use one of "
                             f"{list_activations(gated=False) if mode == 'non_gated' else list(GATED_AS_ACT_FN)}")
        act_name, base_kwargs = GATED_AS_ACT_FN[activation]
        act_kwargs = {**base_kwargs, **kwargs}
    targets = [(n, m) for n, m in model.named_modules() if _is_gated_mlp(m)]
    if not targets:
        raise ValueError("swap_activation found no MLP with gate_proj, up_proj, down_proj and act_fn "
                         f"in {type(model).__name__} (supported: Llama, Mistral, Qwen2-style MLPs)")
    report = SwapReport(activation, mode, params_before=sum(p.numel() for p in model.parameters()))
    std = getattr(getattr(model, "config", None), "initializer_range", 0.02)
    for name, mlp in targets:
        report.modules.append(name)
        report.old_activations.append(type(mlp.act_fn).__name__)
        ref = mlp.up_proj.weight
        if mode == "gated":
            mlp.act_fn = activation_info(act_name).build(**act_kwargs).to(device=ref.device)
        else:
            new = _non_gated_mlp(mlp, act_name, act_kwargs, multiple_of, std)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, new)
    report.params_after = sum(p.numel() for p in model.parameters())
    _update_config(model, report, act_name, act_kwargs)
    return report


def _non_gated_mlp(mlp: nn.Module, act_name: str, act_kwargs: dict, multiple_of: int, std: float) -> MLP:
    d, h = mlp.up_proj.in_features, mlp.up_proj.out_features
    kind = activation_info(act_name).mlp_kind
    width = matched_hidden(h, kind, multiple_of, d, reference_kind="gated")  # 2 d w = 3 d h for a plain kind
    new = MLP(d, width, act_name, act_kwargs)
    with torch.no_grad():
        for lin in (new.up_proj, new.down_proj):
            lin.weight.normal_(0.0, std)
    ref = mlp.up_proj.weight
    return new.to(device=ref.device, dtype=ref.dtype)


def _update_config(model: nn.Module, report: SwapReport, act_name: str, act_kwargs: dict) -> None:
    config = getattr(model, "config", None)
    if report.mode == "non_gated":
        report.notes.append("MLP weights were re-initialised (std = config.initializer_range); the model now has "
                            "polycom MLPs (up_proj, down_proj, act) and no longer loads as its original class")
        return
    if config is not None and not act_kwargs and act_name in ACT2FN and hasattr(config, "hidden_act"):
        config.hidden_act = act_name
        report.hidden_act = act_name
        if make_portable(model):
            report.notes.append(f"config.hidden_act = {act_name!r}, model type {config.model_type!r}: save_pretrained "
                                "writes a folder that from_pretrained(..., trust_remote_code=True) loads without "
                                "polycom, and with polycom imported as it is")
        else:
            report.notes.append(f"config.hidden_act = {act_name!r}: save_pretrained / from_pretrained rebuild the "
                                f"same MLPs with polycom imported ({type(model).__name__} has no polycom model type)")
    else:
        report.notes.append("config.hidden_act left unchanged (activation kwargs or unregistered name): "
                            "re-apply swap_activation after loading")


def make_portable(model: nn.Module) -> bool:
    """Give a Llama / Mistral / Qwen2 causal LM polycom's subclass of its class and config (model type
    "polycom_llama", ...), so ``save_pretrained`` writes the remote code that loads it without polycom.

    The subclasses add nothing but the model type and the ACT2FN names, so the model computes exactly what
    it did. Returns False, changing nothing, for any other class."""
    classes = PORTABLE_CLASSES.get(type(model))
    if classes is None:
        return type(model) in {c for c, _ in PORTABLE_CLASSES.values()}
    model.__class__, model.config.__class__ = classes
    return True
