"""Atomic checkpoints: a crash at any moment leaves the previous one loadable.

Layout of ``OUT/checkpoints`` (a run in one process)::

    step_00000200/  model.safetensors  optimizer.pt  state.pt  config.yaml  checksums.json
    latest          -> the text "step_00000200"

A run with several processes, or with ``train.checkpoint_async``, writes sharded checkpoints
instead (``sharded_checkpoint.py``: ``model/`` and ``optimizer/`` written by
``torch.distributed.checkpoint``, every rank its own shards), under the same rules below;
either kind resumes under any world size or wrapping.

A checkpoint is written into a hidden temporary folder, every file fsynced,
then the folder is renamed into place (atomic on POSIX) and only then is
``latest`` replaced (also by an atomic rename). A crash before the rename
leaves a stray temporary folder that is ignored and cleaned up next time;
``latest`` still names the previous, complete checkpoint.

``state.pt`` holds the step, scheduler, RNG states and data position;
``optimizer.pt`` the full (unsharded) optimizer state. Model weights are in
safetensors so other tools can read them without unpickling; the step and the corpus
hash are also in its metadata, so reading a model (``load_weights``: generate, export,
eval) needs no other file.

Run folders are shared and downloaded, so nothing in them may run code when loaded:
both ``.pt`` files hold only tensors and plain values and are read with
``torch.load(weights_only=True)`` (a file holding anything else is refused, naming it),
and every checkpoint is looked up inside the run's own ``checkpoints/`` folder only
(``latest`` must name a ``step_*`` folder there; links out of it are refused).

Every file of a checkpoint is verified on load: ``checksums.json``, written into the
temporary folder before the rename, holds each file's size and SHA-256. ``load_checkpoint``
(resume) checks every file; a newest checkpoint that fails (flipped bits, a truncated file,
or a file that does not load) is skipped with a one-line warning naming the file, and the
previous intact ``step_*`` folder is loaded instead; when none is left it raises
``CheckpointError`` naming the file. ``load_weights`` (generate, export, eval) checks
``model.safetensors`` only and refuses a mismatch the same way. A checkpoint written before
checksums were stored (no ``checksums.json``) loads unverified.

A full disk while writing (``ENOSPC``, or torch's ``inline_container.cc`` write failure,
which hides the errno) removes the partial temporary folder and raises ``DiskFullError``
naming the file and the last good checkpoint, which stays untouched.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import random
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

__all__ = ["save_checkpoint", "load_checkpoint", "load_weights", "latest_checkpoint", "checkpoint_step",
           "rng_state", "set_rng_state", "DiskFullError", "CheckpointError"]

LATEST = "latest"
CHECKSUMS = "checksums.json"
_STEP_NAME = re.compile(r"step_[0-9]+")


class CheckpointError(ValueError):
    """A checkpoint that must not be loaded: it points outside its run or holds code; the message names the file."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint file whose bytes differ from its stored checksum, or that does not load."""


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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _write_checksums(folder: Path, known: dict | None = None) -> None:
    """``checksums.json``: size and SHA-256 of every other file directly in ``folder``, plus ``known``
    (relative path -> size and SHA-256, computed where the file was written: the ranks' shards)."""
    sums = {**(known or {}), **{f.name: {"size": f.stat().st_size, "sha256": _sha256(f)}
                                for f in sorted(folder.iterdir()) if f.is_file() and f.name != CHECKSUMS}}
    (folder / CHECKSUMS).write_text(json.dumps(dict(sorted(sums.items())), indent=1))


def _checksums(folder: Path) -> dict | None:
    """The stored checksums of a checkpoint, None when it has none (written before they were stored)."""
    path = _file(folder, CHECKSUMS)
    if not path.exists():
        return None
    try:
        sums = json.loads(path.read_text())
        if not isinstance(sums, dict) or not all(isinstance(v, dict) for v in sums.values()):
            raise ValueError("not an object of objects")
        return sums
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptCheckpointError(f"{path}: unreadable ({e})") from None


