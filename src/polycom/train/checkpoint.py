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
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "rng_state", "set_rng_state"]

LATEST = "latest"


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
    save_file(_unshare(model_state), str(tmp / "model.safetensors"), metadata={"step": str(step)})
    torch.save(optim_state, tmp / "optimizer.pt")
    torch.save({**state, "step": step}, tmp / "state.pt")
    (tmp / "config.yaml").write_text(config_yaml)
    for f in tmp.iterdir():
        _fsync_file(f)
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


def load_checkpoint(folder: Path) -> dict:
    """``{"model": state_dict, "optimizer": ..., "state": ..., "config_yaml": str}``."""
    folder = Path(folder)
    return {
        "model": load_file(str(folder / "model.safetensors")),
        "optimizer": torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=False),
        "state": torch.load(folder / "state.pt", map_location="cpu", weights_only=False),
        "config_yaml": (folder / "config.yaml").read_text(),
    }
