"""``--dry-run``: the resolved config, parameter count, tokens per step and memory, without training.

The model is built on the ``meta`` device (no memory), so even the 7B-total
MoE preset is sized in a second. The memory estimate (``memory_estimate.py``) is
compared with this machine's: a run too large for it is a warning here (a cluster
preset is dry-run on a laptop), where training would refuse to start. The vocabulary size comes from the tokenizer
setting without training it: ``bpe`` -> ``data.vocab_size``, ``byte`` -> 256,
``hf:...`` -> ``model.vocab_size`` if set, else the tokenizer is loaded.
"""

from __future__ import annotations

from pathlib import Path

from ..data import STANDARD_CORPORA
from ..errors import UsageError
from . import distributed as D
from .config import Config, ConfigError
from .memory_estimate import MemoryEstimate, estimate_memory, memory_shortfall, meta_model
from .memory_plan import activation_bytes, compute_dtype, gpus_needed, plan_memory

__all__ = ["dry_run"]


def _vocab_size(cfg: Config) -> int:
    if cfg.model.vocab_size:
        return cfg.model.vocab_size
    if cfg.data.tokenizer == "byte":
        return 256
    if cfg.data.tokenizer == "bpe":
        return cfg.data.vocab_size
    from ..data import load_tokenizer

    try:
        return load_tokenizer(cfg.data.tokenizer[3:]).vocab_size
    except Exception as e:
        raise ConfigError(f"data.tokenizer: cannot load {cfg.data.tokenizer!r} ({e}); "
                          "set model.vocab_size to size the model offline") from None


def _data_status(source: str) -> str:
    if source == "stdlib" or source.startswith("hf:") or source in STANDARD_CORPORA:
        return "available" if source == "stdlib" else "downloaded on first use"
    return "found" if Path(source).exists() else "NOT FOUND on this machine (training would stop here)"


def dry_run(cfg: Config, world_size: int | None = None) -> dict:
    """Sizes of the run described by ``cfg`` on ``world_size`` processes (default: the launcher's
    environment, torchrun's or a submitit/Slurm job's; 1 alone)."""
    world = world_size or D.launcher_world_size()
    model = meta_model(cfg, _vocab_size(cfg))
    tokens_per_step = cfg.train.batch_size * cfg.data.seq_len
    if cfg.train.tensor_parallel > 1:  # the refusals training would give this launch and model
        from .tensor_parallel import check_tensor_parallel

        check_tensor_parallel(model.config, cfg.train.tensor_parallel, world)
    data = world // cfg.train.tensor_parallel  # the ranks of a tensor group read the same rows
    accum = cfg.grad_accum(data)
    if accum < 1 or accum * cfg.train.micro_batch_size * data != cfg.train.batch_size:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} is not a multiple of "
                          f"train.micro_batch_size * data-parallel size = {cfg.train.micro_batch_size * data}")
    return {
        "num_params": model.num_params(),
        "num_params_non_embedding": model.num_params(exclude_embeddings=True),
        "flops_per_token": float(model.flops_per_token(cfg.data.seq_len)),
        "vocab_size": model.config.vocab_size,
        "tokens_per_step": tokens_per_step,
        "total_tokens": tokens_per_step * cfg.train.steps,
        "world_size": world,
        "grad_accum": accum,
        "data": f"{cfg.data.source} ({_data_status(cfg.data.source)})",
        "memory": estimate_memory(cfg, model, world),
        "model": model,
    }


def format_dry_run(cfg: Config, info: dict) -> str:
    total_flops = info["flops_per_token"] * info["total_tokens"]
    return "\n".join([
        "# resolved config",
        cfg.to_yaml().rstrip(),
        "# run size",
        f"parameters:        {info['num_params']:,} ({info['num_params_non_embedding']:,} without embeddings)",
        f"vocab size:        {info['vocab_size']:,}",
        f"tokens per step:   {info['tokens_per_step']:,} = batch {cfg.train.batch_size} x seq {cfg.data.seq_len} "
        f"(micro {cfg.train.micro_batch_size} x accum {info['grad_accum']} x "
        + (f"data {info['world_size'] // cfg.train.tensor_parallel}; world {info['world_size']} = data x tensor "
           f"{cfg.train.tensor_parallel})" if cfg.train.tensor_parallel > 1 else f"world {info['world_size']})"),
        f"total tokens:      {info['total_tokens']:,} over {cfg.train.steps:,} steps",
        f"training FLOPs:    {total_flops:.3e} ({info['flops_per_token'] / 1e6:,.1f} MFLOPs/token)",
        f"data:              {info['data']}",
        f"memory:            at least {info['memory'].describe()} per process",
        *_memory_warning(cfg, info["memory"]),
        *memory_plan_lines(cfg, info["model"], info["world_size"]),
    ])


def memory_plan_lines(cfg: Config, model, world: int) -> list[str]:
    """The per-rank memory plan (``memory_plan.py``) here, and the 80 GB GPUs the run needs."""
    import torch

    # Planned for CUDA on a GPU machine, or where the config names CUDA or a bf16 precision (a cluster preset).
    cuda = not cfg.train.device.startswith(("cpu", "mps")) and (
        torch.cuda.is_available() or cfg.train.device.startswith("cuda") or cfg.train.precision.startswith("bf16"))
    activations = activation_bytes(cfg, model, compute_dtype(cfg.train.precision, cuda), cuda)
    plan = plan_memory(cfg, model, world, cuda=cuda, activations=activations)
    gpus = gpus_needed(cfg, model, activations=activations if cuda else None)
    need = (f"at least {gpus} with train.parallel=fsdp" + ("" if gpus == 1 else f" ({world} planned)")
            if gpus else "none fits a rank's activations: lower train.micro_batch_size or set "
                         "train.activation_checkpointing")
    return [f"memory plan:       {plan.describe()}",
            f"80 GB GPUs:        {need} (bf16 where train.precision is auto; the plan: docs/training.md#scaling-out)"]


def _memory_warning(cfg: Config, estimate: MemoryEstimate) -> list[str]:
    try:
        device = D.resolve_device(cfg.train.device)
    except UsageError:  # a device of another machine: nothing here to compare with
        return []
    shortfall = memory_shortfall(cfg, estimate, device)
    return [f"WARNING: too large for this machine, training here would stop with: {shortfall}"] if shortfall else []
