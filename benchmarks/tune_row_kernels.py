"""Search launch configurations for the row-wise PolyNorm kernels on this GPU (CUDA only).

For each kernel (PolyNorm and gated PolyNorm, forward and backward), dtype and row
length, every candidate ``RowConfig`` (one block in registers with 4-32 warps, or
chunks of 2048-16384 elements with 4-16 warps and an optional grid cap) is timed
round-robin with the library's current choice, by CUDA events over back-to-back
launches. It prints each shape's best against the current choice, as a share of a
copy's bandwidth, and the ``TUNED`` entries to put in ``polycom/ops/triton_utils.py``
where the best beats the current choice by more than ``--min-gain``.

Candidates are compiled first in parallel worker processes (Triton's on-disk cache
is shared), so the timing phase runs on compiled kernels.

    python benchmarks/tune_row_kernels.py --dtypes float32,bfloat16 --features 8192,16384,32768,65536
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import dataclasses
import datetime
import json
import multiprocessing
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_kernel_bandwidth import TENSORS_MOVED, row_kernel_calls  # noqa: E402
from harness import Report, add_sweep_arguments, cuda_ms_per_call, machine_description, markdown_table  # noqa: E402

from polycom.ops.triton_utils import ROW_KERNELS, RowConfig, row_launch_config  # noqa: E402

ORDER = 3


def candidates(n: int, elem_bytes: int) -> list[RowConfig]:
    """Launch configurations worth timing for rows of ``n`` elements."""
    out = []
    full = max(16, 1 << (n - 1).bit_length())
    if full <= 32768:
        # Whole row in registers: 4 to 64 elements per thread.
        out += [RowConfig(full, True, w) for w in (4, 8, 16, 32) if 4 <= full // (32 * w) <= 64]
    for block in (2048, 4096, 8192, 16384):
        if block >= n or block * elem_bytes > 65536:
            continue
        for w in (4, 8, 16):
            if 2 <= block // (32 * w) <= 128:
                out += [RowConfig(block, False, w, None, cap) for cap in (None, 0.5, 1, 2)]
    return out


def _inputs(rows, n, dtype):
    dev = torch.device("cuda")
    x = torch.randn(rows, n, device=dev, dtype=dtype)
    weight = torch.full((ORDER,), 1.0 / ORDER, device=dev)
    return x, torch.randn_like(x), torch.randn_like(x), weight, torch.zeros(1, device=dev)


def _compile(job):
    """Worker: launch one (kernel, dtype, n, config) once on 16 rows so Triton caches its binary."""
    kernel, dtype_name, n, cfg = job
    calls = row_kernel_calls(*_inputs(16, n, getattr(torch, dtype_name)), cfg=cfg)
    calls[kernel]()
    torch.cuda.synchronize()
    return job


def compile_all(jobs, workers):
    # One binary per (kernel, dtype, block, single, warps): the grid cap and, for chunked rows,
    # the row length (a runtime argument) do not change it. Compile each binary once.
    unique = {}
    for k, d, n, c in jobs:
        binary = RowConfig(c.block, c.single, c.warps, c.stages)
        unique.setdefault((k, d, binary), (k, d, n, binary))
    unique = list(unique.values())
    ctx = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    with futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        for _ in pool.map(_compile, unique):
            pass
    return len(unique)


def _describe(cfg: RowConfig) -> str:
    grid = "" if cfg.programs_per_sm is None else f", {cfg.programs_per_sm}/SM"
    return f"{'single' if cfg.single else 'chunks'} {cfg.block}, {cfg.warps} warps{grid}"


def tune_shape(n, elements, dtype, rounds):
    """{kernel: (current config, its GB/s, best config, its GB/s)} and the copy's GB/s."""
    rows = max(1, elements // n)
    x, up, g, weight, bias = _inputs(rows, n, dtype)
    tensor_gb = x.numel() * x.element_size() / 1e9
    copy = lambda: x.clone()  # noqa: E731
    results = {}
    copy_ms = []
    for kernel in ROW_KERNELS:
        current = row_launch_config(n, x.element_size(), kernel)
        configs = [current] + [c for c in candidates(n, x.element_size()) if c != current]
        fns = [row_kernel_calls(x, up, g, weight, bias, cfg=c)[kernel] for c in configs]
        for fn in fns:
            fn()
        torch.cuda.synchronize()
        samples = [[] for _ in configs]
        for _ in range(rounds):
            copy_ms.append(cuda_ms_per_call(copy, 10))
            for i, fn in enumerate(fns):
                samples[i].append(cuda_ms_per_call(fn, 10))
        gbs = [TENSORS_MOVED[kernel] * tensor_gb / statistics.median(s) * 1e3 for s in samples]
        best = max(range(len(configs)), key=gbs.__getitem__)
        results[kernel] = (current, gbs[0], configs[best], gbs[best])
    return rows, 2 * tensor_gb / statistics.median(copy_ms) * 1e3, results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sweep_arguments(p, features="8192,16384,32768,65536")
    p.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 1))
    p.add_argument("--min-gain", type=float, default=0.03, help="relative bandwidth gain that earns a TUNED entry")
    p.add_argument("--save", help="write the entries as JSON, for POLYCOM_TRITON_TUNED or triton_utils.load_tuned")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("tune_row_kernels.py tunes CUDA kernels: no CUDA device here")

    dtypes = args.dtypes.split(",")
    features = [int(f) for f in args.features.split(",")]
    jobs = [
        (k, d, n, c)
        for d in dtypes for n in features
        for c in candidates(n, getattr(torch, d).itemsize) for k in ROW_KERNELS
    ]
    print(f"compiled {compile_all(jobs, args.workers)} kernel binaries with {args.workers} workers", flush=True)

    report = Report(args.output)
    report.add(f"Machine: {machine_description(torch.device('cuda'))}. Date: {datetime.date.today()}. "
               f"Order {ORDER}; median of {args.rounds} rounds of 10 back-to-back launches.")
    tuned, entries = [], []
    for d in dtypes:
        dtype = getattr(torch, d)
        for n in features:
            rows, copy_gbs, results = tune_shape(n, args.elements, dtype, args.rounds)
            lines = []
            for kernel, (current, cur_gbs, best, best_gbs) in results.items():
                lines.append([kernel, _describe(current), f"{100 * cur_gbs / copy_gbs:.0f}%",
                              _describe(best), f"{100 * best_gbs / copy_gbs:.0f}%"])
                if best != current and best_gbs > (1 + args.min_gain) * cur_gbs:
                    length = 1 << (n - 1).bit_length()  # TUNED keys: row length rounded up to a power of two
                    tuned.append(f"    ({kernel!r}, {dtype.itemsize}, {length}): {best!r},")
                    entries.append({"kernel": kernel, "elem_bytes": dtype.itemsize, "length": length,
                                    **dataclasses.asdict(best)})
            header = ["kernel", "current", "% of copy", "best", "% of copy"]
            report.add(f"**{rows} x {n}, {d}** (copy {copy_gbs:.0f} GB/s)\n\n" + markdown_table(header, lines))
    report.add("TUNED entries:\n\n```python\n" + "\n".join(tuned) + "\n```")
    report.write()
    if args.save:
        with open(args.save, "w") as f:
            json.dump(entries, f, indent=1)
        print(f"wrote {len(entries)} entries to {args.save}: export POLYCOM_TRITON_TUNED={args.save}")


if __name__ == "__main__":
    main()
