"""Everything that knows about processes and devices; the model and loop stay rank-free.

The same command runs alone, under ``torchrun --nproc_per_node N``, or as the N
tasks of a submitit or Slurm job: ``adopt_launcher_env`` turns submitit's job
environment (``submitit.helpers.TorchDistributedEnvironment``) or Slurm's variables
(SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, the first host of the node list) into
torchrun's (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), so everything
after it reads one set of names. ``init_distributed`` joins the group, NCCL on CUDA
and gloo on CPU; ``parallelize`` wraps the model in DDP or FSDP2 (``fully_shard`` on
every block, then the root; ``train.precision=bf16-fsdp`` adds FSDP2's
``MixedPrecisionPolicy``), after ``apply_activation_checkpointing`` wrapped the
blocks that recompute. Checkpoint state dicts go through
``torch.distributed.checkpoint.state_dict``, keyed by parameter name under any wrapping.
"""

from __future__ import annotations

import os
import subprocess
import zlib
from dataclasses import dataclass
from typing import Callable, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from ..errors import UsageError

__all__ = ["DistInfo", "resolve_device", "resolve_mode", "adopt_launcher_env", "launcher_world_size",
           "init_distributed", "parallelize", "apply_activation_checkpointing", "checkpointed_blocks",
           "mixed_precision_policy", "barrier", "broadcast_object", "gather_objects", "reshard",
           "all_reduce", "main_first", "model_state_dict", "optimizer_state_dict", "load_model_state_dict",
           "load_optimizer_state_dict", "shutdown"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    tensor_parallel: int = 1  # ranks per tensor-parallel group: consecutive ranks, the (data, tensor) mesh

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def data_rank(self) -> int:
        """This rank's place among the data-parallel replicas (the ranks of a tensor group share it)."""
        return self.rank // self.tensor_parallel

    @property
    def data_size(self) -> int:
        return self.world_size // self.tensor_parallel

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


T = TypeVar("T")
DEVICES = "auto, cpu, cuda, cuda:N, mps"


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: cuda (this process's local GPU) > mps > cpu. A device this machine lacks
    is a UsageError naming ``train.device``, raised before anything is built."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.backends.cuda.is_built():
            raise UsageError(f"train.device={name}: this torch build ({torch.__version__}) has no CUDA; "
                             f"use train.device=cpu or auto (valid: {DEVICES})")
        if not torch.cuda.is_available():
            raise UsageError(f"train.device={name}: no CUDA device is visible (CUDA_VISIBLE_DEVICES="
                             f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}); use train.device=cpu or auto")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        if device.index >= torch.cuda.device_count():
            raise UsageError(f"train.device={name}: cuda:{device.index} does not exist, this machine has "
                             f"{torch.cuda.device_count()} GPU(s)")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError(f"train.device={name}: MPS is not available here; use train.device=cpu or auto")
    return device


def adopt_launcher_env() -> None:
    """Export torchrun's variables for a task of a submitit or Slurm job with several tasks.

    torchrun's own (WORLD_SIZE set) are kept as they are. Inside a submitit job
    (``SUBMITIT_EXECUTOR`` set), submitit's ``TorchDistributedEnvironment`` exports them
    (its master port is a function of the job id, so every task agrees). Under a bare
    ``srun`` (SLURM_NTASKS > 1), they come from SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID,
    the first host of SLURM_JOB_NODELIST and a port derived from SLURM_JOB_ID.
    """
    if "WORLD_SIZE" in os.environ:
        return
    if "SUBMITIT_EXECUTOR" in os.environ:
        import submitit

        if submitit.JobEnvironment().num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        return
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        job = os.environ.get("SLURM_JOB_ID", "0")
        os.environ.update(RANK=os.environ["SLURM_PROCID"], WORLD_SIZE=os.environ["SLURM_NTASKS"],
                          LOCAL_RANK=os.environ.get("SLURM_LOCALID", "0"))
        os.environ.setdefault("MASTER_ADDR", _first_slurm_host())
        os.environ.setdefault("MASTER_PORT", str(20000 + zlib.crc32(job.encode()) % 40000))


def _first_slurm_host() -> str:
    nodes = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST") or "localhost"
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=True)
        return out.stdout.split()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        if "[" in nodes:
            raise UsageError(f"SLURM_JOB_NODELIST={nodes}: cannot expand it without scontrol; set MASTER_ADDR "
                             "to the first node's host name") from None
        return nodes.split(",")[0]


