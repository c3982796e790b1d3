"""The decoder-only language model: embeddings, N pre-norm blocks, LM head.

Single-device code: no ranks, no device placement; the trainer wraps the model
(DDP/FSDP, compile, autocast) from outside.

    x = embed(ids)
    for block: x = x + attn(norm(x)); x = x + mlp(norm(x))
    logits = head(norm(x))
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree
from torch import nn

from .config import ModelConfig
from .layers import CausalSelfAttention, KVCache, LayerKV, RMSNorm, RotaryEmbedding
from .mlp import build_mlp
from .moe import MoE

__all__ = ["ModelOutput", "Block", "Transformer", "build_model"]


@dataclass
class ModelOutput:
    """logits (B, T, V); loss = ce_loss + aux_loss (None without targets); aux_loss 0 for dense."""

    logits: torch.Tensor
    loss: torch.Tensor | None
    ce_loss: torch.Tensor | None
    aux_loss: torch.Tensor


# A pytree node, so torch.export (and anything else that flattens outputs) sees the tensors: the
# leaves are the fields that are not None, the spec names them. (torch.export.register_dataclass
# does the same, but on torch 2.4 it warns through a deprecated helper at every import.)
def _flatten_output(out: ModelOutput):
    names = tuple(f.name for f in fields(out) if getattr(out, f.name) is not None)
    return [getattr(out, name) for name in names], names


def _flatten_output_with_keys(out: ModelOutput):
    values, names = _flatten_output(out)
    return [(pytree.GetAttrKey(name), value) for name, value in zip(names, values)], names


def _unflatten_output(values, names) -> ModelOutput:
    present = dict(zip(names, values))
    return ModelOutput(**{f.name: present.get(f.name) for f in fields(ModelOutput)})


pytree.register_pytree_node(ModelOutput, _flatten_output, _unflatten_output,
                            serialized_type_name="polycom.models.transformer.ModelOutput",
                            flatten_with_keys_fn=_flatten_output_with_keys)


class Block(nn.Module):
    """Pre-norm transformer block: attention and MLP (dense or MoE) on the residual stream."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = CausalSelfAttention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        if cfg.moe is None:
            self.mlp = build_mlp(cfg.d_model, cfg.mlp_hidden, cfg.activation, cfg.activation_kwargs)
        else:
            self.mlp = MoE(cfg.d_model, cfg.expert_hidden, cfg.activation, cfg.moe, cfg.activation_kwargs)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: LayerKV | None = None):
        """Returns (x, aux_loss); aux_loss is None for a dense MLP. ``cache``: this layer's KV cache."""
        x = x + self.dropout(self.attn(self.attn_norm(x), cos, sin, cache))
        h = self.mlp(self.mlp_norm(x))
        aux = None
        if isinstance(h, tuple):
            h, aux = h
        return x + self.dropout(h), aux


