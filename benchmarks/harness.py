"""Shared measurement helpers for polycom benchmarks.

Timings are taken round-robin: every variant runs once per round and the median
over rounds is reported, so a noisy neighbour slows all variants alike and the
ratios printed side by side stay meaningful.
"""

from __future__ import annotations

import statistics
import types
from typing import Callable

import torch

from polycom.environment import machine_description  # noqa: F401 - re-exported for the benchmarks
from polycom.timing import sync, time_round_robin_samples  # noqa: F401 - re-exported


def time_round_robin(fns: dict[str, Callable[[], object]], device: torch.device, rounds: int,
                     warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each function, measured interleaved (``polycom.timing``)."""
    return {name: statistics.median(s) for name, s in time_round_robin_samples(fns, device, rounds, warmup).items()}


def paired_ratio(numerator: list[float], denominator: list[float]) -> tuple[float, float, float]:
    """Median and interquartile range of the per-round ratios of two interleaved sample lists
    (``time_round_robin_samples``): sample i of both comes from round i, so a slow round
    slows both and drops out of the ratio."""
    ratios = [a / b for a, b in zip(numerator, denominator)]
    if len(ratios) < 2:
        return ratios[0], ratios[0], ratios[0]
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return median, q1, q3


def compile_static(fn: Callable) -> Callable:
    """``torch.compile(fn, dynamic=False)`` through a wrapper with a code object of its own.

    Dynamo keeps its compile cache and recompile limit (8) per code object; a private copy
    per call of this function means many shapes and grad modes in one process never reach it.
    """

    def call(*args):
        return fn(*args)

    own = types.FunctionType(call.__code__.replace(), call.__globals__, call.__name__, None, call.__closure__)
    return torch.compile(own, dynamic=False)


def gigabytes_per_second(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e9


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
