"""The run folder's rules: one writer at a time, one run per folder, a resume continues the same run.

``open_run_folder(cfg)`` is entered by ``run()`` before any data or model is touched:

- **one writer**: an exclusive ``fcntl.flock`` on ``OUT/.lock`` (which holds the pid and
  host) for the whole run. A second process is refused with the holder's pid. The kernel
  drops the lock when its process dies, so a lock left by a killed run is simply taken
  over (and said so). flock is per machine: two hosts writing one network folder are not
  detected.
- **one run**: a fresh start (``train.resume=false``) into a folder that already holds a
  run is refused, unless ``train.overwrite=true``, which first removes that run's files
  (``RUN_FILES``; other files, such as a sweep's ``plan.json``, stay).
- **nothing lost**: a resume with no checkpoint to continue from, in a folder that holds a
  run's files (a finished run whose ``checkpoints/`` was deleted, or one that died before its
  first checkpoint), is refused; only ``train.overwrite=true`` removes them.
- **the same run**: a resume compares the requested config with the saved
  ``OUT/config.yaml``. Keys in ``SAFE_TO_CHANGE`` may differ (their changes are returned, and
  logged in metrics.jsonl as a ``resume`` record); any other difference would make the
  continued run a different run than its first part, and is refused with every such key.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from .checkpoint import checkpoint_step, latest_checkpoint
from .config import Config

__all__ = ["RunFolderError", "RunFolderLock", "open_run_folder", "config_changes", "SAFE_TO_CHANGE", "RUN_FILES"]

# What the trainer writes into a run folder; ``train.overwrite`` removes exactly these.
RUN_FILES = ("config.yaml", "metrics.jsonl", "summary.json", "nan_report.json", "checkpoints", "tb")

# Keys a resume may change: how the run is observed, saved or executed, never what it computes
# (up to float rounding: micro_batch_size regroups the same global batch; device/parallel move it;
# activation_checkpointing recomputes the same forward).
# train.steps re-plans the cosine schedule over the new total from the resumed step on.
SAFE_TO_CHANGE = frozenset({
    "train.steps", "train.stop_at_step", "train.log_every", "train.eval_every", "train.checkpoint_every",
    "train.keep_checkpoints", "train.monitor_every", "train.threads", "train.progress", "train.tensorboard",
    "train.nan_guard", "train.checkpoint_async",
    "train.device", "train.parallel", "train.micro_batch_size", "train.compile", "train.out_dir", "data.cache_dir",
    "train.activation_checkpointing", "train.tensor_parallel",
    "eval.sets",  # what else is scored at the eval points; the training itself does not read them
})
_COMMANDS = ("train.resume", "train.overwrite")  # what to do with the folder, not settings of the run


class RunFolderError(ValueError):
    """The run folder is in use, holds another run, or cannot continue as asked."""


class RunFolderLock:
    """An exclusive, non-blocking ``flock`` on ``OUT/.lock``; the file names the holder."""

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / ".lock"
        self.fd: int | None = None

    def acquire(self) -> str | None:
        """Take the lock; returns the previous holder's description if it died holding it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_fd(fd) or "unknown pid"
            os.close(fd)
            raise RunFolderError(f"train.out_dir={self.path.parent} is in use by another run ({holder}); "
                                 "wait for it to finish or choose another train.out_dir") from None
        stale = _read_fd(fd)  # a clean release empties the file: text left here is a dead holder's
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self.fd = fd
        return stale or None

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing drops the flock; the file stays (unlinking it would race)
            self.fd = None


def _read_fd(fd: int) -> str:
    return os.pread(fd, 4096, 0).decode(errors="replace").strip()


def holds_run(out_dir: Path) -> bool:
    return any((Path(out_dir) / name).exists() for name in RUN_FILES)


def _clear_run(out_dir: Path) -> None:
    for name in RUN_FILES:
        path = Path(out_dir) / name
        if path.is_dir() and not path.is_symlink():  # a link is removed itself, never what it points to
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and prefix == "":  # sections; dict-valued keys (model.moe) stay whole
            flat.update(_flatten(value, f"{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _same(a, b) -> bool:
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return float(a) == float(b)
    if isinstance(a, str) and isinstance(b, numbers):  # YAML 1.1 reads "1e-08" as a string
        with contextlib.suppress(ValueError):
            return float(a) == float(b)
    return a == b


def config_changes(saved: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (saved value, new value) for every key whose value differs. A key the
    saved file lacks (written by an older version) counts as the default value."""
    old = {**_flatten(Config().to_dict()), **_flatten(saved)}
    return {k: (old[k], v) for k, v in _flatten(new).items()
            if k in old and k not in _COMMANDS and not _same(old[k], v)}


def _check_resume(out_dir: Path, cfg: Config, say: Callable[..., None]) -> dict[str, tuple[Any, Any]]:
    ckpt = latest_checkpoint(out_dir)
    if ckpt is None:
        held = [name for name in RUN_FILES if (out_dir / name).exists()]
        if held:  # a run's history (perhaps a finished one) with nothing to continue from: never wiped here
            raise RunFolderError(
                f"train.resume: no checkpoint in {out_dir / 'checkpoints'} to continue from, but {out_dir} holds "
                f"an earlier run ({', '.join(held)}); nothing was changed. Start it again from step 0 with "
                "--overwrite (train.overwrite=true), which deletes those files, or choose another train.out_dir")
        return {}
    saved_path = out_dir / "config.yaml" if (out_dir / "config.yaml").exists() else ckpt / "config.yaml"
    changes = config_changes(yaml.safe_load(saved_path.read_text()) or {}, cfg.to_dict())
    refused = {k: v for k, v in changes.items() if k not in SAFE_TO_CHANGE}
    if refused:
        listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in sorted(refused.items()))
        raise RunFolderError(
            f"train.resume: the config differs from the run in {out_dir} ({saved_path.name}) in keys that "
            f"change what it computes: {listed}. Resume with the saved values, or start a new run in another "
            f"train.out_dir. Keys a resume may change: {', '.join(sorted(SAFE_TO_CHANGE))}")
    step = checkpoint_step(ckpt)
    if cfg.train.steps < step:
        raise RunFolderError(f"train.steps={cfg.train.steps} is below the checkpoint's step {step} "
                             f"in {out_dir}; use train.steps >= {step}")
    if changes:
        say("train.resume: changed " + ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items()))
    return changes


@contextlib.contextmanager
def open_run_folder(cfg: Config, say: Callable[..., None] = print) -> Iterator[dict[str, tuple[Any, Any]]]:
    """Lock ``train.out_dir`` and check that the run may start there (see the module docstring);
    yields the allowed config changes of a resume ({} otherwise). Main rank only."""
    t, out = cfg.train, Path(cfg.train.out_dir)
    if t.resume and t.overwrite:
        raise RunFolderError("train.resume and train.overwrite contradict each other: set one of them")
    lock = RunFolderLock(out)
    stale = lock.acquire()
    try:
        if stale:
            say(f"{out}: taking over the lock of a run that ended without releasing it ({stale})")
        if t.resume:
            changes = _check_resume(out, cfg, say)
        else:
            changes = {}
            if holds_run(out) and not t.overwrite:
                raise RunFolderError(
                    f"train.out_dir={out} already holds a run; continue it with --resume (train.resume=true), "
                    "choose a new train.out_dir, or replace it with --overwrite (train.overwrite=true)")
            if holds_run(out):
                say(f"train.overwrite: removing the previous run in {out}")
                _clear_run(out)
        yield changes
    finally:
        lock.release()
