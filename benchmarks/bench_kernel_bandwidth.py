"""Memory bandwidth of the PolyNorm Triton kernels alone, as a share of a copy's (CUDA only).

Each kernel is timed by CUDA events over back-to-back launches (no Python API, no
autograd), round-robin with ``x.clone()`` on a tensor of the same size, and its
bandwidth is the bytes it must move divided by its time:

    PolyNorm forward        read x, write y                    2 tensors
    PolyNorm backward       read g, x, write dx                3
    gated forward           read gate, up, write y             3
    gated backward          read g, gate, up, write dgate, dup 5

The issue's targets are forward >= 85% and backward >= 70% of the copy's bandwidth at
every width. Liger-Kernel's PolyNorm kernels (order 3) get their own rows where the
package is installed. Launch configurations are the library's (``triton_utils.row_launch_config``);
``tune_row_kernels.py`` searches them.

    python benchmarks/bench_kernel_bandwidth.py --dtypes float32,bfloat16 --features 1024,4096,16384,65536
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from harness import Report, add_sweep_arguments, cuda_ms_per_call, machine_description, markdown_table  # noqa: E402
from peers import liger_poly_norm_ops, liger_version  # noqa: E402

from polycom.ops import triton_poly_norm as tpn  # noqa: E402

EPS = 1e-6


# Tensors each kernel must move (each the size of x): see the module docstring.
TENSORS_MOVED = {"fwd": 2, "bwd": 3, "gated_fwd": 3, "gated_bwd": 5}
LABELS = {"fwd": "PolyNorm fwd", "bwd": "PolyNorm bwd", "gated_fwd": "gated fwd", "gated_bwd": "gated bwd"}


def row_kernel_calls(x, up, g, weight, bias, cfg=None):
    """kernel name (triton_utils.ROW_KERNELS) -> a call of polycom's kernel on these inputs.

    ``cfg`` forces a launch configuration (RowConfig) on every kernel; None uses the library's.
    """
    _, inv = tpn.poly_norm_forward_triton(x, weight, bias, EPS)
    _, inv_gate = tpn.gated_poly_norm_forward_triton(x, up, weight, bias, EPS)
    return {
        "fwd": lambda: tpn._forward(x, None, weight, bias, EPS, None, None, "fwd", cfg),
        "bwd": lambda: tpn._backward(g, x, None, weight, None, inv, None, None, "bwd", cfg),
        "gated_fwd": lambda: tpn._forward(x, up, weight, bias, EPS, None, None, "gated_fwd", cfg),
        "gated_bwd": lambda: tpn._backward(g, x, up, weight, bias, inv_gate, None, None, "gated_bwd", cfg),
    }


def _liger_kernels(liger, x, g, weight, bias):
    """Liger's forward and its default (in-place) backward, on a scratch gradient it may overwrite."""
    y_ref, _ = tpn.poly_norm_forward_triton(x, weight, bias, EPS)
    y, x2d, rstd, block, warps = liger.poly_norm_forward(x, weight, bias.view(()), EPS)
    agreement = ((y.float() - y_ref.float()).abs().max().item(), y_ref.float().abs().max().item())
    scratch = g.clone()
    return agreement, {
        "Liger fwd": (2, lambda: liger.poly_norm_forward(x, weight, bias.view(()), EPS)),
        "Liger bwd": (3, lambda: liger.poly_norm_backward(scratch, x2d, weight, rstd, block, warps, True)),
    }


def bench_shape(feats, elements, dtype, order, rounds, liger):
    rows = max(1, elements // feats)
    dev = torch.device("cuda")
    x = torch.randn(rows, feats, device=dev, dtype=dtype)
    up, g = torch.randn_like(x), torch.randn_like(x)
    weight = torch.full((order,), 1.0 / order, device=dev)
    bias = torch.zeros(1, device=dev)
    tensor_gb = x.numel() * x.element_size() / 1e9

    # label -> (tensors moved, call)
    calls = {"copy": (2, lambda: x.clone())}
    for name, fn in row_kernel_calls(x, up, g, weight, bias).items():
        calls[LABELS[name]] = (TENSORS_MOVED[name], fn)
    agreement = None
    if liger is not None and order == 3:
        agreement, peer = _liger_kernels(liger, x, g, weight, bias)
        calls.update(peer)

    samples = {key: [] for key in calls}
    for key, (_, fn) in calls.items():  # warm-up: compiles each kernel and grid once
        fn()
        fn()
    torch.cuda.synchronize()
    for _ in range(rounds):
        for key, (_, fn) in calls.items():
            samples[key].append(cuda_ms_per_call(fn))
    ms = {key: statistics.median(s) for key, s in samples.items()}
    copy_gbs = 2 * tensor_gb / ms["copy"] * 1e3
    result = {key: (ms[key], calls[key][0] * tensor_gb / ms[key] * 1e3) for key in calls}
    return rows, copy_gbs, result, agreement


def format_shape(feats, rows, dtype, copy_gbs, result, agreement):
    header = ["kernel", "ms", "GB/s", "% of copy"]
    lines = [[name, f"{t:.3f}", f"{gbs:.0f}", f"{100 * gbs / copy_gbs:.0f}%"] for name, (t, gbs) in result.items()]
    title = f"**{rows} x {feats}, {str(dtype).replace('torch.', '')}** (copy: {copy_gbs:.0f} GB/s)"
    note = "" if agreement is None else (
        f"\n\nLiger's forward vs polycom's: max |difference| {agreement[0]:.2e}, largest |y| {agreement[1]:.1f}."
    )
    return title + "\n\n" + markdown_table(header, lines) + note


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sweep_arguments(p, features="1024,4096,16384,65536")
    p.add_argument("--order", type=int, default=3)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench_kernel_bandwidth.py measures CUDA kernels: no CUDA device here")

    liger = liger_poly_norm_ops(torch.device("cuda"))
    report = Report(args.output)
    peers = f"; Liger-Kernel {liger_version()}" if liger is not None else ""
    report.add(
        f"Machine: {machine_description(torch.device('cuda'))}{peers}. Date: {datetime.date.today()}. "
        f"Order {args.order}; median of {args.rounds} rounds of 20 back-to-back launches."
    )
    for dtype in (getattr(torch, d) for d in args.dtypes.split(",")):
        for feats in (int(f) for f in args.features.split(",")):
            rows, copy_gbs, result, agreement = bench_shape(
                feats, args.elements, dtype, args.order, args.rounds, liger
            )
            report.add(format_shape(feats, rows, dtype, copy_gbs, result, agreement))
    report.write()


if __name__ == "__main__":
    main()
