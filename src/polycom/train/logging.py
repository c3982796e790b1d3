"""Run outputs: metrics.jsonl (always), TensorBoard (optional), a progress bar.

Only the main rank writes. On resume the JSONL file is cut back to the
checkpoint's step, so a run that crashed after its last checkpoint and was
resumed has each step exactly once. The cut copy is written to a temporary file
in the same folder, fsynced and renamed over the original, so a crash during it
leaves the old file whole. A torn last line (a crash or a full disk in mid-write)
is dropped with a warning; a bad line anywhere else is an error naming it.
"""

from __future__ import annotations

import errno
import json
import math
import sys
from pathlib import Path
from typing import Callable

from .checkpoint import DiskFullError
from .files import write_text_atomic

__all__ = ["MetricsLogger", "ProgressBar", "cut_metrics"]


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def _records_up_to(path: Path, step: int, say: Callable[..., None]) -> list[str]:
    lines = path.read_text().splitlines()
    kept = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines):
                say(f"warning: {path}: dropping the torn last line {number} ({line[:60]!r}), "
                    "left by a crash or a full disk")
                continue
            raise ValueError(f"{path}:{number}: not a JSON record ({e}); the file is damaged here, "
                             "fix or delete that line to resume") from None
        if not isinstance(record, dict):  # valid JSON that is no record (``123``) was an AttributeError
            raise ValueError(f"{path}:{number}: not a JSON object ({line[:60]!r}); the file is damaged here, "
                             "fix or delete that line to resume")
        if record.get("step", 0) <= step:
            kept.append(line)
    return kept


def cut_metrics(path: Path, step: int, say: Callable[..., None] = print) -> None:
    """Keep the records of steps <= ``step``; atomically (temporary file, fsync, rename)."""
    write_text_atomic(path, "".join(line + "\n" for line in _records_up_to(path, step, say)))


def _write_error(path: Path, exc: OSError) -> OSError:
    """One error naming the file: a full disk as ``DiskFullError``, anything else with its errno."""
    if exc.errno == errno.ENOSPC:
        return DiskFullError(errno.ENOSPC, f"no space left on device while writing {path}; the run stopped there "
                                           "(resume from its last checkpoint once there is space)")
    return OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}")


class MetricsLogger:
    def __init__(self, out_dir: Path, enabled: bool, tensorboard: bool = False, resume_step: int | None = None,
                 say: Callable[..., None] = print):
        self.enabled, self._broken = enabled, False
        self.path = Path(out_dir) / "metrics.jsonl"
        self.tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            cut_metrics(self.path, resume_step, say)
        elif resume_step is None:
            self.path.write_text("")
        self.file = open(self.path, "a")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(out_dir) / "tb"))

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        try:
            self.file.write(json.dumps({k: _jsonable(v) for k, v in record.items()}) + "\n")
            self.file.flush()
        except OSError as e:  # one error naming the file, not ENOSPC chained through every later flush
            self._broken = True
            raise _write_error(self.path, e) from None
        if self.tb is not None:
            kind = record.get("kind", "train")
            for k, v in record.items():
                if k not in ("step", "kind") and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(f"{kind}/{k}", v, record["step"])

    def close(self) -> None:
        if self.enabled:
            try:
                self.file.close()
            except OSError:
                if not self._broken:  # a failed write was reported already; its buffered rest cannot be written
                    raise
            if self.tb is not None:
                self.tb.close()


class ProgressBar:
    """tqdm with loss and tokens/s; tqdm itself shows the ETA. Prints through it."""

    def __init__(self, total: int, initial: int, enabled: bool, quiet: bool = False):
        self.bar, self.quiet = None, quiet
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr)

    def update(self, loss: float, tokens_per_s: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
            self.bar.update(1)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stdout)
        elif not self.quiet:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
