"""Transformer building blocks: RMSNorm, rotary embeddings, causal attention.

Llama conventions: RMSNorm with a gain and no bias, RoPE in the "rotate half"
layout (the Hugging Face Llama layout, so weights convert without permuting),
no biases in any projection, attention through ``scaled_dot_product_attention``
(flash / memory-efficient kernels where the device has them).

``KVCache`` holds the keys and values of the tokens already seen, per layer, for
incremental decoding; without one (training, evaluation) attention runs the
plain causal path over the whole sequence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig

__all__ = ["RMSNorm", "RotaryEmbedding", "apply_rotary", "CausalSelfAttention", "KVCache"]


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2, -1) + eps) * weight, computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, eps={self.eps:g}"


class RotaryEmbedding(nn.Module):
    """cos/sin tables for RoPE (Su et al. 2021), precomputed up to ``max_seq_len``."""

    def __init__(self, head_dim: int, max_seq_len: int, theta: float = 10000.0):
        super().__init__()
        self.head_dim, self.max_seq_len, self.theta = head_dim, max_seq_len, theta
        cos, sin = self._tables()
        # Not persistent: derived from the config, rebuilt on load, never stale.
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def _tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        hs = self.head_dim
        inv_freq = 1.0 / self.theta ** (torch.arange(0, hs, 2, dtype=torch.float64) / hs)
        t = torch.arange(self.max_seq_len, dtype=torch.float64)
        freqs = torch.outer(t, inv_freq)  # (T_max, hs/2)
        emb = torch.cat([freqs, freqs], dim=-1)  # (T_max, hs): rotate-half layout
        return emb.cos().float(), emb.sin().float()

    def reset_buffers(self) -> None:
        """Recompute the tables in place (after meta-device construction, e.g. HF loading)."""
        cos, sin = self._tables()
        with torch.no_grad():
            self.cos.copy_(cos)
            self.sin.copy_(sin)

    def forward(self, seq_len: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Tables for positions offset .. offset + seq_len - 1 (offset > 0: tokens after a KV cache)."""
        end = offset + seq_len
        if end > self.cos.shape[0]:
            raise ValueError(f"sequence length {end} exceeds ModelConfig.max_seq_len={self.cos.shape[0]}")
        return self.cos[offset:end], self.sin[offset:end]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x_i, x_{i + hs/2}) by position-dependent angles. x: (B, nh, T, hs)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention with optional grouped-query heads and QK-norm.

    QK-norm is an RMSNorm over each head's query and key vectors (before RoPE),
    which keeps attention logits bounded (OLMoE, OLMo 2, Qwen3 use variants).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, cfg.kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, cfg.kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)
        self.q_norm = RMSNorm(cfg.head_dim, cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(cfg.head_dim, cfg.norm_eps) if cfg.qk_norm else None
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: "LayerKV | None" = None) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim)  # (B, T, nh, hs)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim)  # (B, T, nkv, hs)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, nh|nkv, T, hs)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            return self._forward_cached(q, k, v, cache)
        if self.n_kv_heads != self.n_heads:
            # Repeat kv heads (the enable_gqa flag of sdpa needs torch >= 2.5).
            rep = self.n_heads // self.n_kv_heads
            k = k.repeat_interleave(rep, dim=1)  # (B, nh, T, hs)
            v = v.repeat_interleave(rep, dim=1)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B, T, d)
        return self.o_proj(y)

    def _forward_cached(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: "LayerKV") -> torch.Tensor:
        """Attention of T new queries over the cached keys plus their own (rotated at their positions)."""
        B, _, T, _ = q.shape
        past = cache.length
        k, v = cache.append(k, v)  # (B, nkv, past + T, hs)
        if self.n_kv_heads != self.n_heads:
            rep = self.n_heads // self.n_kv_heads
            k = k.repeat_interleave(rep, dim=1)  # (B, nh, past + T, hs)
            v = v.repeat_interleave(rep, dim=1)
        mask = None
        if T > 1:
            # Query i sits at position past + i and sees keys 0 .. past + i. sdpa's is_causal
            # aligns the triangle top-left, which is only right when past == 0.
            keys = torch.arange(past + T, device=q.device)
            mask = keys[None, :] <= (past + torch.arange(T, device=q.device))[:, None]  # (T, past + T)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B, T, d)
        return self.o_proj(y)


class LayerKV:
    """One layer's cached keys and values, (B, nkv, length, hs) each, after RoPE."""

    def __init__(self):
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the new tokens' k, v (B, nkv, T, hs); returns all of them so far."""
        if self.k is None:
            self.k, self.v = k, v
        else:
            self.k, self.v = torch.cat([self.k, k], dim=2), torch.cat([self.v, v], dim=2)
        return self.k, self.v


class KVCache:
    """Keys and values of every layer for incremental decoding.

    ``position`` is the number of tokens already cached: the next token's RoPE
    position. Keys are stored after RoPE, so cached tokens are never re-rotated.
    Growing by concatenation costs O(T) copies per step, negligible next to the
    O(T^2) recomputation it replaces at the model sizes polycom samples from.
    """

    def __init__(self, n_layers: int):
        self.layers = [LayerKV() for _ in range(n_layers)]

    @property
    def position(self) -> int:
        return self.layers[0].length