class Transformer(nn.Module):
    """Llama-style decoder LM with a registry activation in every MLP."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_embeddings.weight
        self.rope = RotaryEmbedding(config.head_dim, config.max_seq_len, config.rope_theta)
        self.reset_parameters()

    # Initialisation ----------------------------------------------------------
    def reset_parameters(self) -> None:
        """Linear/embedding/expert weights ~ N(0, std); residual outputs std / sqrt(2 L).

        std = init_std ("normal") or sqrt(2 / (5 d)) ("small", the official
        dense runs). Norm gains are 1; activation coefficients keep the PolyCom
        init of their own modules (a_i = 1/r, a_0 = 0).

        Each tensor is drawn from a generator seeded by (``torch.initial_seed()``,
        its parameter name), not from one shared stream: two models built under
        the same seed then hold identical values in every tensor they share by
        name and shape (attention, embeddings, head), whatever their MLPs are.
        This is what makes an activation comparison paired: seed k gives GELU and
        SwiGLU the same attention weights although SwiGLU has one matrix more.
        """
        std = self.config.resolved_init_std
        out_std = std / math.sqrt(2 * self.config.n_layers)
        base_seed = torch.initial_seed()
        for name, m in self.named_modules():
            is_out = name.endswith("o_proj") or name.endswith("down_proj")
            if isinstance(m, (nn.Linear, nn.Embedding)):
                _seeded_normal_(m.weight, out_std if is_out else std, base_seed, f"{name}.weight")
            elif isinstance(m, MoE):
                for key, w, is_output in m.stacked_weights():
                    _seeded_normal_(w, out_std if is_output else std, base_seed, f"{name}.{key}")
            elif isinstance(m, RMSNorm):
                nn.init.ones_(m.weight)

    # Forward ---------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor | None = None,
                cache: KVCache | None = None) -> ModelOutput:
        """input_ids (B, T); targets (B, T) already aligned (target t is the token after t),
        -100 marks positions without a loss. ce_loss is the mean over the other positions.

        ``cache`` (decoding): input_ids are the tokens after the ``cache.position`` cached
        ones; their keys and values are appended to it. None: the plain training path."""
        B, T = input_ids.shape
        cos, sin = self.rope(T, cache.position if cache is not None else 0)
        layer_caches = cache.layers if cache is not None else [None] * len(self.layers)
        x = self.dropout(self.tok_embeddings(input_ids))  # (B, T, d)
        aux_terms = []
        for block, layer_cache in zip(self.layers, layer_caches):
            x, aux = block(x, cos, sin, layer_cache)
            if aux is not None:
                aux_terms.append(aux)
        logits = self.lm_head(self.norm(x))  # (B, T, V)
        aux_loss = torch.stack(aux_terms).mean() if aux_terms else logits.new_zeros((), dtype=torch.float32)
        if targets is None:
            return ModelOutput(logits, None, None, aux_loss)
        ce = F.cross_entropy(logits.float().view(B * T, -1), targets.reshape(B * T), ignore_index=-100)
        return ModelOutput(logits, ce + aux_loss, ce, aux_loss)

    # Accounting ------------------------------------------------------------
    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Unique parameters (a tied head counts once). ``exclude_embeddings`` drops the
        token-embedding table (an untied LM head stays: it is a matmul)."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.tok_embeddings.weight.numel()
        return n

    def num_active_params(self) -> int:
        """Parameters used per token, embedding table excluded, LM head included
        (equal to ``num_params(True)`` + a tied head for dense models; MoE counts top_k experts)."""
        n = self.num_params(exclude_embeddings=True)
        if self.config.tie_embeddings:
            n += self.lm_head.weight.numel()
        for block in self.layers:
            if isinstance(block.mlp, MoE):
                n += block.mlp.active_params() - sum(p.numel() for p in block.mlp.parameters())
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward), PaLM-style (Chowdhery et al. 2022, App. B):

            6 * N_active + 12 * n_layers * d_model * seq_len

        N_active: matmul parameters one token uses (``num_active_params``: no
        embedding lookup, LM head included, top_k experts for MoE). The second
        term is QK^T and AV over the full (non-causal-discounted) context.
        ``seq_len`` defaults to ``max_seq_len``.
        """
        T = seq_len if seq_len is not None else self.config.max_seq_len
        c = self.config
        return 6.0 * self.num_active_params() + 12.0 * c.n_layers * c.d_model * T

    def summary(self) -> str:
        c = self.config
        width = f"expert_hidden={c.expert_hidden}" if c.moe else f"mlp_hidden={c.mlp_hidden}"
        return (f"Transformer(activation={c.activation}, {width}): params {self.num_params():,} "
                f"(non-embedding {self.num_params(exclude_embeddings=True):,}, active {self.num_active_params():,}), "
                f"{self.flops_per_token() / 1e6:,.1f} MFLOPs/token at T={c.max_seq_len}")


def _seeded_normal_(weight: torch.Tensor, std: float, base_seed: int, name: str) -> None:
    """Fill ``weight`` with N(0, std^2) from a CPU generator seeded by (base_seed, name), so the
    values depend on the seed and the tensor's name only (not on the device, nor on what was
    initialised before). Meta tensors (sizing, FSDP shells) are left alone."""
    if weight.is_meta:
        return
    seed = zlib.crc32(f"{base_seed}:{name}".encode())  # stable across processes (unlike hash())
    values = torch.randn(weight.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
    with torch.no_grad():
        weight.copy_(values.mul_(std))


def build_model(config: ModelConfig) -> Transformer:
    """A freshly initialised model for ``config`` (on the default device and dtype)."""
    if not isinstance(config, ModelConfig):
        raise TypeError(f"build_model expects a ModelConfig, got {type(config).__name__}")
    return Transformer(config)
