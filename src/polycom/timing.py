"""Interleaved timing: the one way polycom compares speeds on a shared, noisy machine.

Every variant runs once per round, in an order shuffled per round (seeded): a noisy
neighbour then slows all variants alike, and with a fixed order each variant would
always follow the same neighbour, whose cache and allocator footprint biases it the
same way every round. Used by ``polycom compare`` (train-step throughput) and by the
benchmarks.
"""

from __future__ import annotations

import random
import time
from typing import Callable

import torch

__all__ = ["sync", "time_round_robin_samples"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_round_robin_samples(fns: dict[str, Callable[[], object]], device: torch.device, rounds: int,
                             warmup: int = 2) -> dict[str, list[float]]:
    """Seconds of each call of each function, ``rounds`` interleaved calls each; sample i of
    every function comes from the same round, so per-round ratios are paired."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    order, shuffler = list(fns), random.Random(0)
    for _ in range(rounds):
        shuffler.shuffle(order)
        for name in order:
            sync(device)
            start = time.perf_counter()
            fns[name]()
            sync(device)
            samples[name].append(time.perf_counter() - start)
    return samples
