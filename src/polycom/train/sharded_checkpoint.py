"""Sharded checkpoints of a run with several processes, written by ``torch.distributed.checkpoint`` (DCP).

Layout of one checkpoint (the rest of ``checkpoint.py``'s rules apply unchanged: a hidden
temporary folder, renamed into place, then ``latest``; ``checksums.json``; ``weights_only``)::

    step_00000200/  model/      .metadata  __0_0.distcp  __1_0.distcp ...   every rank its own shards
                    optimizer/  .metadata  __0_0.distcp  __1_0.distcp ...   AdamW's moments, sharded alike
                    state.pt    config.yaml  checksums.json                   written by rank 0 (small)

Nothing is gathered on one rank: each rank writes the shards it holds (FSDP2's DTensor shards;
under DDP, DCP spreads the replicated tensors over the ranks), hashes the files it wrote and
sends rank 0 only their sizes and SHA-256s. ``state.pt`` holds the step, scheduler, RNG
states, data position and the optimizer's param groups (plain values), so the DCP folders hold
tensors only. A checkpoint loads under any world size and wrapping: DCP reshards on load
(2 ranks FSDP2 -> 1 process, DDP -> FSDP2, ...). The folder must be on a file system every
rank sees.

Loading never runs code from the folder: tensors are read by DCP with
``torch.load(weights_only=True)``; ``.metadata`` (a pickle) is read by ``_SafeUnpickler``,
which builds DCP's metadata classes, torch sizes and dtypes and nothing else; a checkpoint
holding non-tensor entries (which DCP would unpickle freely) is refused.

``async_checkpoint.py`` writes the same layout in the background (``train.checkpoint_async``),
through ``start_folder``, ``state_dicts`` and ``commit`` below.
"""

from __future__ import annotations

import errno
import os
import pickle
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from .checkpoint import (CHECKSUMS, CorruptCheckpointError, CheckpointError, DiskFullError, _fsync_file,
                         _is_disk_full, _publish, _sha256, _torch_load, _verify, _write_checksums,
                         checkpoint_step, latest_checkpoint)
from .distributed import barrier, broadcast_object, gather_objects

__all__ = ["save_sharded", "start_folder", "state_dicts", "commit", "disk_full", "load_sharded", "read_model_state",
           "read_state", "is_sharded", "verify_sharded"]

MODEL, OPTIMIZER = "model", "optimizer"


def is_sharded(folder: Path) -> bool:
    return (Path(folder) / MODEL / ".metadata").is_file()


def _rank() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def _own_files(tmp: Path, rank: int) -> list[Path]:
    """The shard files this rank wrote (DCP names them ``__RANK_N.distcp``)."""
    return sorted(f for sub in (MODEL, OPTIMIZER) for f in (tmp / sub).glob(f"__{rank}_*.distcp"))


def save_sharded(out_dir: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict,
                 config_yaml: str, keep: int = 2) -> Path:
    """Write checkpoint ``step`` from every rank (collective), then publish it atomically on rank 0."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    tmp = start_folder(out_dir, step)
    model_state, optim_state = state_dicts(model, optimizer)
    writing = tmp / MODEL
    try:
        dcp.save(model_state, checkpoint_id=str(writing))
        writing = tmp / OPTIMIZER
        dcp.save({"state": optim_state["state"]}, checkpoint_id=str(writing))
    except (Exception, CheckpointException) as exc:  # DCP's, a BaseException, on every rank when one rank's write failed
        if _is_disk_full(exc):
            raise disk_full(out_dir, tmp, writing) from exc
        raise
    state = {**state, "step": step, "param_groups": optim_state["param_groups"]}
    return commit(out_dir, tmp, state, config_yaml, keep)


def start_folder(out_dir: Path, step: int) -> Path:
    """The hidden temporary folder checkpoint ``step`` is written into, empty, named by rank 0 (collective)."""
    root = Path(out_dir) / "checkpoints"
    tmp = root / broadcast_object(f".tmp-step_{step:08d}-{os.getpid()}")  # rank 0's name: one folder for all ranks
    if _rank()[0] == 0:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    barrier()
    return tmp


def state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """(model, optimizer) state dicts of this rank's shards, keyed by parameter name (DCP's own)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    return get_model_state_dict(model), get_optimizer_state_dict(model, optimizer)


