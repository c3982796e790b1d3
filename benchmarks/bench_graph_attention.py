"""Polynormer's global attention (O(N), polycom.graph.attention.linear_global_attention) against full
softmax attention (O(N^2)): forward time, training-step time and peak memory vs the number of nodes.

Each (attention, N) point runs in a forked child process with one thread: its peak resident memory
(``ru_maxrss``) above the level after the inputs were built is the step's extra memory, and a child's
timings are not disturbed by another point's allocations. The module timed is one global attention
block: q/k/v projections (queries = keys, as Polynormer's default), the attention, an output
projection; the training step adds ``sum(out^2).backward()``. Softmax runs only where its score
matrices fit ``--softmax-max-bytes``. The log-log slope of time and memory vs N is fitted by least
squares over the points with N >= ``--fit-from`` (below, fixed per-call costs flatten the curve).

    python benchmarks/bench_graph_attention.py                  # 1e3 .. 1e6 nodes
    python benchmarks/bench_graph_attention.py --nodes 1000,3000 --repeats 2 --out /tmp/b.md
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import resource
import statistics
import time

import numpy as np
import torch
from torch import nn

from polycom.environment import machine_description
from polycom.graph.attention import linear_global_attention, softmax_attention

ATTENTIONS = {"linear": linear_global_attention, "softmax": softmax_attention}


class GlobalAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, kind: str):
        super().__init__()
        self.heads, self.attention = heads, ATTENTIONS[kind]
        self.k, self.v, self.out = nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x):
        n = x.shape[0]
        k = self.k(x).view(n, self.heads, -1)  # (N, heads, d)
        v = self.v(x).view(n, self.heads, -1)
        return self.out(self.attention(k, k, v).reshape(n, -1))


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _measure(kind: str, n: int, width: int, heads: int, repeats: int, queue) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    block = GlobalAttentionBlock(width, heads, kind)
    x = torch.randn(n, width)
    before = _max_rss_bytes()
    block(x).square().sum().backward()  # the peak of one training step
    memory = _max_rss_bytes() - before

    def forward():
        with torch.no_grad():
            block(x)

    def step():
        block.zero_grad(set_to_none=True)
        block(x).square().sum().backward()

    times = {}
    for name, fn in (("forward", forward), ("step", step)):
        fn()
        samples = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t)
        times[name] = statistics.median(samples)
    queue.put({"forward_s": times["forward"], "step_s": times["step"], "memory_bytes": memory})


def measure(kind: str, n: int, width: int, heads: int, repeats: int) -> dict:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    p = ctx.Process(target=_measure, args=(kind, n, width, heads, repeats, queue))
    p.start()
    result = queue.get()
    p.join()
    return result


def softmax_bytes(n: int, heads: int) -> int:
    """The (heads, N, N) float32 scores, their softmax and its gradient: three N^2 matrices per head."""
    return 3 * heads * n * n * 4


def slope(nodes, values, fit_from: float) -> float:
    pts = [(a, b) for a, b in zip(nodes, values) if a >= fit_from and b > 0]
    if len(pts) < 2:
        return math.nan
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", default="1000,3000,10000,30000,100000,300000,1000000")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--heads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--softmax-max-bytes", type=float, default=2e9)
    ap.add_argument("--fit-from", type=float, default=3e3)
    ap.add_argument("--out", help="also write the markdown here")
    args = ap.parse_args(argv)
    nodes = [int(float(n)) for n in args.nodes.split(",")]
    rows, series = [], {k: {"n": [], "forward_s": [], "step_s": [], "memory_bytes": []} for k in ATTENTIONS}
    for n in nodes:
        for kind in ATTENTIONS:
            if kind == "softmax" and softmax_bytes(n, args.heads) > args.softmax_max_bytes:
                rows.append(f"| {n:,} | {kind} | skipped: its scores need {softmax_bytes(n, args.heads) / 1e9:.1f} GB | | |")
                continue
            r = measure(kind, n, args.width, args.heads, args.repeats)
            for key in ("forward_s", "step_s", "memory_bytes"):
                series[kind][key].append(r[key])
            series[kind]["n"].append(n)
            rows.append(f"| {n:,} | {kind} | {1e3 * r['forward_s']:.2f} | {1e3 * r['step_s']:.2f} | "
                        f"{r['memory_bytes'] / 2**20:.1f} |")
            print(rows[-1], flush=True)
    fits = [f"| {kind} | " + " | ".join(f"{slope(s['n'], s[key], args.fit_from):.2f}"
                                          for key in ("forward_s", "step_s", "memory_bytes")) + f" | {len(s['n'])} |"
            for kind, s in series.items()]
    text = "\n".join([
        f"Machine: {machine_description(torch.device('cpu'))}; one thread per measurement; width {args.width}, "
        f"{args.heads} head(s); median of {args.repeats} calls after one warm-up; memory: peak RSS of one training "
        "step above the level after the inputs were built (forked child per point).", "",
        "| nodes | attention | forward ms | training step ms | step peak extra MiB |", "|---|---|---|---|---|",
        *rows, "", f"Log-log slopes (least squares over N >= {args.fit_from:g}):", "",
        "| attention | forward time | step time | step memory | points |", "|---|---|---|---|---|", *fits])
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return text


if __name__ == "__main__":
    main()
