"""Shared measurement helpers for polycom benchmarks.

Timings are taken round-robin: every variant runs once per round and the median
over rounds is reported, so a noisy neighbour slows all variants alike and the
ratios printed side by side stay meaningful.
"""

from __future__ import annotations

import statistics
from typing import Callable

import torch

from polycom.environment import machine_description  # noqa: F401 - re-exported for the benchmarks
from polycom.timing import sync, time_round_robin_samples  # noqa: F401 - sync re-exported


def time_round_robin(fns: dict[str, Callable[[], object]], device: torch.device, rounds: int,
                     warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each function, measured interleaved (``polycom.timing``)."""
    return {name: statistics.median(s) for name, s in time_round_robin_samples(fns, device, rounds, warmup).items()}


def cuda_ms_per_call(fn: Callable[[], object], iters: int = 20) -> float:
    """Milliseconds per call of ``fn`` by CUDA events around ``iters`` back-to-back calls, so
    launches overlap as inside a model and the host's Python cost hides behind the kernels."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def add_sweep_arguments(parser, features: str) -> None:
    """The shape options shared by the CUDA kernel benchmarks: dtypes x row lengths at a fixed size."""
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--features", default=features, help="comma-separated row lengths")
    parser.add_argument("--elements", type=int, default=64 * 1024 * 1024, help="rows = elements // features")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", help="also write the tables as a markdown fragment to this file")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


class Report:
    """Sections printed as they are measured and, with ``output``, written as markdown."""

    def __init__(self, output: str | None):
        self.output, self.sections = output, []

    def add(self, text: str) -> None:
        print("\n" + text, flush=True)
        self.sections.append(text)

    def write(self) -> None:
        if self.output:
            with open(self.output, "w") as f:
                f.write("\n\n".join(self.sections) + "\n")
