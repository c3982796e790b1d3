"""Writing run and result files so that a crash or a full disk never leaves a torn one.

A temporary file in the same folder, flushed and fsynced, then renamed over the target (atomic on
POSIX), then the folder fsynced so the rename itself is durable: a reader sees the old file or the
new one, never a part. Used for summary.json, the cut-back metrics.jsonl and compare's files.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

__all__ = ["write_text_atomic", "write_json_atomic"]


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, then rename over ``path`` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, default=str) + "\n")
