"""What ``run()`` returns: a typed record of one training run.

    result = run("tiny", ["train.steps=50"])
    result.val_loss, result.tokens_per_s, [(e.tokens, e.val_loss) for e in result.evals]
    result.val_sets["wiki"]["loss"]  # with eval.sets.wiki=...

``summary.json`` in the run folder is ``result.to_dict()``; ``RunResult.from_dict``
reads it back, so a sweep can reload finished runs without re-training them.
"""

from __future__ import annotations

import dataclasses
import resource
import sys
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

__all__ = ["Eval", "RunResult", "peak_memory_bytes"]

Status = Literal["completed", "stopped", "diverged", "failed"]


@dataclass
class Eval:
    """One validation pass: after ``step`` optimizer steps and ``tokens`` training tokens."""
    step: int
    tokens: int
    val_loss: float
    val_bpb: float
    val_tokens: int = 0
    sets: dict[str, dict] = field(default_factory=dict)  # eval.sets: name -> {loss, bpb, tokens}


@dataclass
class RunResult:
    status: Status
    final_step: int
    train_loss: float | None
    val_loss: float | None
    val_bpb: float | None
    val_sets: dict[str, dict] = field(default_factory=dict)  # the last eval's eval.sets: name -> {loss, bpb, tokens}
    evals: list[Eval] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)  # one per optimizer step run in this call
    tokens: int = 0  # training tokens seen up to final_step (all ranks)
    tokens_per_s: float = 0.0  # from the median steady-state step time
    step_time_s: float = 0.0
    elapsed_s: float = 0.0
    flops: float = 0.0
    flops_per_token: float = 0.0
    num_params: int = 0
    peak_memory_bytes: int = 0  # see peak_memory_bytes()
    out_dir: str = ""
    nan_report: dict | None = None
    step_times_s: list[float] = field(default_factory=list)
    data_wait_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)  # corpus, corpus_hash, tokenizer, device, precision, torch, ...

    def to_dict(self) -> dict:
        """JSON-serialisable (plain dicts, lists, numbers, strings)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunResult:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"RunResult.from_dict: unknown keys {sorted(unknown)}; valid: {sorted(names)}")
        kw = dict(d)
        kw["evals"] = [e if isinstance(e, Eval) else Eval(**e) for e in d.get("evals", [])]
        return cls(**kw)


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA: ``torch.cuda.max_memory_allocated`` (tensors only). CPU: the process's peak
    resident set size from ``getrusage`` (whole process, including Python and data)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # macOS reports bytes, Linux KiB
