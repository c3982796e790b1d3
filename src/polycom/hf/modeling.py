"""polycom's Transformer as a Hugging Face model: ``PolyComConfig`` / ``PolyComForCausalLM``.

The classes live in ``hf/remote/`` (``configuration_polycom.py``, ``modeling_polycom.py``):
files that import only torch and transformers, which ``save_pretrained`` copies into the
model folder with an ``auto_map`` in config.json (``register_for_auto_class`` below), so
the folder loads with ``trust_remote_code=True`` where polycom is not installed. Here,
with polycom, ``PolyComForCausalLM.model`` is a ``polycom.models.Transformer``: a
checkpoint has a polycom checkpoint's parameter names with a ``model.`` prefix, and
``from_polycom`` exports a trained model without copying it.
"""

from __future__ import annotations

import dataclasses
import inspect

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from ..models import ModelConfig, Transformer
from .remote.configuration_polycom import DEFAULTS, PolyComConfig
from .remote.modeling_polycom import PolyComForCausalLM

__all__ = ["PolyComConfig", "PolyComForCausalLM", "from_polycom", "register"]

# The signature help() and inspect show: one keyword per ModelConfig field, then PretrainedConfig's.
PolyComConfig.__init__.__signature__ = inspect.Signature(
    [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    + [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=DEFAULTS[f.name])
       for f in dataclasses.fields(ModelConfig)]
    + [inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)])

# save_pretrained writes these classes' files into the folder and names them in config.json's auto_map.
PolyComConfig.register_for_auto_class()
PolyComForCausalLM.register_for_auto_class("AutoModelForCausalLM")


def from_polycom(model: Transformer) -> PolyComForCausalLM:
    """Wrap a trained polycom ``Transformer`` (weights shared, not copied) for ``save_pretrained``."""
    with torch.device("meta"):  # the wrapper's own Transformer is replaced at once: allocate nothing
        hf = PolyComForCausalLM(PolyComConfig.from_model_config(model.config))
    hf.model = model
    return hf


def register() -> None:
    """Make ``AutoConfig`` / ``AutoModelForCausalLM`` know model_type "polycom" and the polycom Llama-family
    types ("polycom_llama", ...) of ``swap.make_portable`` (idempotent)."""
    from .swap import PORTABLE_CLASSES

    for model_class, config_class in [(PolyComForCausalLM, PolyComConfig), *PORTABLE_CLASSES.values()]:
        try:
            AutoConfig.register(config_class.model_type, config_class)
        except ValueError:
            pass  # already registered
        try:
            AutoModelForCausalLM.register(config_class, model_class)
        except ValueError:
            pass
