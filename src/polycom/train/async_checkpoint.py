"""Sharded checkpoints written in the background (``train.checkpoint_async``), under the same rules
as ``sharded_checkpoint.save_sharded``: same folder layout, checksums and atomic publication.

``AsyncCheckpointer.save`` returns once every rank has copied its shards of the model and the
optimizer into new host memory (``host_copy``); ``torch.distributed.checkpoint.async_save`` writes
the files from that copy on background threads while training goes on. A background task then waits for both
writes, hashes this rank's files and commits the checkpoint (``sharded_checkpoint.commit``): only
when every rank's write has finished does the folder get its final name and ``latest`` point at
it, so a crash or SIGKILL during the write leaves the previous checkpoint as the one a resume picks.

At most one save is in flight: ``save`` first waits for the previous one, and the trainer calls
``wait`` before the run ends (also on an exception) and before it reads ``latest``. ``wait`` raises
the background write's error (a full disk is ``DiskFullError`` naming the folder and the checkpoint
kept). Every rank reaches ``wait`` at the same point of its loop, so every rank raises alike.

The two DCP writes and the commit run their collectives on process groups of their own (gloo, on
the CPU): sharing the training thread's group, collectives of two threads could pair up
differently on each rank. The copy held while a save is in flight is this rank's share of the
parameters and of AdamW's two moments, in host memory.
"""

from __future__ import annotations

import copy
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ..errors import UsageError
from .checkpoint import _is_disk_full
from .sharded_checkpoint import MODEL, OPTIMIZER, commit, disk_full, start_folder, state_dicts

__all__ = ["AsyncCheckpointer"]


def host_copy(state_dict: dict) -> dict:
    """``state_dict`` with every tensor copied into new host memory, tensors already on the CPU
    included (a mere move to the CPU would leave those shared with the live model, which the next
    optimizer step changes while the write runs); DTensors stay DTensors of the same placement."""
    from torch.distributed._state_dict_utils import _copy_state_dict, _create_cpu_state_dict

    return _copy_state_dict(state_dict, _create_cpu_state_dict(state_dict))


def _copied_state_writer(path: Path):
    """DCP's file writer for a state dict that ``host_copy`` has copied already: its staging (DCP's
    copy before ``async_save`` returns) passes the dict on as it is."""
    from torch.distributed.checkpoint import FileSystemWriter

    class CopiedStateWriter(FileSystemWriter):
        def stage(self, state_dict: dict) -> dict:
            self.per_thread_copy_ahead = 0  # the write reads host memory: nothing to copy ahead
            return state_dict

    return CopiedStateWriter(str(path))


class AsyncCheckpointer:
    """Sharded saves that return once the state is copied to host memory; one in flight at a time.
    Like ``save_sharded``, ``save`` is collective: every rank calls it at the same step."""

    def __init__(self):
        import torch.distributed.checkpoint as dcp

        try:  # host_copy's helpers are torch's private ones: a torch without them is refused here, not mid-run
            from torch.distributed._state_dict_utils import _copy_state_dict, _create_cpu_state_dict  # noqa: F401
            has_host_copy = True
        except ImportError:
            has_host_copy = False
        if not (has_host_copy and hasattr(dcp, "async_save")):
            raise UsageError(f"train.checkpoint_async=true needs torch.distributed.checkpoint.async_save and its "
                             f"host-copy helpers, which torch {torch.__version__} lacks; upgrade torch or set "
                             "train.checkpoint_async=false")
        self._async_save = dcp.async_save
        self.groups: tuple | None = None  # formed at the first save, which every rank reaches together
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="polycom-checkpoint-commit")
        self.pending: Future | None = None

    def save(self, out_dir: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict,
             config_yaml: str, keep: int) -> None:
        """Start writing checkpoint ``step`` (collective); the state is copied before this returns."""
        self.wait()
        if self.groups is None:
            self.groups = (dist.new_group(backend="gloo"), dist.new_group(backend="gloo")) \
                if dist.is_initialized() else (None, None)
        if not dist.is_initialized():  # DCP's warning that it assumes one process, on every save: it does
            warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        tmp = start_folder(out_dir, step)
        model_state, optim_state = state_dicts(model, optimizer)
        # Both copied before either write starts: a write's thread would compete with the copy.
        model_state, optim_tensors = host_copy(model_state), host_copy({"state": optim_state["state"]})
        writes = [self._write(model_state, tmp / MODEL, self.groups[0]),
                  self._write(optim_tensors, tmp / OPTIMIZER, self.groups[1])]
        # The scheduler's and RNG states, copied now: the loop goes on changing them.
        state = copy.deepcopy({**state, "step": step, "param_groups": optim_state["param_groups"]})
        self.pending = self.pool.submit(self._finish, out_dir, tmp, writes, state, config_yaml, keep)

    def _write(self, state_dict: dict, path: Path, group) -> Future:
        response = self._async_save(state_dict, storage_writer=_copied_state_writer(path), process_group=group)
        return getattr(response, "upload_completion", response)  # an AsyncSaveResponse when staging is async

    def _finish(self, out_dir: Path, tmp: Path, writes: list[Future], state: dict, config_yaml: str,
                keep: int) -> Path:
        from torch.distributed.checkpoint.api import CheckpointException

        failed = []
        for write, path in zip(writes, (tmp / MODEL, tmp / OPTIMIZER)):
            try:
                write.result()  # DCP raises on every rank when one rank's write failed
            except (Exception, CheckpointException) as exc:  # DCP's is a BaseException
                failed.append((exc, path))
        if failed:  # both writes have ended: neither still uses its group
            exc, path = failed[0]
            if _is_disk_full(exc):
                raise disk_full(out_dir, tmp, path) from exc
            raise exc
        return commit(out_dir, tmp, state, config_yaml, keep, group=self.groups[0])

    def wait(self) -> Path | None:
        """Wait for the save in flight and return its published folder (None if there was none);
        raises its error."""
        pending, self.pending = self.pending, None
        return None if pending is None else pending.result()

    def close(self) -> None:
        """Wait for the save in flight, then release the thread and the process groups."""
        try:
            self.wait()
        finally:
            self.pool.shutdown(wait=True)
            for group in self.groups or ():
                if group is not None:
                    dist.destroy_process_group(group)
            self.groups = None
