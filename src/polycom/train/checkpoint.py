"""Atomic checkpoints: a crash at any moment leaves the previous one loadable.

Layout of ``OUT/checkpoints``::

    step_00000200/  model.safetensors  optimizer.pt  state.pt  config.yaml
    latest          -> the text "step_00000200"

A checkpoint is written into a hidden temporary folder, every file fsynced,
then the folder is renamed into place (atomic on POSIX) and only then is
``latest`` replaced (also by an atomic rename). A crash before the rename
leaves a stray temporary folder that is ignored and cleaned up next time;
``latest`` still names the previous, complete checkpoint.

``state.pt`` holds the step, scheduler, RNG states and data position;
``optimizer.pt`` the full (unsharded) optimizer state. Model weights are in
safetensors so other tools can read them without unpickling.

A full disk while writing (``ENOSPC``, or torch's ``inline_container.cc`` write failure,
which hides the errno) removes the partial temporary folder and raises ``DiskFullError``
naming the file and the last good checkpoint, which stays untouched.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "checkpoint_step", "rng_state",
           "set_rng_state", "DiskFullError"]

LATEST = "latest"


class DiskFullError(OSError):
    """No space left while writing a checkpoint; the message says which file and what is kept."""

    def __str__(self) -> str:
        return self.strerror


def _is_disk_full(exc: BaseException) -> bool:
    text = str(exc)
    return (getattr(exc, "errno", None) == errno.ENOSPC or "No space left on device" in text
            or "StorageFull" in text  # safetensors (Rust io::ErrorKind)
            or "inline_container.cc" in text)  # torch.save's writer: "file write failed", no errno


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unshare(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied embeddings): copy the repeats."""
    seen, out = set(), {}
    for k, v in state.items():
        v = v.detach().cpu().contiguous()
        key = (v.untyped_storage().data_ptr(), v.storage_offset())
        out[k] = v.clone() if key in seen else v
        seen.add(key)
    return out


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out_dir: Path, step: int, model_state: dict, optim_state: dict, state: dict,
                    config_yaml: str, keep: int = 2) -> Path:
    """Write checkpoint ``step`` atomically, point ``latest`` at it, prune to ``keep``."""
    root = Path(out_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:08d}"
    final, tmp = root / name, root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    writing = tmp / "model.safetensors"
    try:
        save_file(_unshare(model_state), str(writing), metadata={"step": str(step)})
        writing = tmp / "optimizer.pt"
        torch.save(optim_state, writing)
        writing = tmp / "state.pt"
        torch.save({**state, "step": step}, writing)
        writing = tmp / "config.yaml"
        writing.write_text(config_yaml)
        for f in tmp.iterdir():
            writing = f
            _fsync_file(f)
    except Exception as exc:  # safetensors raises its own error type, torch a RuntimeError
        if not _is_disk_full(exc):
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # free what the partial copy took
        last = latest_checkpoint(out_dir)
        kept = f"the last good checkpoint step {checkpoint_step(last)} is kept" if last else "no checkpoint is kept yet"
        raise DiskFullError(errno.ENOSPC, f"no space left on device while writing {writing}; {kept}") from exc
    if final.exists():  # re-saving a step (e.g. a forced final save): replace the old copy
        shutil.rmtree(final)
    os.replace(tmp, final)
    pointer_tmp = root / f".{LATEST}.tmp"
    pointer_tmp.write_text(name)
    _fsync_file(pointer_tmp)
    os.replace(pointer_tmp, root / LATEST)
    _fsync_dir(root)
    _prune(root, keep, protect=name)
    return final


def _prune(root: Path, keep: int, protect: str) -> None:
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    for p in done[:-keep]:
        if p.name != protect:
            shutil.rmtree(p, ignore_errors=True)
    for p in root.glob(".tmp-step_*"):  # leftovers of crashed writes
        shutil.rmtree(p, ignore_errors=True)


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The folder ``latest`` names, else the newest complete ``step_*`` folder, else None."""
    root = Path(out_dir) / "checkpoints"
    pointer = root / LATEST
    if pointer.exists():
        folder = root / pointer.read_text().strip()
        if (folder / "state.pt").exists():
            return folder
    done = sorted(p for p in root.glob("step_*") if (p / "state.pt").exists())
    return done[-1] if done else None


def checkpoint_step(folder: Path) -> int:
    """The step a checkpoint folder holds, from its name ``step_00000200``."""
    return int(Path(folder).name.removeprefix("step_"))


def load_checkpoint(folder: Path) -> dict:
    """``{"model": state_dict, "optimizer": ..., "state": ..., "config_yaml": str}``."""
    folder = Path(folder)
    return {
        "model": load_file(str(folder / "model.safetensors")),
        "optimizer": torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=False),
        "state": torch.load(folder / "state.pt", map_location="cpu", weights_only=False),
        "config_yaml": (folder / "config.yaml").read_text(),
    }
