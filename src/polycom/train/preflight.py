"""Checks of a config against this machine, run before any data, tokenizer or model is built.

``config.py`` validates values on their own (``optim.lr > 0``) and ``check_paths``
that the corpus exists; these are the remaining mistakes that would otherwise surface
as a traceback minutes later, deep inside torch or Hugging Face: a device this torch
build or machine lacks, a distributed mode without torchrun, an output or cache folder
that is an existing file, a local tokenizer path with no tokenizer in it. Each raises
``UsageError`` naming the key and the fix; the CLI prints it as one line.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UsageError
from . import distributed as D
from .config import Config

__all__ = ["check"]


def check(cfg: Config) -> None:
    """Raise ``UsageError`` for the first config value this machine cannot honour."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    D.resolve_device(cfg.train.device, int(os.environ.get("LOCAL_RANK", "0")))
    D.resolve_mode(cfg.train.parallel, D.DistInfo(world_size=world))
    _check_folder("train.out_dir", Path(cfg.train.out_dir))
    if cfg.data.cache_dir:
        _check_folder("data.cache_dir", Path(cfg.data.cache_dir))
    else:
        from ..data import default_cache_dir

        _check_folder("data.cache_dir (default: $POLYCOM_CACHE or ~/.cache/polycom)", default_cache_dir())
    if cfg.data.tokenizer.startswith("hf:"):
        _check_tokenizer_path(cfg.data.tokenizer[3:])


def _check_folder(key: str, path: Path) -> None:
    """``path`` is, or can be created as, a folder: neither it nor a parent is a file."""
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                what = "is an existing file" if p == path else f"is inside {str(p)!r}, an existing file"
                raise UsageError(f"{key}={str(path)!r} {what}; it must be a folder (choose another path)")
            return


def _check_tokenizer_path(name: str) -> None:
    """A local ``hf:`` tokenizer must hold a tokenizer.json; hub names are checked when loaded."""
    from ..data.tokenizer import looks_like_path

    path = Path(name)
    if path.is_dir() and not (path / "tokenizer.json").is_file():
        raise UsageError(f"data.tokenizer=hf:{name}: the folder has no tokenizer.json "
                         "(give a tokenizer.json file, a folder holding one, or a hub name)")
    if not path.exists() and looks_like_path(name):
        raise UsageError(f"data.tokenizer=hf:{name}: no such file or folder")