def _verify(folder: Path, name: str, sums: dict | None) -> Path:
    """``folder/name`` after checking its size and SHA-256 against ``sums`` (skipped when None)."""
    path = _file(folder, name)
    if sums is None:
        return path
    if name not in sums:
        raise CorruptCheckpointError(f"{path}: not listed in {folder / CHECKSUMS}")
    if not path.is_file():
        raise CorruptCheckpointError(f"{path}: missing")
    size = path.stat().st_size
    if size != sums[name].get("size"):
        raise CorruptCheckpointError(f"{path}: refused: {size} bytes, {sums[name].get('size')} when it was "
                                     "saved (truncated or changed)")
    if _sha256(path) != sums[name].get("sha256"):
        raise CorruptCheckpointError(f"{path}: refused: its SHA-256 differs from the one stored when it was "
                                     "saved (the file is corrupt or was changed)")
    return path


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
    """Every RNG's state as tensors and plain values, so that ``weights_only=True`` can read it."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
             "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
                        "gauss_next": gauss_next}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore ``rng_state()``'s dict; older checkpoints stored numpy's and Python's states as they come."""
    numpy_state, python_state = state["numpy"], state["python"]
    if isinstance(numpy_state, dict):
        n = numpy_state
        numpy_state = (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    if isinstance(python_state, dict):
        p = python_state
        python_state = (p["version"], tuple(p["internal"].tolist()), p["gauss_next"])
    torch.set_rng_state(state["torch"])
    np.random.set_state(numpy_state)
    random.setstate(python_state)
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
        metadata = {"step": str(step)}
        if state.get("corpus_hash"):
            metadata["corpus_hash"] = str(state["corpus_hash"])
        save_file(_unshare(model_state), str(writing), metadata=metadata)
        writing = tmp / "optimizer.pt"
        torch.save(optim_state, writing)
        writing = tmp / "state.pt"
        torch.save({**state, "step": step}, writing)
        writing = tmp / "config.yaml"
        writing.write_text(config_yaml)
        writing = tmp / CHECKSUMS
        _write_checksums(tmp)
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
    _publish(root, tmp, name, keep)
    return final


def _publish(root: Path, tmp: Path, name: str, keep: int) -> None:
    """Rename the complete ``tmp`` folder to ``root/name``, point ``latest`` at it, prune to ``keep``."""
    final = root / name
    if final.exists():  # re-saving a step (e.g. a forced final save): replace the old copy
        shutil.rmtree(final)
    os.replace(tmp, final)
    pointer_tmp = root / f".{LATEST}.tmp"
    pointer_tmp.write_text(name)
    _fsync_file(pointer_tmp)
    os.replace(pointer_tmp, root / LATEST)
    _fsync_dir(root)
    _prune(root, keep, protect=name)


def _prune(root: Path, keep: int, protect: str) -> None:
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    for p in done[:-keep]:
        if p.name != protect:
            shutil.rmtree(p, ignore_errors=True)
    for p in root.glob(".tmp-step_*"):  # leftovers of crashed writes
        shutil.rmtree(p, ignore_errors=True)


def _inside(root: Path, folder: Path) -> Path:
    """``folder`` if it is a ``step_*`` folder directly in ``root`` (links resolved), else CheckpointError."""
    if not _STEP_NAME.fullmatch(folder.name) or folder.resolve().parent != root.resolve():
        raise CheckpointError(f"{folder}: not a checkpoint folder inside {root} (it resolves to "
                              f"{folder.resolve()}); polycom loads checkpoints only from the run's own checkpoints/")
    return folder


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The folder ``latest`` names, else the newest complete ``step_*`` folder, else None.

    Only folders inside ``OUT/checkpoints`` count: a ``latest`` naming anything else (``../..``,
    an absolute path) or a ``step_*`` link leading out of it raises ``CheckpointError``."""
    root = Path(out_dir) / "checkpoints"
    pointer = root / LATEST
    if pointer.is_symlink() or pointer.exists():
        if pointer.is_symlink() or not pointer.is_file():
            raise CheckpointError(f"{pointer}: not a plain file naming a checkpoint folder; delete it to use the "
                                  f"newest step_* folder in {root}")
        name = pointer.read_text(errors="replace")[:200].strip()
        if not _STEP_NAME.fullmatch(name):
            raise CheckpointError(f"{pointer}: names {name!r}, not a step_* folder inside {root}; polycom loads "
                                  "checkpoints only from the run's own checkpoints/ (fix or delete the file)")
        folder = root / name
        if (folder / "state.pt").exists():
            return _inside(root, folder)
    done = sorted(p for p in root.glob("step_*") if (p / "state.pt").exists())
    return _inside(root, done[-1]) if done else None


def checkpoint_step(folder: Path) -> int:
    """The step a checkpoint folder holds, from its name ``step_00000200``."""
    return int(Path(folder).name.removeprefix("step_"))


def _file(folder: Path, name: str) -> Path:
    """``folder/name`` (``name`` may be ``model/__0_0.distcp``), refused when it or a folder on the
    way is a link to elsewhere (another run's weights)."""
    path = folder / name
    if path.resolve() != folder.resolve().joinpath(name):
        raise CheckpointError(f"{path}: links to {path.resolve()}, outside its checkpoint folder; refusing to load it")
    return path


def _legacy_numpy_globals() -> list:
    """What a ``state.pt`` written before RNG states were stored as tensors needs besides tensors:
    numpy arrays (rebuilt from raw bytes and a dtype, which runs no code), nothing else."""
    core = getattr(np, "_core", None) or np.core
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def _torch_load(path: Path):
    """``torch.load(weights_only=True)``: tensors and plain values only; anything else -> CheckpointError."""
    try:
        with torch.serialization.safe_globals(_legacy_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path}: refused: it holds objects other than tensors and plain values, which could "
                              "run code when loaded (polycom's checkpoints hold none)") from None


def load_weights(folder: Path) -> tuple[dict, dict]:
    """(model state dict, safetensors metadata) of a checkpoint: the only file a model needs, no unpickling.
    Its checksum is verified; a mismatch raises ``CheckpointError`` naming the file."""
    from safetensors import safe_open

    folder = Path(folder)
    from .sharded_checkpoint import is_sharded, read_model_state, read_state

    if is_sharded(folder):
        model = read_model_state(folder)
        state = read_state(folder)
        metadata = {"step": str(state["step"])}
        if state.get("corpus_hash"):
            metadata["corpus_hash"] = str(state["corpus_hash"])
        return model, metadata
    path = _verify(folder, "model.safetensors", _checksums(folder))
    try:
        with safe_open(str(path), "pt") as f:
            metadata = dict(f.metadata() or {})
        return load_file(str(path)), metadata
    except Exception as e:  # safetensors' own error type: a truncated or damaged header
        raise CorruptCheckpointError(f"{path}: does not load ({e})") from None


def _load_verified(folder: Path) -> dict:
    from .sharded_checkpoint import is_sharded, verify_sharded

    sums = _checksums(folder)
    if is_sharded(folder):  # the shards are loaded into the live model by sharded_checkpoint.load_sharded
        verify_sharded(folder, sums)
        path = folder / "state.pt"
        try:
            state = _torch_load(_verify(folder, "state.pt", sums))
            path = _verify(folder, "config.yaml", sums)
            return {"model": None, "optimizer": None, "state": state, "config_yaml": path.read_text(),
                    "folder": folder, "sharded": True}
        except CheckpointError:
            raise
        except Exception as e:
            raise CorruptCheckpointError(f"{path}: does not load ({type(e).__name__}: {e})") from None
    path = _verify(folder, "model.safetensors", sums)
    try:
        model = load_file(str(path))
        path = _verify(folder, "optimizer.pt", sums)
        optimizer = _torch_load(path)
        path = _verify(folder, "state.pt", sums)
        state = _torch_load(path)
        path = _verify(folder, "config.yaml", sums)
        config_yaml = path.read_text()
    except CheckpointError:
        raise
    except Exception as e:  # a damaged file in a checkpoint without checksums: safetensors, torch or utf-8 errors
        raise CorruptCheckpointError(f"{path}: does not load ({type(e).__name__}: {e})") from None
    return {"model": model, "optimizer": optimizer, "state": state, "config_yaml": config_yaml, "folder": folder,
            "sharded": False}


def load_checkpoint(folder: Path, warn=None) -> dict:
    """``{"model": state_dict, "optimizer": ..., "state": ..., "config_yaml": str, "folder": Path,
    "sharded": bool}``: everything a resume needs, every file verified (a sharded checkpoint's
    model and optimizer are None here: ``sharded_checkpoint.load_sharded`` loads them into the
    live model; with several processes the ranks share the verification, collectively). A corrupt
    ``folder`` falls back to the newest intact earlier ``step_*`` folder beside it, with one ``warn``
    line (stderr by default) naming the bad file; ``"folder"`` is the one loaded. None intact:
    ``CheckpointError`` naming the bad file."""
    folder = Path(folder)
    root = folder.parent
    earlier = []
    if _STEP_NAME.fullmatch(folder.name):
        earlier = sorted((p for p in root.glob("step_*") if _STEP_NAME.fullmatch(p.name) and p.is_dir()
                          and (p / "state.pt").exists() and checkpoint_step(p) < checkpoint_step(folder)),
                         key=checkpoint_step, reverse=True)
    errors = []
    for candidate in [folder, *earlier]:
        try:
            loaded = _load_verified(candidate if candidate is folder else _inside(root, candidate))
        except CorruptCheckpointError as e:
            errors.append(str(e))
            continue
        if errors:
            (warn or (lambda message: print(message, file=sys.stderr)))(
                f"warning: {'; '.join(errors)}; resuming from the earlier intact checkpoint {candidate}")
        return loaded
    raise CheckpointError(f"{'; '.join(errors)}; no intact earlier checkpoint in {root} to fall back to")