def commit(out_dir: Path, tmp: Path, state: dict, config_yaml: str, keep: int, group=None) -> Path:
    """After every rank wrote its shards into ``tmp``: fsync and hash them, write rank 0's small files
    and ``checksums.json``, then publish the folder (rename, ``latest``, pruning to ``keep``).
    Collective over ``group`` (None: the default group). Each phase ends in one gather of every
    rank's outcome, so a failure on one rank is raised on all of them (``_on_every_rank``)."""
    rank, _ = _rank()

    def hash_own_files(progress: dict) -> dict:
        sums = {}
        for f in _own_files(tmp, rank):
            progress["writing"] = f
            _fsync_file(f)
            sums[str(f.relative_to(tmp))] = {"size": f.stat().st_size, "sha256": _sha256(f)}
        return sums

    def write_rank0_files(progress: dict, sums: dict) -> None:
        progress["writing"] = tmp / "state.pt"
        torch.save(state, progress["writing"])
        progress["writing"] = tmp / "config.yaml"
        progress["writing"].write_text(config_yaml)
        for sub in (MODEL, OPTIMIZER):
            f = tmp / sub / ".metadata"
            _fsync_file(f)
            sums[str(f.relative_to(tmp))] = {"size": f.stat().st_size, "sha256": _sha256(f)}
        progress["writing"] = tmp / CHECKSUMS
        _write_checksums(tmp, sums)
        for f in tmp.iterdir():
            if f.is_file():
                _fsync_file(f)

    step = state["step"]
    parts = _on_every_rank(hash_own_files, step, out_dir, tmp, group)
    sums = {k: v for part in parts for k, v in part.items()}
    # The gather above was the barrier: every rank's shards are on disk before rank 0 goes on.
    _on_every_rank(lambda progress: write_rank0_files(progress, sums) if rank == 0 else None, step, out_dir, tmp,
                   group)
    final = tmp.parent / f"step_{step:08d}"
    _on_every_rank(lambda progress: _publish(tmp.parent, tmp, final.name, keep) if rank == 0 else None,
                   step, out_dir, tmp, group)
    return final


def _on_every_rank(work, step: int, out_dir: Path, tmp: Path, group) -> list:
    """``work(progress)`` on this rank, then one gather of every rank's outcome: every rank's result,
    or, if ``work`` failed on any rank, that failure raised on every rank (``DiskFullError`` when a
    disk filled, this rank's own exception, else the failing rank named). Without it, the ranks
    whose work succeeded would wait at the next collective for a peer that gave up, until the
    process group's timeout. ``progress["writing"]``: the file being written, for the disk-full
    message."""
    progress = {"writing": tmp}
    result, failure = None, None
    try:
        result = work(progress)
    except Exception as exc:  # noqa: BLE001 - sent to the peers, then raised below
        failure = exc
    report = None if failure is None else (_is_disk_full(failure), f"{type(failure).__name__}: {failure}",
                                           str(progress["writing"]))
    outcomes = _gather((result, report), group)
    failed = [(r, report) for r, (_, report) in enumerate(outcomes) if report is not None]
    if not failed:
        return [result for result, _ in outcomes]
    full = next((report for _, report in failed if report[0]), None)
    if full is not None:
        raise disk_full(out_dir, tmp, Path(full[2])) from failure
    if failure is not None:
        raise failure
    rank, (_, message, _) = failed[0]
    raise CheckpointError(f"checkpoint step {step}: rank {rank} failed while committing it ({message}); "
                          "the last good checkpoint is kept")


def disk_full(out_dir: Path, tmp: Path, writing: Path) -> DiskFullError:
    """The error for a full disk while ``writing``, naming the checkpoint kept; rank 0 removes the
    partial folder first."""
    if _rank()[0] == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    last = latest_checkpoint(out_dir)
    kept = f"the last good checkpoint step {checkpoint_step(last)} is kept" if last else "no checkpoint is kept yet"
    return DiskFullError(errno.ENOSPC, f"no space left on device while writing {writing}; {kept}")


def _gather(value, group) -> list:
    """``gather_objects`` over ``group``: a background save collects its checksums on a group of its
    own, as collectives of two threads on one group could pair up differently on each rank."""
    if group is None or not dist.is_initialized():
        return gather_objects(value)
    out = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, value, group=group)
    return out


