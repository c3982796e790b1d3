"""Motif's bounded PolyNorm with its input clamp inside the fused op, against the separate clamp it replaced.

Forward + backward of one (M, N) activation, ``compiled`` implementation, round-robin in one process
(per-round ratios paired: median and interquartile range). Variants per op (PolyNorm, gated PolyNorm):

- ``plain``: the paper's op, no bound (the cost to match);
- ``separate clamp``: the previous path, kept here as the baseline: ``x.clamp(-c, c)`` as its own
  elementwise op (its own forward pass and masked backward pass), then the plain fused op with
  Motif's coefficient maps;
- ``fused bound``: ``bounds=MOTIF_BOUNDS``, the clamp and the gradient mask inside the op's kernels.

Outputs and gradients of the last two are checked equal first.

    PYTHONPATH=src python benchmarks/bench_motif_bound.py              # CPU, float32, 2048 x 4096
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from harness import machine_description, markdown_table, paired_ratio, time_round_robin_samples  # noqa: E402

from polycom import functional as PF  # noqa: E402
from polycom.activations.polynorm_bounds import MOTIF_BOUNDS, PolyNormBounds  # noqa: E402

COEFFICIENT_MAPS = PolyNormBounds(sigmoid_coefficients=True, bias_bound=0.5, output_scale=0.5)  # Motif's, no clamp


def _step(op, x, up, weight, bias, grad_y, bounds, clamp_first):
    """One forward + backward; returns the output and the gradients (for the equality check)."""
    leaves = [t.detach().requires_grad_(True) for t in (x, up, weight, bias)]
    gate = leaves[0].clamp(-MOTIF_BOUNDS.input_bound, MOTIF_BOUNDS.input_bound) if clamp_first else leaves[0]
    if op == "polynorm":
        y = PF.poly_norm(gate, leaves[2], leaves[3], implementation="compiled", bounds=bounds)
    else:
        y = PF.gated_poly_norm(gate, leaves[1], leaves[2], leaves[3], implementation="compiled", bounds=bounds)
    y.backward(grad_y)
    return y, [t.grad for t in leaves if t.grad is not None]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--features", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    device = torch.device("cpu")
    g = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(args.rows, args.features, generator=g)
    x[0, :4] = torch.tensor([2e6, -3e6, 1e6, -1e6])  # beyond and at Motif's bound: the clamp acts
    up = torch.randn(args.rows, args.features, generator=g)
    grad_y = torch.randn(args.rows, args.features, generator=g)
    weight, bias = torch.randn(3, generator=g), torch.tensor([0.2])
    print(f"# {machine_description(device)}; {datetime.date.today()}; x ({args.rows}, {args.features}) fp32, "
          f"compiled, forward + backward, {args.rounds} rounds")

    variants = {"plain": (PolyNormBounds(), False), "separate clamp": (COEFFICIENT_MAPS, True),
                "fused bound": (MOTIF_BOUNDS, False)}
    fns = {}
    for op in ("polynorm", "gated_polynorm"):
        separate = _step(op, x, up, weight, bias, grad_y, *variants["separate clamp"])
        fused = _step(op, x, up, weight, bias, grad_y, *variants["fused bound"])
        for a, b in zip([separate[0], *separate[1]], [fused[0], *fused[1]]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        for name, (bounds, clamp_first) in variants.items():
            fns[(op, name)] = (lambda op=op, bounds=bounds, clamp_first=clamp_first:
                               _step(op, x, up, weight, bias, grad_y, bounds, clamp_first))
    samples = time_round_robin_samples(fns, device, args.rounds)
    rows = []
    for op, name in fns:
        ms = statistics.median(samples[(op, name)]) * 1e3
        median, q1, q3 = paired_ratio(samples[(op, name)], samples[(op, "plain")])
        rows.append([op, name, f"{ms:.1f}", f"{median:.2f} [{q1:.2f}, {q3:.2f}]"])
    print(markdown_table(["op", "variant", "ms (median)", "/ plain: median of per-round ratios [IQR]"], rows))


if __name__ == "__main__":
    main()
