"""Training memory from the config alone, before anything is allocated.

``--dry-run`` prints the estimate; ``preflight`` refuses a run whose estimate exceeds the
memory this machine has available, which would otherwise fail in the allocator after
seconds or swap for minutes. The estimate is a floor, so only runs that cannot fit are
refused:

    state        16 P bytes                        fp32 weights (4), gradients (4) and AdamW's
                                                   exp_avg and exp_avg_sq (8); bf16 autocast keeps
                                                   fp32 weights. FSDP shards it over the world size
                                                   (and so, at most, do tensor x data parallelism).
    activations  B T (2 (6d + 2kv + 2h) L + 4V)    one micro-batch of B sequences of T tokens;
                                                   a block under train.activation_checkpointing
                                                   keeps its input only (2d instead).

P: parameters of the model built on the ``meta`` device (no memory). Per token and layer,
16-bit copies of what backward needs: the two norms' inputs, the attention's input, queries
and output (6d with the MLP's input), keys and values (2kv = 2 x kv heads x head size), the
activation's input and the second matrix's input (2h; h = the MLP width, top_k expert widths
for MoE): 32 d for a plain transformer, the count of Korthikanti et al. 2022 ("Reducing
Activation Recomputation in Large Transformer Models") without dropout masks and attention
scores; under train.tensor_parallel=K a rank holds 1/K of the keys, values and MLP columns.
4V: the fp32 logits of the loss. Real use is larger: fp32 activations on CPU, the
powers PolyNorm keeps, attention workspace, fused-optimizer temporaries, the allocator's
slack, the CUDA context, the data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UsageError
from .config import Config
from .distributed import checkpointed_blocks

__all__ = ["MemoryEstimate", "meta_model", "estimate_memory", "available_memory", "format_bytes", "memory_shortfall",
           "check_memory"]

# Bytes per parameter: fp32 weight, fp32 gradient, AdamW's two fp32 moments.
WEIGHT_BYTES = 4
STATE_BYTES_PER_PARAM = WEIGHT_BYTES + 4 + 8
ACTIVATION_BYTES = 2  # bf16, the smaller of the two precisions
LOGIT_BYTES = 4


@dataclass(frozen=True)
class MemoryEstimate:
    """A floor on one process's training memory; ``culprit`` names the config keys (with their
    values) behind its largest part, for the message that refuses it."""
    state_bytes: int  # parameters, gradients and AdamW state held by one rank
    activation_bytes: int  # what one micro-batch keeps for backward
    weight_bytes: int  # the fp32 weights alone: the host holds them while the model is built
    culprit: str

    @property
    def total_bytes(self) -> int:
        return self.state_bytes + self.activation_bytes

    def describe(self) -> str:
        return (f"{format_bytes(self.total_bytes)} ({format_bytes(self.state_bytes)} parameters, gradients and "
                f"AdamW state + {format_bytes(self.activation_bytes)} activations of one micro-batch)")


def format_bytes(n: float) -> str:
    """Decimal units, two significant figures at least: ``9.6 TB``, ``21 GB``."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.2g} {unit}" if n < 10 else f"{n:.0f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def meta_model(cfg: Config, vocab_size: int | None = None) -> torch.nn.Module:
    """The run's model on the ``meta`` device: shapes and parameter counts, no memory."""
    from ..models import build_model

    with torch.device("meta"):
        return build_model(cfg.model_config(vocab_size))


def estimate_memory(cfg: Config, model: torch.nn.Module, world_size: int = 1) -> MemoryEstimate:
    """The floor of the module docstring for ``model`` (from ``meta_model``) trained as ``cfg`` says."""
    mc = model.config
    params = model.num_params()
    tensor = cfg.train.tensor_parallel  # a (data, tensor) mesh, FSDP2 over data: tensor x data shards at most
    shards = world_size if cfg.train.parallel == "fsdp" or tensor > 1 else 1
    state = STATE_BYTES_PER_PARAM * params // shards
    tokens = cfg.train.micro_batch_size * cfg.data.seq_len
    mlp_width = mc.mlp_hidden if mc.moe is None else mc.moe.top_k * mc.expert_hidden
    per_layer = 6 * mc.d_model + (2 * mc.kv_heads * mc.head_dim + 2 * mlp_width) // tensor  # a rank's heads, columns
    # train.activation_checkpointing: a checkpointed block keeps only its input (d per token).
    recomputed = len(checkpointed_blocks(mc.n_layers, cfg.train.activation_checkpointing))
    per_token_layers = ACTIVATION_BYTES * (per_layer * (mc.n_layers - recomputed) + mc.d_model * recomputed)
    per_token_logits = LOGIT_BYTES * mc.vocab_size
    activations = tokens * (per_token_layers + per_token_logits)
    # The culprit: the largest of what grows with the vocabulary, with the model's width and
    # depth, and with the micro-batch.
    vocab_params = mc.vocab_size * mc.d_model * (1 if mc.tie_embeddings else 2)
    parts = {
        f"model.vocab_size={mc.vocab_size}": STATE_BYTES_PER_PARAM * vocab_params // shards + tokens * per_token_logits,
        f"model.d_model={mc.d_model}, model.n_layers={mc.n_layers}":
            STATE_BYTES_PER_PARAM * (params - vocab_params) // shards,
        f"train.micro_batch_size={cfg.train.micro_batch_size}, data.seq_len={cfg.data.seq_len}":
            tokens * per_token_layers,
    }
    culprit = max(parts, key=parts.get)
    return MemoryEstimate(state, activations, WEIGHT_BYTES * params, culprit)


def available_memory(device: torch.device) -> tuple[int, str] | None:
    """(bytes, where) free for training on ``device``; None where this cannot be told.

    CUDA: the device's free memory. Otherwise host RAM that can be had without swapping
    (``MemAvailable``), which an MPS device shares.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free, f"{device} has {format_bytes(free)} free"
    host = host_available_memory()
    return None if host is None else (host, f"this machine has {format_bytes(host)} available")


def host_available_memory() -> int | None:
    """``MemAvailable`` of /proc/meminfo (Linux: free RAM plus what the page cache would give
    back), else the free pages sysconf reports; None where neither exists (macOS)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_shortfall(cfg: Config, estimate: MemoryEstimate, device: torch.device) -> str | None:
    """Why ``estimate`` cannot fit, naming the keys behind it; None when it may. Checked: the
    whole estimate on ``device``, and on a GPU also the fp32 weights on the host, where the
    model is built before it moves."""
    needs = [(estimate.total_bytes, estimate.describe(), available_memory(device))]
    if device.type == "cuda":
        needs.append((estimate.weight_bytes, f"{format_bytes(estimate.weight_bytes)} of fp32 weights on the host "
                                             "while the model is built", available_memory(torch.device("cpu"))))
    for need, what, have in needs:
        if have is not None and need > have[0]:
            return (f"{estimate.culprit}: training needs at least {what} but {have[1]}; "
                    "use a smaller model or micro-batch (the estimate: docs/training.md#memory)")
    return None


def check_memory(cfg: Config, device: torch.device, world_size: int = 1) -> None:
    """Raise ``UsageError`` when the run's memory estimate exceeds what ``device`` has available."""
    shortfall = memory_shortfall(cfg, estimate_memory(cfg, meta_model(cfg), world_size), device)
    if shortfall:
        raise UsageError(shortfall)