def verify_sharded(folder: Path, sums: dict | None, subfolders=(MODEL, OPTIMIZER)) -> None:
    """Check every file of ``subfolders`` against ``sums``; the ranks share the work (file i on rank
    i mod world) and every rank raises the same ``CorruptCheckpointError`` if one file fails."""
    rank, world = _rank()
    names = sorted(str(f.relative_to(folder)) for sub in subfolders if (folder / sub).is_dir()
                   for f in (folder / sub).iterdir())
    if sums is not None:
        names = sorted(set(names) | {n for n in sums if n.split("/")[0] in subfolders})
    errors = []
    for i, name in enumerate(names):
        if i % world == rank:
            try:
                _verify(folder, name, sums)
            except CorruptCheckpointError as e:
                errors.append(str(e))
    errors = [e for part in gather_objects(errors) for e in part]
    if errors:
        raise CorruptCheckpointError(errors[0])


class _SafeUnpickler(pickle.Unpickler):
    """DCP's ``.metadata`` pickle, with only the classes it holds: anything else is refused."""

    _MODULES = ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem",
                "torch.distributed.checkpoint.planner")
    _NAMES = {("torch", "Size"), ("torch.serialization", "_get_layout"), ("collections", "OrderedDict"),
              ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "Path")}

    def find_class(self, module: str, name: str):
        if module in self._MODULES or (module, name) in self._NAMES \
                or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name}")


def _reader(path: Path):
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    class SafeReader(FileSystemReader):
        def read_metadata(self, *args, **kwargs):
            meta_path = Path(self.path) / ".metadata"
            try:
                with open(meta_path, "rb") as f:
                    metadata = _SafeUnpickler(f).load()
            except pickle.UnpicklingError as e:
                raise CheckpointError(f"{meta_path}: refused: it holds {e}, not only DCP's metadata classes "
                                      "(it could run code when loaded)") from None
            if any(isinstance(m, BytesStorageMetadata) for m in metadata.state_dict_metadata.values()):
                raise CheckpointError(f"{meta_path}: refused: it lists non-tensor entries, which DCP unpickles "
                                      "freely (polycom's checkpoints hold tensors only)")
            if getattr(metadata, "storage_meta", None) is not None:
                metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeReader(str(path))


def _load(state: dict, path: Path) -> None:
    import torch.distributed.checkpoint as dcp

    dcp.load(state, storage_reader=_reader(path), no_dist=not dist.is_initialized())


def load_sharded(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, param_groups: list) -> None:
    """Load a sharded checkpoint into the live ``model`` and ``optimizer`` (collective), resharding
    from whatever world size and wrapping wrote it."""
    from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                         set_model_state_dict, set_optimizer_state_dict)

    folder = Path(folder)
    model_state = get_model_state_dict(model)
    _load(model_state, folder / MODEL)
    set_model_state_dict(model, model_state)
    optim_state = get_optimizer_state_dict(model, optimizer)  # allocates AdamW's state for DCP to fill
    tensors = {"state": optim_state["state"]}
    _load(tensors, folder / OPTIMIZER)
    set_optimizer_state_dict(model, optimizer, {"state": tensors["state"], "param_groups": param_groups})


def read_model_state(folder: Path) -> dict[str, torch.Tensor]:
    """The full (unsharded) model state dict of a sharded checkpoint, in this process, on CPU:
    what ``polycom export``, ``analyze`` and ``generate`` read. Verifies ``model/`` first."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    from .checkpoint import _checksums

    folder = Path(folder)
    sums = _checksums(folder)
    for name in sorted(str(f.relative_to(folder)) for f in (folder / MODEL).iterdir()):
        _verify(folder, name, sums)
    metadata = _reader(folder / MODEL).read_metadata()
    state = {key: torch.empty(meta.size, dtype=meta.properties.dtype)
             for key, meta in metadata.state_dict_metadata.items() if isinstance(meta, TensorStorageMetadata)}
    import torch.distributed.checkpoint as dcp

    dcp.load(state, storage_reader=_reader(folder / MODEL), no_dist=True)
    return state


def read_state(folder: Path) -> dict:
    """``state.pt`` of a checkpoint (weights_only)."""
    return _torch_load(Path(folder) / "state.pt")
