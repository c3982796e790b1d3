"""Speed and memory of PolyNorm, PolyReLU and gated PolyNorm, per implementation.

For each op and shape it measures forward and forward+backward time of every
polycom implementation available on the device, next to
  - the official formulation: eager math inside torch.utils.checkpoint (as the
    official Megatron code runs it),
  - native GELU (for the plain ops) and SwiGLU (for the gated op),
  - Liger-Kernel's ``LigerPolyNorm`` when ``liger_kernel`` is installed (CUDA only),
  - a plain copy: forward ``x.clone()``; forward+backward ``x.clone()`` then
    ``g + x`` (read x, write y; read g and x, write dx): the bandwidth limit,
and the bytes autograd saves for backward. All variants run round-robin in one
process, so the ratios are side by side.

    python benchmarks/bench_activations.py                       # CPU, 4096 x 4096 fp32
    python benchmarks/bench_activations.py --device cuda --dtype bfloat16 --features 1024,4096,16384,65536
    python benchmarks/bench_activations.py --output docs/bench-cpu.md   # also write a markdown fragment
    python benchmarks/bench_activations.py --ops hermite,fourier,tropical,tropical_rational   # the peers
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

sys.path.insert(0, os.path.dirname(__file__))
from harness import Report, machine_description, markdown_table, time_round_robin  # noqa: E402
from peers import liger_poly_norm_ops  # noqa: E402

from polycom import functional as PF  # noqa: E402
from polycom import get_activation  # noqa: E402
from polycom.memory import saved_tensor_bytes  # noqa: E402
from polycom.ops import available_implementations  # noqa: E402
from polycom.ops.compiled import COMPILE_SECONDS  # noqa: E402


def official_poly_norm(x, weight, bias, eps=1e-6):
    """PolyNorm as the official code computes it: model dtype, ~15 separate ops."""

    def norm(z):
        return z * torch.rsqrt(z.pow(2).mean(-1, keepdim=True) + eps)

    return weight[0] * norm(x**3) + weight[1] * norm(x**2) + weight[2] * norm(x) + bias


def official_poly_relu(x, weight, bias):
    act = torch.relu(x)
    return weight[0] * act**3 + weight[1] * act**2 + weight[2] * act + bias


def _liger_poly_norm(device: torch.device):
    """Liger-Kernel's PolyNorm as a function of (x, weight, bias (1,)), or None where it cannot run.

    ``in_place=False``: the benchmark reuses one upstream gradient, which Liger's
    default in-place backward would overwrite (its non-in-place backward zero-fills
    a fresh grad_x, one extra write). Liger takes a 0-dim bias: a view of ours.
    """
    ops = liger_poly_norm_ops(device)
    if ops is None:
        return None
    return lambda x, weight, bias: ops.LigerPolyNormFunction.apply(x, weight, bias.view(()), 1e-6, False)


# The learnable elementwise peers (Khalfaoui-Hassani & Kesselheim 2025): registry names.
PEER_OPS = ("hermite", "fourier", "tropical", "tropical_rational")


def _peer_variants(op: str, x: torch.Tensor, impls: list[str]):
    """Each implementation of a peer family; "official (checkpoint)" is its reference math under checkpoint."""
    acts = {impl: get_activation(op, implementation=impl).to(x.device) for impl in impls}
    fwd = {impl: (lambda act=act: act(x)) for impl, act in acts.items()}
    fwd["official (checkpoint)"] = lambda: checkpoint(acts["reference"], x, use_reentrant=False)
    fwd["GELU (native)"] = lambda: F.gelu(x)
    return fwd


def _variants(op: str, x: torch.Tensor, up: torch.Tensor, weight, bias, impls: list[str]):
    """name -> forward closure, for one op."""
    fwd = {}
    if op in PEER_OPS:
        return _peer_variants(op, x, impls)
    if op == "polynorm":
        for impl in impls:
            fwd[impl] = lambda impl=impl: PF.poly_norm(x, weight, bias, implementation=impl)
        fwd["official (checkpoint)"] = lambda: checkpoint(official_poly_norm, x, weight, bias, use_reentrant=False)
        fwd["official (no checkpoint)"] = lambda: official_poly_norm(x, weight, bias)
        liger = _liger_poly_norm(x.device)
        if liger is not None:
            fwd["Liger-Kernel LigerPolyNorm"] = lambda: liger(x, weight, bias)
        fwd["GELU (native)"] = lambda: F.gelu(x)
    elif op == "polyrelu":
        for impl in impls:
            fwd[impl] = lambda impl=impl: PF.poly_relu(x, weight, bias, implementation=impl)
        fwd["official (checkpoint)"] = lambda: checkpoint(official_poly_relu, x, weight, bias, use_reentrant=False)
        fwd["GELU (native)"] = lambda: F.gelu(x)
    else:
        for impl in impls:
            fwd[impl] = lambda impl=impl: PF.gated_poly_norm(x, up, weight, bias, implementation=impl)
        fwd["official (checkpoint)"] = lambda: checkpoint(
            lambda g, u, w, b: official_poly_norm(g, w, b) * u, x, up, weight, bias, use_reentrant=False
        )
        fwd["SwiGLU (native)"] = lambda: F.silu(x) * up
    return fwd


def bench_op(op, rows, feats, dtype, device, rounds):
    x = torch.randn(rows, feats, device=device, dtype=dtype, requires_grad=True)
    up = torch.randn(rows, feats, device=device, dtype=dtype, requires_grad=True)
    g = torch.randn(rows, feats, device=device, dtype=dtype)
    weight = torch.full((3,), 1 / 3, device=device, requires_grad=True)
    bias = torch.zeros(1, device=device, requires_grad=True)
    impls = [i for i in available_implementations(x) if i != "reference"] + ["reference"]
    if op in PEER_OPS:
        impls = [i for i in impls if i != "triton"]  # closed-form kernels only
    fwd = _variants(op, x, up, weight, bias, impls)

    def fwd_bwd(f):
        def run():
            f().backward(g)

        return run

    with torch.no_grad():
        fwd_times = time_round_robin({**fwd, "copy": lambda: x.clone()}, device, rounds)
    full = {name: fwd_bwd(f) for name, f in fwd.items()}
    full["copy"] = lambda: (x.detach().clone(), g + x.detach())
    full_times = time_round_robin(full, device, rounds)
    memory = {name: saved_tensor_bytes(f) for name, f in fwd.items()}
    return fwd_times, full_times, memory, x.numel() * x.element_size()


def format_op(op, feats, rows, dtype, fwd_t, full_t, memory, input_bytes):
    base = "SwiGLU (native)" if op == "gated_polynorm" else "GELU (native)"
    header = [
        "implementation", "fwd ms", "fwd+bwd ms", "fwd / copy", "fwd+bwd / copy",
        f"fwd+bwd / {base.split()[0]}", "speed-up vs official", "saved for bwd (x input)",
    ]
    rows_out = []
    for name in full_t:
        if name == "copy":
            continue
        rows_out.append([
            name,
            f"{fwd_t[name] * 1e3:.2f}",
            f"{full_t[name] * 1e3:.2f}",
            f"{fwd_t[name] / fwd_t['copy']:.2f}",
            f"{full_t[name] / full_t['copy']:.2f}",
            f"{full_t[name] / full_t[base]:.2f}",
            f"{full_t['official (checkpoint)'] / full_t[name]:.1f}x",
            f"{memory[name] / input_bytes:.2f}",
        ])
    rows_out.append(["copy", f"{fwd_t['copy'] * 1e3:.2f}", f"{full_t['copy'] * 1e3:.2f}", "1.00", "1.00", "", "", ""])
    title = f"**{op}**, {rows} x {feats}, {str(dtype).replace('torch.', '')}"
    return title + "\n\n" + markdown_table(header, rows_out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--features", default="4096", help="comma-separated feature sizes")
    p.add_argument("--elements", type=int, default=4096 * 4096, help="rows = elements // features")
    p.add_argument("--ops", default="polynorm,polyrelu,gated_polynorm", help="also: " + ",".join(PEER_OPS))
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--output", help="also write the tables as a markdown fragment to this file")
    args = p.parse_args(argv)

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    report = Report(args.output)
    report.add(
        f"Machine: {machine_description(device)}. Date: {datetime.date.today()}. "
        f"Median of {args.rounds} interleaved rounds."
    )
    for op in args.ops.split(","):
        for feats in (int(f) for f in args.features.split(",")):
            rows = max(1, args.elements // feats)
            fwd_t, full_t, memory, input_bytes = bench_op(op, rows, feats, dtype, device, args.rounds)
            report.add(format_op(op, feats, rows, dtype, fwd_t, full_t, memory, input_bytes))
    if COMPILE_SECONDS:
        report.add("First-call compile time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in COMPILE_SECONDS.items()))
    report.write()


if __name__ == "__main__":
    main()
