"""Token streams on disk as memory-mapped shards, and the batch sampler over them.

A split (``train`` or ``val``) is a list of flat binary files of token ids
(uint16 when the vocabulary fits, else uint32), read through ``np.memmap`` so a
corpus of any size costs no memory. Documents are laid end to end, each followed
by the tokenizer's end-of-text id.

Sampling: the stream is cut into non-overlapping windows of ``seq_len + 1``
tokens (inputs and shifted targets). Global sample ``k`` is window
``perm_e[k mod W]`` of epoch ``e = k // W``, where ``perm_e`` is a permutation
seeded by ``(seed, e)``. A training step with global batch ``G`` consumes samples
``[step * G, (step + 1) * G)``; each rank and micro-step takes a disjoint slice of
that range, so no sample is duplicated or skipped whatever the world size, and
the data position is simply the step.

Integrity: ``meta.json`` records each shard's ``n_tokens``, ``size`` (bytes) and ``sha256``
(hashed while writing, no extra read). ``TokenStream`` checks every shard's size against
``n_tokens`` (a stat, free) and refuses a mismatch naming the file; ``shard_damage`` also
checks the SHA-256 (one read of the shards), which ``prepare_data`` does once per run to
rebuild a damaged cache entry from the corpus.

Validation (``BatchSampler.validation``) uses the same windows with a permutation
seeded by the constant ``VALIDATION_SEED``, never by the training seed: its first
``K`` samples are ``K`` distinct windows drawn uniformly from the whole split (not
the first ``K`` in file order, which would validate on whatever the corpus starts
with), and every run on the same data, whatever its activation or seed, validates
on exactly the same windows.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["ShardWriter", "TokenStream", "BatchSampler", "token_dtype", "shard_damage", "ShardError"]

MAX_SHARD_TOKENS = 1 << 28  # 512 MiB of uint16 per file
VALIDATION_SEED = 271828  # a constant, so every run in a comparison validates on the same windows


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


class ShardError(ValueError):
    """A token shard whose size or bytes differ from its ``meta.json``; the message names the file."""


def _size_damage(path: Path, shard: dict, itemsize: int) -> str | None:
    want = shard.get("size", shard["n_tokens"] * itemsize)
    size = path.stat().st_size if path.is_file() else None
    if size != want:
        return f"{path}: {'missing' if size is None else f'{size} bytes'}, meta.json says {want} (truncated or changed)"
    return None


def shard_damage(folder: Path) -> str | None:
    """Why a shard folder's files differ from its ``meta.json`` (size, then SHA-256 where recorded), else None."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text())
        itemsize = np.dtype(meta["dtype"]).itemsize
        shards = [s for info in meta["splits"].values() for s in info["shards"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{folder / 'meta.json'}: unreadable ({e})"
    for shard in shards:
        path = folder / shard["file"]
        why = _size_damage(path, shard, itemsize)
        if why:
            return why
        if "sha256" in shard:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 22):
                    h.update(chunk)
            if h.hexdigest() != shard["sha256"]:
                return f"{path}: SHA-256 differs from meta.json's (the file is corrupt or was changed)"
    return None


class ShardWriter:
    """Appends token ids of one split to ``{split}-00000.bin``, ``-00001.bin``, ..."""

    def __init__(self, folder: Path, split: str, dtype: np.dtype, max_tokens: int = MAX_SHARD_TOKENS):
        self.folder, self.split, self.dtype, self.max_tokens = folder, split, dtype, max_tokens
        self.shards: list[dict] = []
        self.n_tokens = self.n_bytes = self.n_documents = 0
        self._file = self._hash = None

    def add(self, ids: list[int], n_bytes: int) -> None:
        arr = np.asarray(ids, dtype=self.dtype)
        self.n_documents += 1
        self.n_bytes += n_bytes
        while len(arr):
            if self._file is None or self.shards[-1]["n_tokens"] >= self.max_tokens:
                self._open_next()
            room = self.max_tokens - self.shards[-1]["n_tokens"]
            chunk, arr = arr[:room], arr[room:]
            data = chunk.tobytes()
            self._file.write(data)
            self._hash.update(data)
            self.shards[-1]["n_tokens"] += len(chunk)
            self.n_tokens += len(chunk)

    def _open_next(self) -> None:
        self._finish()
        name = f"{self.split}-{len(self.shards):05d}.bin"
        self._file, self._hash = open(self.folder / name, "wb"), hashlib.sha256()
        self.shards.append({"file": name, "n_tokens": 0})

    def _finish(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self.shards[-1].update(size=self.shards[-1]["n_tokens"] * self.dtype.itemsize,
                                   sha256=self._hash.hexdigest())
            self._file = None

    def close(self) -> dict:
        self._finish()
        return {"shards": self.shards, "n_tokens": self.n_tokens, "n_bytes": self.n_bytes,
                "n_documents": self.n_documents}


class TokenStream:
    """One split's shards as a single read-only sequence of token ids."""

    def __init__(self, folder: Path, split: str):
        meta = json.loads((Path(folder) / "meta.json").read_text())
        info = meta["splits"][split]
        dtype = np.dtype(meta["dtype"])
        self.split = split
        self.n_bytes = info["n_bytes"]
        for shard in info["shards"]:
            why = _size_damage(Path(folder) / shard["file"], shard, dtype.itemsize)
            if why:
                raise ShardError(f"{why}; delete {folder} to rebuild this token cache entry from the corpus")
        self.shards = [np.memmap(Path(folder) / s["file"], dtype=dtype, mode="r") for s in info["shards"] if s["n_tokens"]]
        self.offsets = np.cumsum([0] + [len(s) for s in self.shards])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def slice(self, start: int, stop: int) -> np.ndarray:
        """Tokens ``[start, stop)`` as int64, crossing shard boundaries when needed."""
        parts = []
        i = int(np.searchsorted(self.offsets, start, side="right")) - 1
        while start < stop:
            local = start - self.offsets[i]
            take = min(stop - start, len(self.shards[i]) - local)
            parts.append(self.shards[i][local:local + take])
            start += take
            i += 1
        return np.concatenate(parts).astype(np.int64) if len(parts) > 1 else parts[0].astype(np.int64)


@dataclass
class BatchSampler:
    """Deterministic windows of ``seq_len + 1`` tokens; see the module docstring."""

    stream: TokenStream
    seq_len: int
    seed: int = 0
    shuffle: bool = True

    def __post_init__(self):
        self.n_windows = (len(self.stream) - 1) // self.seq_len
        if self.n_windows < 1:
            raise ValueError(f"the {self.stream.split} split has {len(self.stream)} tokens, fewer than "
                             f"data.seq_len + 1 = {self.seq_len + 1}; use more data or a shorter data.seq_len")
        self._epoch, self._perm = -1, None

    @classmethod
    def validation(cls, stream: TokenStream, seq_len: int) -> "BatchSampler":
        """Samples ``0..K-1`` are ``K`` distinct windows spread uniformly over the split,
        the same for every run (seed ``VALIDATION_SEED``, not ``train.seed``)."""
        return cls(stream, seq_len, seed=VALIDATION_SEED, shuffle=True)

    def window_of(self, sample: int) -> int:
        epoch, k = divmod(sample, self.n_windows)
        if not self.shuffle:
            return k
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._epoch, self._perm = epoch, rng.permutation(self.n_windows)
        return int(self._perm[k])

    def batch(self, samples: range | list[int]) -> torch.Tensor:
        """``(len(samples), seq_len + 1)`` int64 token ids."""
        T = self.seq_len
        rows = [self.stream.slice(w * T, w * T + T + 1) for w in map(self.window_of, samples)]
        return torch.from_numpy(np.stack(rows))

    def micro_batch(self, step: int, micro_step: int, rank: int, world_size: int,
                    micro_batch_size: int, grad_accum: int) -> torch.Tensor:
        """The ``(B, T + 1)`` slice of step ``step`` owned by (micro_step, rank)."""
        global_batch = micro_batch_size * grad_accum * world_size
        start = step * global_batch + (micro_step * world_size + rank) * micro_batch_size
        return self.batch(range(start, start + micro_batch_size))
