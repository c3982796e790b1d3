"""Named model sizes. ``model_config(name, **overrides)`` returns a validated ModelConfig.

vocab_size is a placeholder the trainer overrides with its tokenizer's size.
``paper-1b`` is the dense 1B of Zhuo et al. 2025 (24 x 2048, 16 heads, FFN
8256 non-gated / 5504 gated, untied, small init); ``paper-moe-1b-7b`` the
OLMoE-style MoE (16 x 2048, 64 experts, top-8, experts 1536 / 1024, QK-norm,
no top-k renormalisation as in the released OLMoE-1B-7B).
"""

from __future__ import annotations

import dataclasses

import torch

from .config import ModelConfig, MoEConfig

__all__ = ["PRESETS", "model_config", "preset_table"]

PRESETS: dict[str, dict] = {
    # Smallest useful shapes, for tests.
    "debug": dict(vocab_size=256, n_layers=2, d_model=64, n_heads=4, max_seq_len=64),
    # The model of `polycom train`'s default (configs/tiny.yaml): trains on a 2-core CPU in minutes.
    "tiny": dict(vocab_size=4096, n_layers=4, d_model=128, n_heads=4, max_seq_len=256),
    # GPT-2 small shape.
    "small": dict(vocab_size=32000, n_layers=12, d_model=768, n_heads=12, max_seq_len=1024),
    "paper-1b": dict(vocab_size=32000, n_layers=24, d_model=2048, n_heads=16, ffn_hidden=8256,
                     max_seq_len=4096, init="small"),
    "paper-moe-1b-7b": dict(vocab_size=50304, n_layers=16, d_model=2048, n_heads=16, max_seq_len=4096,
                            qk_norm=True, init="normal",
                            # OLMoE-1B-7B does not renormalise the top-k probabilities
                            # (norm_topk_prob=false, the megablocks default).
                            moe=dict(num_experts=64, top_k=8, expert_hidden=1536, renormalize=False)),
    "debug-moe": dict(vocab_size=256, n_layers=2, d_model=64, n_heads=4, max_seq_len=64,
                      moe=dict(num_experts=4, top_k=2)),
    "tiny-moe": dict(vocab_size=4096, n_layers=4, d_model=128, n_heads=4, max_seq_len=256,
                     moe=dict(num_experts=8, top_k=2)),
}


def model_config(name: str, **overrides) -> ModelConfig:
    """Preset ``name`` with fields replaced by ``overrides``.

    ``moe`` may be overridden by a MoEConfig, None, or a dict of MoEConfig
    fields merged into the preset's (e.g. ``moe={"top_k": 1}``).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; valid: {sorted(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"model_config: unknown ModelConfig fields {unknown}; valid: {sorted(fields)}")
    kw = dict(PRESETS[name])
    moe = kw.pop("moe", None)
    if "moe" in overrides:
        new = overrides.pop("moe")
        if isinstance(new, dict) and moe is not None:
            moe = {**moe, **new}
        else:
            moe = new
    if isinstance(moe, dict):
        moe = MoEConfig(**moe)
    return ModelConfig(**{**kw, **overrides}, moe=moe)


def preset_table(presets: list[str], activations: list[str]) -> str:
    """Markdown table of width, parameters and FLOPs/token per preset and activation (`polycom models`)."""
    from .transformer import build_model  # the model module imports the config, not the presets

    rows = ["| preset | activation | MLP width | params | non-embedding | active/token | FLOPs/token |",
            "|---|---|---|---|---|---|---|"]
    for name in presets:
        for act in activations:
            cfg = model_config(name, activation=act)
            with torch.device("meta"):  # sizes only: no memory, no init
                model = build_model(cfg)
            width = f"{cfg.expert_hidden}/expert" if cfg.moe else str(cfg.mlp_hidden)
            rows.append(f"| {name} | {act} | {width} | {model.num_params():,} | "
                        f"{model.num_params(exclude_embeddings=True):,} | {model.num_active_params():,} | "
                        f"{model.flops_per_token():.3g} |")
    return "\n".join(rows)
