"""Speed and memory of PolyNorm, PolyReLU and gated PolyNorm, per implementation.

For each op and shape it measures forward and forward+backward time of every
polycom implementation available on the device, next to
  - the official formulation: eager math inside torch.utils.checkpoint (as the
    official Megatron code runs it),
  - native GELU (for the plain ops) and SwiGLU (for the gated op),
  - ``torch.compile(reference)``: the family's reference formula compiled with
    ``torch.compile(..., dynamic=False)``, once per shape and grad mode before timing
    (what a user gets by compiling the naive math; compile time printed apart),
  - Liger-Kernel's ``LigerPolyNorm`` when ``liger_kernel`` is installed (CUDA only),
  - a plain copy: forward ``x.clone()``; forward+backward ``x.clone()`` then
    ``g + x`` (read x, write y; read g and x, write dx): the bandwidth limit,
and the bytes autograd saves for backward. All variants run round-robin in one
process, so the ratios are side by side. GB/s is the least traffic the op needs
(forward: read x, and up for the gated op, write y; backward: read g and x (and up),
write dx (and dup)) divided by the measured time; the copy's row uses its own traffic.

    python benchmarks/bench_activations.py                       # CPU, 4096 x 4096 fp32
    python benchmarks/bench_activations.py --device cuda --dtype bfloat16 --features 1024,4096,16384,65536
    python benchmarks/bench_activations.py --output docs/bench-cpu.md   # also write a markdown fragment
    python benchmarks/bench_activations.py --ops hermite,fourier,tropical,tropical_rational   # the peers
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

sys.path.insert(0, os.path.dirname(__file__))
from harness import (  # noqa: E402
    Report,
    compile_static,
    gigabytes_per_second,
    machine_description,
    markdown_table,
    paired_ratio,
    time_round_robin_samples,
)
from peers import liger_poly_norm_ops  # noqa: E402

from polycom import functional as PF  # noqa: E402
from polycom import get_activation  # noqa: E402
from polycom import reference as R  # noqa: E402
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
COMPILED_REFERENCE = "torch.compile(reference)"


def _peer_variants(op: str, x: torch.Tensor, impls: list[str]):
    """Each implementation of a peer family; "official (checkpoint)" is its reference math under checkpoint."""
    acts = {impl: get_activation(op, implementation=impl).to(x.device) for impl in impls}
    fwd = {impl: (lambda act=act: act(x)) for impl, act in acts.items()}
    compiled_reference = compile_static(acts["reference"])
    fwd[COMPILED_REFERENCE] = lambda: compiled_reference(x)
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
        compiled_reference = compile_static(R.poly_norm_reference)
        fwd[COMPILED_REFERENCE] = lambda: compiled_reference(x, weight, bias)
        fwd["official (checkpoint)"] = lambda: checkpoint(official_poly_norm, x, weight, bias, use_reentrant=False)
        fwd["official (no checkpoint)"] = lambda: official_poly_norm(x, weight, bias)
        liger = _liger_poly_norm(x.device)
        if liger is not None:
            fwd["Liger-Kernel LigerPolyNorm"] = lambda: liger(x, weight, bias)
        fwd["GELU (native)"] = lambda: F.gelu(x)
    elif op == "polyrelu":
        for impl in impls:
            fwd[impl] = lambda impl=impl: PF.poly_relu(x, weight, bias, implementation=impl)
        compiled_reference = compile_static(R.poly_relu_reference)
        fwd[COMPILED_REFERENCE] = lambda: compiled_reference(x, weight, bias)
        fwd["official (checkpoint)"] = lambda: checkpoint(official_poly_relu, x, weight, bias, use_reentrant=False)
        fwd["GELU (native)"] = lambda: F.gelu(x)
    else:
        for impl in impls:
            fwd[impl] = lambda impl=impl: PF.gated_poly_norm(x, up, weight, bias, implementation=impl)
        compiled_reference = compile_static(R.gated_poly_norm_reference)
        fwd[COMPILED_REFERENCE] = lambda: compiled_reference(x, up, weight, bias)
        fwd["official (checkpoint)"] = lambda: checkpoint(
            lambda g, u, w, b: official_poly_norm(g, w, b) * u, x, up, weight, bias, use_reentrant=False
        )
        fwd["SwiGLU (native)"] = lambda: F.silu(x) * up
    return fwd


@dataclass
class OpTimings:
    """One op at one shape: seconds per call of each variant in each round, forward and forward+backward."""

    fwd_samples: dict[str, list[float]]
    full_samples: dict[str, list[float]]
    saved_bytes: dict[str, int]  # autograd's saved tensors per variant
    input_bytes: int
    traffic: tuple[int, int]  # least_traffic of the op: forward, forward+backward
    copy_traffic: tuple[int, int]  # the copy's own, by the same count
    compile_seconds: tuple[float, float]  # torch.compile(reference): first forward, first forward+backward

    @property
    def fwd(self) -> dict[str, float]:
        return {name: statistics.median(s) for name, s in self.fwd_samples.items()}

    @property
    def full(self) -> dict[str, float]:
        return {name: statistics.median(s) for name, s in self.full_samples.items()}


def least_traffic(op: str, tensor_bytes: int) -> tuple[int, int]:
    """Bytes the op must move at least, forward and forward+backward: read x (and up for the
    gated op), write y; then read g and x (and up), write dx (and dup). A copy counts as a plain op."""
    inputs = 2 if op == "gated_polynorm" else 1
    forward = (inputs + 1) * tensor_bytes
    return forward, forward + (1 + 2 * inputs) * tensor_bytes


def _compile_first(f, g) -> tuple[float, float]:
    """Seconds of the first no-grad call and the first forward+backward: Dynamo compiles a
    graph per grad mode (and AOTAutograd the backward), so both happen before timing."""
    start = time.perf_counter()
    with torch.no_grad():
        f()
    mid = time.perf_counter()
    f().backward(g)
    return mid - start, time.perf_counter() - mid


def bench_op(op, rows, feats, dtype, device, rounds) -> OpTimings:
    x = torch.randn(rows, feats, device=device, dtype=dtype, requires_grad=True)
    up = torch.randn(rows, feats, device=device, dtype=dtype, requires_grad=True)
    g = torch.randn(rows, feats, device=device, dtype=dtype)
    weight = torch.full((3,), 1 / 3, device=device, requires_grad=True)
    bias = torch.zeros(1, device=device, requires_grad=True)
    impls = [i for i in available_implementations(x) if i != "reference"] + ["reference"]
    if op in PEER_OPS:
        impls = [i for i in impls if i != "triton"]  # closed-form kernels only
    fwd = _variants(op, x, up, weight, bias, impls)
    compile_seconds = _compile_first(fwd[COMPILED_REFERENCE], g)

    def fwd_bwd(f):
        def run():
            f().backward(g)

        return run

    with torch.no_grad():
        fwd_times = time_round_robin_samples({**fwd, "copy": lambda: x.clone()}, device, rounds)
    full = {name: fwd_bwd(f) for name, f in fwd.items()}
    full["copy"] = lambda: (x.detach().clone(), g + x.detach())
    full_times = time_round_robin_samples(full, device, rounds)
    memory = {name: saved_tensor_bytes(f) for name, f in fwd.items()}
    tensor = x.numel() * x.element_size()
    return OpTimings(fwd_times, full_times, memory, tensor, least_traffic(op, tensor), least_traffic("copy", tensor),
                     compile_seconds)


def _gbps(nbytes: int, seconds: float) -> str:
    value = gigabytes_per_second(nbytes, seconds)
    return f"{value:.1f}" if value >= 1 else f"{value:.2g}"


def _versus_compiled_reference(t: OpTimings) -> str:
    """How many times faster than torch.compile(reference) each fast path is, per round."""

    def ratio(samples, name):
        median, q1, q3 = (f"{v:.2f}" if v >= 0.1 else f"{v:.2g}"
                          for v in paired_ratio(samples[COMPILED_REFERENCE], samples[name]))
        return f"{median}x [{q1}, {q3}]"

    fast = [name for name in ("triton", "compiled", "eager") if name in t.full_samples]
    parts = [f"`{name}` {ratio(t.fwd_samples, name)} / {ratio(t.full_samples, name)}" for name in fast]
    return (f"Speed-up over `{COMPILED_REFERENCE}` (median of per-round ratios [interquartile range]), "
            "forward / forward+backward: " + ", ".join(parts) + ".")


def format_op(op, feats, rows, dtype, t: OpTimings):
    base = "SwiGLU (native)" if op == "gated_polynorm" else "GELU (native)"
    fwd_t, full_t = t.fwd, t.full
    header = [
        "implementation", "fwd ms", "fwd+bwd ms", "fwd GB/s", "fwd+bwd GB/s", "fwd / copy", "fwd+bwd / copy",
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
            _gbps(t.traffic[0], fwd_t[name]),
            _gbps(t.traffic[1], full_t[name]),
            f"{fwd_t[name] / fwd_t['copy']:.2f}",
            f"{full_t[name] / full_t['copy']:.2f}",
            f"{full_t[name] / full_t[base]:.2f}",
            f"{full_t['official (checkpoint)'] / full_t[name]:.1f}x",
            f"{t.saved_bytes[name] / t.input_bytes:.2f}",
        ])
    rows_out.append([
        "copy", f"{fwd_t['copy'] * 1e3:.2f}", f"{full_t['copy'] * 1e3:.2f}",
        _gbps(t.copy_traffic[0], fwd_t["copy"]), _gbps(t.copy_traffic[1], full_t["copy"]), "1.00", "1.00", "", "", "",
    ])
    title = f"**{op}**, {rows} x {feats}, {str(dtype).replace('torch.', '')}"
    return title + "\n\n" + markdown_table(header, rows_out) + "\n\n" + _versus_compiled_reference(t)


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
    reference_compile = []
    for op in args.ops.split(","):
        for feats in (int(f) for f in args.features.split(",")):
            rows = max(1, args.elements // feats)
            timings = bench_op(op, rows, feats, dtype, device, args.rounds)
            report.add(format_op(op, feats, rows, dtype, timings))
            fwd_s, full_s = timings.compile_seconds
            reference_compile.append(f"{op} {rows}x{feats} fwd {fwd_s:.1f} + fwd+bwd {full_s:.1f}")
    if COMPILE_SECONDS:
        report.add("First-call compile time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in COMPILE_SECONDS.items()))
    report.add(f"{COMPILED_REFERENCE} first-call compile time (s): " + ", ".join(reference_compile))
    report.write()


if __name__ == "__main__":
    main()
