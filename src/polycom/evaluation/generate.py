"""Sampling from a polycom Transformer, with a KV cache.

Each step turns the last position's logits into a distribution and draws one token:

    logits / temperature -> keep the top_k largest -> keep the smallest set whose
    probability reaches top_p (nucleus sampling, Holtzman et al. 2020) -> softmax -> draw

temperature 0 is greedy decoding (argmax). With ``use_cache`` the prompt is run
once and every later step feeds only the newest token (``KVCache``); without,
every step recomputes the whole prefix. Both give the same tokens.
"""

from __future__ import annotations

import math

from dataclasses import dataclass

import torch

from ..models import Transformer
from ..models.layers import KVCache

__all__ = ["SamplingConfig", "filter_logits", "generate_ids"]


@dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = no top-k filter
    top_p: float = 1.0  # 1 = no nucleus filter
    seed: int = 0

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"--temperature must be a finite number >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"--top-k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"--top-p must be in (0, 1], got {self.top_p}")


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """logits (B, V) with the tokens outside the top-k / the top-p nucleus set to -inf."""
    logits = logits.clone()
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits[logits < kth] = -float("inf")
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token when the tokens ranked above it already reach top_p (the top one always stays).
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits[drop] = -float("inf")
    return logits


def _next_token(logits: torch.Tensor, cfg: SamplingConfig, gen: torch.Generator) -> torch.Tensor:
    """(B, V) -> (B, 1)."""
    if cfg.temperature == 0:
        return logits.argmax(-1, keepdim=True)
    probs = filter_logits(logits.float() / cfg.temperature, cfg.top_k, cfg.top_p).softmax(-1)
    return torch.multinomial(probs, 1, generator=gen)


@torch.no_grad()
def generate_ids(model: Transformer, prompt: list[int], cfg: SamplingConfig = SamplingConfig(),
                 use_cache: bool = True, stop_id: int | None = None) -> list[int]:
    """The new token ids after ``prompt`` (at most ``cfg.max_new_tokens``; stops after ``stop_id``).

    The last new token is never fed back, so a prompt of P tokens leaves room for
    max_seq_len - P + 1 new ones; generation stops there."""
    context = model.config.max_seq_len
    if not prompt:
        raise ValueError("--prompt encodes to no tokens; give at least one character")
    if len(prompt) > context:
        raise ValueError(f"--prompt is {len(prompt)} tokens, longer than the model's context "
                         f"(max_seq_len={context}); shorten it")
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    ids = torch.tensor([prompt], device=device)  # (1, P)
    cache = KVCache(len(model.layers)) if use_cache else None
    logits = model(ids, cache=cache).logits[:, -1]  # (1, V)
    budget = min(cfg.max_new_tokens, context - len(prompt) + 1)
    new: list[int] = []
    while True:
        token = _next_token(logits, cfg, gen)  # (1, 1)
        new.append(int(token))
        if len(new) == budget or int(token) == stop_id:
            return new
        ids = torch.cat([ids, token], dim=1)  # (1, P + len(new))
        logits = (model(token, cache=cache) if use_cache else model(ids)).logits[:, -1]