def launcher_world_size() -> int:
    """The number of processes of this run as its launcher declares it (1 alone)."""
    adopt_launcher_env()
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device_name: str, parallel: str = "auto") -> tuple[DistInfo, torch.device]:
    """Join the launcher's process group if there is one; return (rank info, device).

    ``parallel="fsdp"`` in a single process forms a process group of one (an in-memory store, no
    launcher): FSDP2 needs a group, and sharding over one rank is how one GPU gets FSDP2's
    ``MixedPrecisionPolicy`` (``train.precision=bf16-fsdp``) and the same code path as a cluster."""
    world = launcher_world_size()
    if world == 1:
        device = resolve_device(device_name)
        if parallel == "fsdp" and not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=dist.HashStore(),
                                    rank=0, world_size=1)
        return DistInfo(), device
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    device = resolve_device(device_name, info.local_rank)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend)
    return info, device


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def broadcast_object(value):
    """Rank 0's ``value`` (any picklable object) on every rank; ``value`` itself without a group."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(value) -> list:
    """Every rank's ``value``, in rank order, on every rank; ``[value]`` without a group."""
    if not dist.is_initialized():
        return [value]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def reshard(model: nn.Module) -> None:
    """Free FSDP2's unsharded parameters left by a forward without backward (evaluation): the root
    keeps its all-gathered parameters after forward, registered in place of the shards, which an
    optimizer or a state dict would then no longer find. No-op without FSDP2."""
    if hasattr(model, "reshard"):
        model.reshard()


