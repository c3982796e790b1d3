"""Llama, Mistral and Qwen2 models whose MLP activation is a polycom name (``config.hidden_act``).

Copied verbatim into the model folder when such a model is saved (``polycom.hf.make_portable``,
which ``swap_activation`` calls): each class is its transformers parent with a model type of
its own ("polycom_llama", ...), and importing this file adds polycom's activation names to
``transformers.activations.ACT2FN`` (polycom's modules if polycom is importable, else the plain
PyTorch ones of ``polycom_activations.py``). So ``AutoModelForCausalLM.from_pretrained(folder,
trust_remote_code=True)`` builds the same gated MLPs, ``down(act(gate(x)) * up(x))``, without
polycom. Parameter names are the parent's: ``mlp.act_fn.weight`` / ``.bias`` hold the coefficients.
"""

from __future__ import annotations

from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

from .polycom_activations import register_act2fn

__all__ = ["PolyComLlamaConfig", "PolyComLlamaForCausalLM", "PolyComMistralConfig", "PolyComMistralForCausalLM",
           "PolyComQwen2Config", "PolyComQwen2ForCausalLM"]

register_act2fn()


class PolyComLlamaConfig(LlamaConfig):
    model_type = "polycom_llama"


class PolyComLlamaForCausalLM(LlamaForCausalLM):
    config_class = PolyComLlamaConfig


class PolyComMistralConfig(MistralConfig):
    model_type = "polycom_mistral"


class PolyComMistralForCausalLM(MistralForCausalLM):
    config_class = PolyComMistralConfig


class PolyComQwen2Config(Qwen2Config):
    model_type = "polycom_qwen2"


class PolyComQwen2ForCausalLM(Qwen2ForCausalLM):
    config_class = PolyComQwen2Config
