"""AdamW with explicit parameter groups, and the warmup + cosine schedule.

Groups (their sizes are printed at start-up):
- ``decay``: every matrix (ndim >= 2: projections, embeddings), weight decay on;
- ``no_decay``: vectors (norm gains, biases);
- ``activation``: the parameters of the MLP activation modules (``.mlp.act``,
  e.g. PolyNorm's 3 coefficients and bias per layer). Decayed only when
  ``optim.decay_activation_coefficients`` is set; the official PolyCom code
  does not decay them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import OptimSection

__all__ = ["param_groups", "build_optimizer", "lr_lambda", "build_scheduler", "total_grad_norm", "clip_grads_to_norm_"]


def _activation_param_ids(model: nn.Module) -> set[int]:
    ids = set()
    for name, module in model.named_modules():
        if name.split(".")[-1] == "act":  # layers.N.mlp.act (dense and MoE)
            ids.update(id(p) for p in module.parameters())
    return ids


def param_groups(model: nn.Module, cfg: OptimSection) -> list[dict]:
    """Three AdamW groups; every trainable parameter lands in exactly one."""
    act_ids = _activation_param_ids(model)
    groups = {"decay": [], "no_decay": [], "activation": []}
    seen = set()
    for _, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if id(p) in act_ids:
            groups["activation"].append(p)
        elif p.ndim >= 2:
            groups["decay"].append(p)
        else:
            groups["no_decay"].append(p)
    act_decay = cfg.weight_decay if cfg.decay_activation_coefficients else 0.0
    return [
        {"name": "decay", "params": groups["decay"], "weight_decay": cfg.weight_decay},
        {"name": "no_decay", "params": groups["no_decay"], "weight_decay": 0.0},
        {"name": "activation", "params": groups["activation"], "weight_decay": act_decay},
    ]


def describe_groups(groups: list[dict]) -> str:
    return ", ".join(f"{g['name']}: {len(g['params'])} tensors / {sum(p.numel() for p in g['params']):,} params "
                     f"(wd {g['weight_decay']})" for g in groups)


def build_optimizer(model: nn.Module, cfg: OptimSection, device_type: str = "cpu") -> torch.optim.AdamW:
    groups = [g for g in param_groups(model, cfg) if g["params"]]
    # The fused kernel is faster on CUDA (and lets the NaN guard skip a step without a
    # host sync); on CPU and for FSDP2's sharded DTensor parameters the foreach path is used.
    sharded = any(hasattr(p, "device_mesh") for g in groups for p in g["params"])
    extra = {"fused": True} if device_type == "cuda" and not sharded else {}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, **extra)


def lr_lambda(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup from 1/warmup to 1, then cosine from 1 to ``min_ratio``
    at the last step. ``step`` counts from 0 (the first optimizer step)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimSection, total_steps: int):
    warmup = min(cfg.warmup_steps, max(0, total_steps - 1))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_lambda(step, warmup, total_steps, cfg.min_lr_ratio))


def total_grad_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of all gradients together, as a tensor (no host sync).

    torch >= 2.6 has ``nn.utils.get_total_norm`` (which also handles FSDP2's DTensor
    shards); older versions, which polycom supports from 2.4, get the same formula here.
    """
    if hasattr(nn.utils, "get_total_norm"):
        return nn.utils.get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach()) for g in grads]))


def clip_grads_to_norm_(params, max_norm: float, total_norm: torch.Tensor) -> None:
    """Scale gradients by min(1, max_norm / (total_norm + 1e-6)), torch's clipping rule, given the norm."""
    if hasattr(nn.utils, "clip_grads_with_norm_"):  # torch >= 2.6
        nn.utils.clip_grads_with_norm_(params, max_norm, total_norm)
        return
    scale = torch.clamp(max_norm / (total_norm + 1e-6), max=1.0)
    for p in params:
        if p.grad is not None:
            p.grad.detach().mul_(scale.to(p.grad.device))