def all_reduce(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks, in place (a no-op in one process)."""
    if dist.is_initialized():
        dist.all_reduce(t)
    return t


def main_first(fn: Callable[[bool], T], info: DistInfo) -> T:
    """``fn(is_main)`` on rank 0, then, if it succeeded, on every other rank (which then
    finds rank 0's work cached). An input error on rank 0 is raised on every rank.

    Rank 0 runs ``fn`` inside ``try`` and broadcasts ``None`` or the error it raised (one
    gloo/NCCL object broadcast, the first collective after the process group). The other
    ranks raise that same error, so a bad corpus reads as one message from each rank,
    not as rank 0's message plus a peer's "connection closed" crash. Errors other than
    ``ValueError`` (bugs) are still re-raised with their traceback on rank 0.
    """
    if not dist.is_initialized():
        return fn(True)
    error = None
    if info.is_main:
        try:
            result = fn(True)
        except Exception as e:
            error = e
    # The exception travels pickled; ValueError subclasses carry just their message.
    sent = [error if isinstance(error, ValueError) or error is None
            else RuntimeError(f"rank 0 failed: {type(error).__name__}: {error}")]
    dist.broadcast_object_list(sent, src=0)
    if sent[0] is not None:
        # Every rank holds the error before any rank exits: otherwise rank 0 could close the group
        # while a peer is still receiving (a "connection closed" crash instead of the message).
        dist.barrier()
    if info.is_main:
        if error is not None:
            raise error
        return result
    if sent[0] is not None:
        raise sent[0]
    return fn(False)


def _fully_shard():
    try:
        from torch.distributed.fsdp import fully_shard  # torch >= 2.6
    except ImportError:
        from torch.distributed._composable.fsdp import fully_shard  # torch 2.4 / 2.5
    return fully_shard


def parallelize(model: nn.Module, mode: str, info: DistInfo, device: torch.device, precision: str = "fp32"
                ) -> nn.Module:
    """``none``: unchanged; ``ddp``: DistributedDataParallel; ``fsdp``: FSDP2 per block + root."""
    mode = resolve_mode(mode, info)
    if mode == "none":
        return model
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    _shard(model, precision)
    return model


def resolve_mode(mode: str, info: DistInfo) -> str:
    if mode == "auto":
        mode = "ddp" if info.enabled else "none"
    # FSDP2 runs on a group of one (init_distributed forms it); DDP of one process would only add
    # a gradient copy.
    if mode == "ddp" and not info.enabled:
        raise UsageError(f"train.parallel={mode} needs several processes: launch with "
                         f"torchrun --nproc_per_node N -m polycom.cli train ... (or use train.parallel=auto; "
                         f"train.parallel=fsdp runs in one process too)")
    return mode


def mixed_precision_policy(dtype: torch.dtype, output_dtype: torch.dtype | None = None):
    """FSDP2's policy: parameters all-gathered in ``dtype`` for compute, the unit's floating-point
    inputs cast to ``dtype``, its outputs to ``output_dtype`` (None: left as computed), gradients
    reduced in fp32."""
    try:
        from torch.distributed.fsdp import MixedPrecisionPolicy  # torch >= 2.6
    except ImportError:
        from torch.distributed._composable.fsdp import MixedPrecisionPolicy
    return MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32, output_dtype=output_dtype)


def _shard(model: nn.Module, precision: str = "fp32", mesh=None) -> None:
    """``fully_shard`` every block, then the root. ``bf16-fsdp``: bf16 parameters in compute and
    fp32 gradient reduction, except activations with coefficients, which get their own unit that
    computes in fp32 (fp32 coefficients, its bf16 input cast up) and hands bf16 to the next matmul:
    PolyCom's powers and norms stay fp32."""
    fully_shard = _fully_shard()
    if precision == "bf16-fsdp":
        low = mixed_precision_policy(torch.bfloat16)
        exact = mixed_precision_policy(torch.float32, output_dtype=torch.bfloat16)
        for block in model.layers:
            act = getattr(getattr(block, "mlp", None), "act", None)
            if act is not None and any(True for _ in act.parameters()):
                fully_shard(act, mesh=mesh, mp_policy=exact)
            fully_shard(block, mesh=mesh, mp_policy=low)
        fully_shard(model, mesh=mesh, mp_policy=low)
        return
    for block in model.layers:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)


def build_tensor_parallel(build: Callable[[], nn.Module], info: DistInfo, device: torch.device,
                          prepare: Callable[[nn.Module], None] = lambda m: None, precision: str = "fp32"
                          ) -> nn.Module:
    """``train.tensor_parallel`` > 1: a 2-D (data, tensor) DeviceMesh; every rank builds the model
    (the same seed, the same weights), ``tensor_parallel.apply_tensor_parallel`` shards it over the
    tensor dimension, ``prepare`` wraps blocks for activation checkpointing, then FSDP2 shards it
    over the data dimension, as torchtitan does."""
    from torch.distributed.device_mesh import init_device_mesh

    from .tensor_parallel import apply_tensor_parallel

    mesh = init_device_mesh(device.type, (info.data_size, info.tensor_parallel), mesh_dim_names=("dp", "tp"))
    model = build().to(device)
    apply_tensor_parallel(model, mesh["tp"])
    prepare(model)
    _shard(model, precision, mesh["dp"])
    return model


def checkpointed_blocks(n_layers: int, every: int) -> list[int]:
    """The blocks that recompute their forward in backward: ``every`` 0: none; 1: all; k: 0, k, 2k, ..."""
    return list(range(0, n_layers, every)) if every else []


def apply_activation_checkpointing(model: nn.Module, every: int) -> None:
    """Wrap the blocks of ``checkpointed_blocks`` in torch's ``checkpoint_wrapper`` (non-reentrant
    ``torch.utils.checkpoint``): they keep only their input for backward and run their forward
    again there. State-dict keys are unchanged (the wrapper strips its prefix)."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    for i in checkpointed_blocks(len(model.layers), every):
        model.layers[i] = checkpoint_wrapper(model.layers[i])


def build_sharded(build: Callable[[], nn.Module], info: DistInfo, device: torch.device,
                  prepare: Callable[[nn.Module], None] = lambda m: None, precision: str = "fp32") -> nn.Module:
    """An FSDP2 model whose full weights exist on rank 0 only, once, in CPU memory.

    Every rank builds the model on the meta device (no memory), shards it and
    allocates only its own shards on ``device``; rank 0 builds the initialised
    model on CPU and broadcasts each shard. A 7B model thus costs one full copy
    per machine's rank 0 instead of one per rank. The result equals
    ``parallelize(build(), "fsdp", ...)`` with the same seed.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    full_state = build().state_dict() if info.is_main else {}
    with torch.device("meta"):
        model = build()
    prepare(model)  # activation checkpointing wraps blocks before they are sharded
    _shard(model, precision)
    model.to_empty(device=device)
    for module in model.modules():  # non-persistent buffers (RoPE tables) are derived, not loaded
        if hasattr(module, "reset_buffers"):
            module.reset_buffers()
    set_model_state_dict(model, full_state, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    return model


def _options(full: bool = True):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=full, cpu_offload=dist.is_initialized())


def model_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options())


def optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_options())


def load_model_state_dict(model: nn.Module, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(model, state, options=_options())


def load_optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=_options())
