"""Checks of a config against this machine, run before any data, tokenizer or model is built.

``config.py`` validates values on their own (``optim.lr > 0``) and ``check_paths``
that the corpus exists; these are the remaining mistakes that would otherwise surface
as a traceback minutes later, deep inside torch or Hugging Face: a device this torch
build or machine lacks, a distributed mode without torchrun, more threads than cores, a
model or micro-batch larger than the memory available (``memory_estimate.py``), an output
or cache folder that is an existing file or not writable, a local tokenizer path with no
tokenizer in it. Each raises ``UsageError`` naming the key and the fix; the CLI prints it
as one line.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import UsageError
from . import distributed as D
from .config import Config
from .memory_estimate import check_memory

__all__ = ["check"]


def check(cfg: Config) -> None:
    """Raise ``UsageError`` for the first config value this machine cannot honour."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = D.resolve_device(cfg.train.device, int(os.environ.get("LOCAL_RANK", "0")))
    D.resolve_mode(cfg.train.parallel, D.DistInfo(world_size=world))
    _check_threads(cfg.train.threads)
    check_memory(cfg, device, world)
    _check_folder("train.out_dir", Path(cfg.train.out_dir))
    if cfg.data.cache_dir:
        _check_folder("data.cache_dir", Path(cfg.data.cache_dir))
    else:
        from ..data import default_cache_dir

        _check_folder("data.cache_dir (default: $POLYCOM_CACHE or ~/.cache/polycom)", default_cache_dir())
    if cfg.data.tokenizer.startswith("hf:"):
        _check_tokenizer_path(cfg.data.tokenizer[3:])


def _check_threads(threads: int) -> None:
    # Each torch thread reserves a stack and an OpenMP slot: 100000 of them end in a MemoryError,
    # and more threads than cores only make the cores take turns.
    cores = os.cpu_count() or 1
    if threads > cores:
        raise UsageError(f"train.threads={threads} is more than the {cores} CPU cores of this machine; "
                         f"use at most {cores} (0 = torch's default)")


def _check_folder(key: str, path: Path) -> None:
    """``path`` is, or can be created as, a folder we may write in: neither it nor a parent is
    a file, and its nearest existing folder accepts a new file."""
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                what = "is an existing file" if p == path else f"is inside {str(p)!r}, an existing file"
                raise UsageError(f"{key}={str(path)!r} {what}; it must be a folder (choose another path)")
            _check_writable(key, path, p)
            return


def _check_writable(key: str, path: Path, folder: Path) -> None:
    """Create and remove a file in ``folder``. Only trying is truthful: permission bits do not
    bind root, and neither they nor ``os.access`` see every read-only or full file system."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        what = "is not writable" if folder == path else f"cannot be created: {str(folder)!r} is not writable"
        raise UsageError(f"{key}={str(path)!r} {what} ({reason}); choose another folder") from None


def _check_tokenizer_path(name: str) -> None:
    """A local ``hf:`` tokenizer must hold a tokenizer.json; hub names are checked when loaded."""
    from ..data.tokenizer import looks_like_path

    path = Path(name)
    if path.is_dir() and not (path / "tokenizer.json").is_file():
        raise UsageError(f"data.tokenizer=hf:{name}: the folder has no tokenizer.json "
                         "(give a tokenizer.json file, a folder holding one, or a hub name)")
    if not path.exists() and looks_like_path(name):
        raise UsageError(f"data.tokenizer=hf:{name}: no such file or folder")
