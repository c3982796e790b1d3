"""polycom.models: dense and MoE decoder LMs whose MLP activation is a registry key.

    from polycom.models import model_config, build_model
    model = build_model(model_config("tiny", activation="polynorm"))
    out = model(ids, targets=ids)          # ModelOutput(logits, loss, ce_loss, aux_loss)
    print(model.num_params(), model.flops_per_token())
"""

from .config import ModelConfig, MoEConfig, default_expert_hidden, default_ffn_hidden, matched_hidden
from .layers import CausalSelfAttention, RMSNorm, RotaryEmbedding
from .mlp import MLP
from . import af_kan  # noqa: F401 - registers the MLP kind 'afkan'
from .moe import MoE, Router
from .presets import PRESETS, model_config
from .transformer import Block, ModelOutput, Transformer, build_model

__all__ = [
    "ModelConfig",
    "MoEConfig",
    "PRESETS",
    "model_config",
    "build_model",
    "Transformer",
    "Block",
    "ModelOutput",
    "MLP",
    "MoE",
    "Router",
    "RMSNorm",
    "RotaryEmbedding",
    "CausalSelfAttention",
    "matched_hidden",
    "default_ffn_hidden",
    "default_expert_hidden",
]
