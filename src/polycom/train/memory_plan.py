"""Per-rank training memory for a mesh and precision: what ``--dry-run`` prints.

``memory_estimate.py`` is a floor that refuses runs which cannot fit; this is the plan, as
close to what is allocated as the config tells, part by part, on one rank:

    parameters   4 P / S     fp32 master weights (bf16 autocast and FSDP2's bf16 policy keep them)
    gradients    4 P / S     fp32
    optimizer    8 P / S     AdamW's exp_avg and exp_avg_sq
    gathered     FSDP2 only: the units it all-gathers at a time, in the compute dtype c (2 bytes
                 for bf16, else 4): the root's parameters (embeddings, head; kept gathered
                 between forward and backward) and two blocks (the one computing and the one
                 prefetched), plus their unsharded gradients (fp32) before the reduce-scatter
    autocast     bf16 autocast: the bf16 copies of the weights autocast caches for one forward
    activations  what autograd saves for backward over one micro-batch, with the checkpointing
                 of ``train.activation_checkpointing``

P parameters; S the FSDP2 shard count (the world size under ``train.parallel=fsdp``, else 1).
Under ``train.tensor_parallel=K`` the world is a (data, tensor) mesh of world / K x K ranks:
P is then what one rank of a tensor group holds (the split projections of
``tensor_parallel.split_dims`` / K, the replicated rest whole), and FSDP2 shards it over the
data dimension, S = world / K; the traced forward is one rank's (``narrow_to_one_rank``: its
heads and MLP columns; the residual stream and the logits stay whole).
Activations are traced: the model runs forward on the ``meta`` device (no memory, no compute)
under ``torch.autograd.graph.saved_tensors_hooks``, in the compute dtype, and the saved
tensors' bytes are summed, one per storage, parameters left out. On CPU, attention's math path
keeps its (B, h, T, T) scores; planned for CUDA, they are left out (flash and memory-efficient
attention keep the output and a row statistic). Every model runs on ``meta``, the MoE included
(it reads no value on the host). Not counted: the
allocator's slack, attention and matmul workspaces, the CUDA context (about 0.5-1 GB), data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.grouped import planned_device
from .config import Config
from .memory_estimate import format_bytes
from .tensor_parallel import narrow_to_one_rank, split_dims

__all__ = ["MemoryPlan", "plan_memory", "activation_bytes", "compute_dtype", "gpus_needed", "GPU_BYTES"]

GPU_BYTES = 80e9  # an 80 GB GPU (H100/A100 80GB), in decimal bytes as the vendors count
GPU_USABLE = 0.9  # the share a run may plan on: the rest for the context, workspaces, fragmentation


@dataclass(frozen=True)
class MemoryPlan:
    world_size: int
    shards: int  # FSDP2's shard count, 1 without FSDP2
    tensor_parallel: int  # ranks per tensor group (train.tensor_parallel), 1 without
    precision: str  # fp32, bf16 (autocast) or bf16-fsdp
    checkpointing: int  # train.activation_checkpointing
    parameters: int
    gradients: int
    optimizer: int
    gathered: int
    autocast: int
    activations: int  # with the configured checkpointing
    activations_none: int  # no checkpointing
    activations_every: int  # every block checkpointed

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer + self.gathered + self.autocast + self.activations

    def describe(self) -> str:
        parts = [f"parameters {format_bytes(self.parameters)}", f"gradients {format_bytes(self.gradients)}",
                 f"optimizer {format_bytes(self.optimizer)}"]
        if self.gathered:
            parts.append(f"FSDP2 gathered units {format_bytes(self.gathered)}")
        if self.autocast:
            parts.append(f"autocast weight copies {format_bytes(self.autocast)}")
        ckpt = {0: "off"}.get(self.checkpointing, f"every {self.checkpointing} block(s)")
        mesh = (f" = data {self.world_size // self.tensor_parallel} x tensor {self.tensor_parallel}"
                if self.tensor_parallel > 1 else "")
        return (f"{format_bytes(self.total)} per rank (world {self.world_size}{mesh}, {self.precision}, activation "
                f"checkpointing {ckpt}): {', '.join(parts)}, activations {format_bytes(self.activations)} "
                f"(without checkpointing {format_bytes(self.activations_none)}, every block "
                f"{format_bytes(self.activations_every)})")


def compute_dtype(precision: str, cuda: bool) -> torch.dtype:
    """The dtype activations are computed in: bf16 for bf16, bf16-fsdp and ``auto`` on CUDA."""
    return torch.bfloat16 if precision in ("bf16", "bf16-fsdp") or (precision == "auto" and cuda) else torch.float32


def plan_memory(cfg: Config, model: torch.nn.Module, world_size: int = 1, cuda: bool = False,
                parallel: str | None = None, activations: tuple | None = None) -> MemoryPlan:
    """The plan for ``model`` (from ``memory_estimate.meta_model``) trained as ``cfg`` on one of
    ``world_size`` ranks; ``cuda``: resolve ``train.precision=auto`` as on a GPU (bf16);
    ``activations``: ``activation_bytes``'s answer, when already traced."""
    t = cfg.train
    parallel = parallel or t.parallel
    tensor = t.tensor_parallel
    data = world_size // tensor  # tensor parallelism runs FSDP2 over the data dimension
    fsdp = (parallel == "fsdp" or tensor > 1) and data > 1
    shards = data if fsdp else 1
    dtype = compute_dtype(t.precision, cuda)
    c = torch.finfo(dtype).bits // 8
    split = split_dims(model) if tensor > 1 else {}

    def one_rank(prefix: str, module: torch.nn.Module) -> int:  # what one rank of a tensor group holds
        return sum(p.numel() // tensor if f"{prefix}{n}" in split else p.numel() for n, p in module.named_parameters())

    params = one_rank("", model)
    state = (4 * params // shards, 4 * params // shards, 8 * params // shards)
    gathered = 0
    if fsdp:
        blocks = [one_rank(f"layers.{i}.", b) for i, b in enumerate(model.layers)]
        root = params - sum(blocks)
        gathered = (root + 2 * max(blocks)) * c + (root + max(blocks)) * 4
    autocast = 2 * params if dtype == torch.bfloat16 and t.precision != "bf16-fsdp" else 0
    chosen, none, every = activations or activation_bytes(cfg, model, dtype, cuda)
    return MemoryPlan(world_size, shards, tensor, "fp32" if dtype == torch.float32 else
                      ("bf16-fsdp" if t.precision == "bf16-fsdp" else "bf16"),
                      t.activation_checkpointing, *state, gathered, autocast, chosen, none, every)


def activation_bytes(cfg: Config, model: torch.nn.Module, dtype: torch.dtype, cuda: bool = False
                     ) -> tuple[int, int, int]:
    """(with the configured checkpointing, without, every block) for one micro-batch on one rank,
    traced on meta."""
    t = cfg.train
    B, T, tensor = t.micro_batch_size, cfg.data.seq_len, t.tensor_parallel
    none = _traced_activations(model, B, T, dtype, 0, cuda, tensor)
    every = _traced_activations(model, B, T, dtype, 1, cuda, tensor)
    chosen = {0: none, 1: every}.get(t.activation_checkpointing)
    if chosen is None:
        chosen = _traced_activations(model, B, T, dtype, t.activation_checkpointing, cuda, tensor)
    return chosen, none, every


def _traced_activations(model: torch.nn.Module, B: int, T: int, dtype: torch.dtype, every: int,
                        cuda: bool, tensor: int = 1) -> int:
    """Bytes autograd saves over one forward of (B, T) tokens through a copy of ``model``, traced on
    ``meta``, with one rank's shapes of a tensor group of ``tensor``. Parameters are not
    activations (they are counted apart); ``cuda``: planned for a GPU, where attention scores
    (B, h, T, T) are left out, as CUDA's fused attention keeps none, and the MoE's grouped matmul
    takes the fused grouped GEMM (``models.grouped.planned_device``)."""
    from ..models import build_model
    from .distributed import apply_activation_checkpointing

    with torch.device("meta"):
        model = build_model(model.config).to(dtype)
    narrow_to_one_rank(model, tensor)
    apply_activation_checkpointing(model, every)
    weights = {id(p) for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        base = t._base if t._base is not None else t  # meta storages have no address: one entry per base tensor
        if id(base) not in weights and not (cuda and t.dim() >= 3 and tuple(t.shape[-2:]) == (T, T)):
            saved[id(base)] = t.untyped_storage().nbytes()
        return t

    with torch.device("meta"):
        tokens = torch.zeros(B, T + 1, dtype=torch.long)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), planned_device("cuda" if cuda else "cpu"):
        out = model(tokens[:, :-1], targets=tokens[:, 1:])
    del out
    return sum(saved.values())


def gpus_needed(cfg: Config, model: torch.nn.Module, gpu_bytes: float = GPU_BYTES, most: int = 4096,
                activations: tuple | None = None) -> int | None:
    """The fewest GPUs of ``gpu_bytes`` a run fits on with FSDP2 (1, 2, 4, 8, then multiples of
    8; those ``train.tensor_parallel`` divides), planning on ``GPU_USABLE`` of each; None if not
    even ``most`` do (activations alone too large).
    ``activations``: ``activation_bytes``'s answer for CUDA, when already traced."""
    worlds = [w for w in [1, 2, 4] + list(range(8, most + 1, 8)) if w % cfg.train.tensor_parallel == 0]
    activations = activations or activation_bytes(cfg, model, compute_dtype(cfg.train.precision, cuda=True), cuda=True)
    fits = lambda w: (plan_memory(cfg, model, w, cuda=True, parallel="fsdp", activations=activations).total
                      <= GPU_USABLE * gpu_bytes)
    if not fits(most):
        return None
    lo, hi = 0, len(worlds) - 1  # the plan shrinks as the world grows: bisect
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(worlds[mid]) else (mid + 1, hi)
    return worlds[lo]

