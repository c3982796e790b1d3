"""Shared plumbing for the Triton kernels: availability, launch checks, heuristics.

Importing this module never fails: without Triton, ``triton`` and ``tl`` are
small stand-ins that let the kernel modules define their (never launched)
kernels, and every launcher raises a ``RuntimeError`` through ``check_launch``.

Kernels run on CUDA tensors, or on CPU tensors under the Triton interpreter
(``TRITON_INTERPRET=1``, numerics only; that is how the tests run without a GPU).
``traceable_kernel`` gives ``torch.library.wrap_triton`` a kernel it can trace in both cases.
"""

from __future__ import annotations

import functools
import json
import os
import types
from dataclasses import dataclass

import torch

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # keep `import polycom.ops.triton_*` safe on machines without Triton
    HAS_TRITON = False
    triton = types.SimpleNamespace(jit=lambda fn: fn, cdiv=lambda a, b: -(-a // b))
    tl = types.SimpleNamespace(constexpr=object)

__all__ = [
    "HAS_TRITON",
    "triton",
    "tl",
    "triton_available",
    "interpreting",
    "check_launch",
    "row_launch_config",
    "grid_programs",
    "RowConfig",
    "ROW_KERNELS",
    "TUNED",
    "load_tuned",
    "horner",
    "load_coefficients",
    "traceable_kernel",
]


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_available() -> bool:
    """Triton is importable and something can run its kernels (a CUDA device or the interpreter)."""
    return HAS_TRITON and (interpreting() or torch.cuda.is_available())


if HAS_TRITON:
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    class InterpretedJITFunction(JITFunction):
        """A JITFunction made from an interpreted kernel's Python function, whose launches run the interpreter.

        ``wrap_triton`` traces only JITFunctions (it reads their argument names and constexprs into
        ``triton_kernel_wrapper_mutation/functional``); under ``TRITON_INTERPRET=1`` a ``@triton.jit``
        kernel is an InterpretedFunction instead. This one carries the same metadata, and when the
        traced graph launches it (``kernel[grid](...)`` calls ``run``) the interpreter runs it on CPU.
        """

        def __init__(self, interpreted: InterpretedFunction):
            super().__init__(interpreted.fn)
            self._interpreted = interpreted

        def run(self, *args, grid, warmup, **kwargs):
            return self._interpreted.run(*args, grid=grid, warmup=warmup, **kwargs)

        # JITFunction hashes its cache key, which walks the helpers the kernel calls; under the
        # interpreter those are InterpretedFunctions, which that walk rejects. torch's kernel side
        # table, the only user of the hash here, needs identity only.
        __hash__ = object.__hash__

    _TRACEABLE: dict = {}  # one wrapper per kernel: one entry in torch's kernel side table


def traceable_kernel(kernel):
    """``kernel`` as ``torch.library.wrap_triton`` can trace it: itself when Triton compiles it (on a GPU),
    an ``InterpretedJITFunction`` under ``TRITON_INTERPRET=1``."""
    if not (HAS_TRITON and isinstance(kernel, InterpretedFunction)):
        return kernel
    if kernel not in _TRACEABLE:
        _TRACEABLE[kernel] = InterpretedJITFunction(kernel)
    return _TRACEABLE[kernel]


def check_launch(name: str, *tensors: torch.Tensor) -> None:
    """Raise a clear error before launching kernel ``name`` on tensors it cannot run on."""
    if not HAS_TRITON:
        raise RuntimeError(f"{name} needs Triton, which is not installed (pip install 'polycom[triton]')")
    for t in tensors:
        if t.device.type == "cuda":
            continue
        if t.device.type == "cpu" and interpreting():
            continue
        raise RuntimeError(
            f"{name} runs on CUDA tensors (or CPU tensors with TRITON_INTERPRET=1); got a tensor on {t.device}"
        )
    if tensors and not tensors[0].is_contiguous():
        raise RuntimeError(f"{name} expects a contiguous input (the caller makes it so)")


# Launch heuristics for the row-wise kernels, measured on an H100 (see the module docstrings).
MAX_SINGLE_BLOCK = 16384  # longest row kept whole in registers (fp32 and 16-bit alike)
MAX_CHUNK_BYTES = 65536  # input bytes of a longer row per loop iteration, at most
CHUNK_WARPS = 16
CHUNK_STAGES = None  # software-pipelining depth of the chunk loops (None: Triton's default)


ROW_KERNELS = ("fwd", "bwd", "gated_fwd", "gated_bwd")


@dataclass(frozen=True)
class RowConfig:
    block: int  # BLOCK_N, a power of two
    single: bool  # the whole row fits in one block: one read of the input
    warps: int
    stages: int | None = None  # pipelining depth of the chunk loops (None: Triton's default)
    # Cap the grid at this many programs per SM (None: one per row). A chunked row is read twice,
    # and the second read comes from L2 only while (rows in flight) x (row bytes) fits in it.
    programs_per_sm: float | None = None


# Measured exceptions to the default rule below: (kernel, bytes per element, row length rounded
# up to a power of two) -> config. From `benchmarks/tune_row_kernels.py` on an H100 80GB HBM3
# (2026-11-22, order 3, 64M-element tensors), the entries whose best config moved >= 3% more
# bytes per second than the rule; docs/benchmarks.md has the tables. E.g. the rule's 16-warp
# single block for 16384 fp32 gated backward spills registers (59% of copy bandwidth), where
# 8192-element chunks reach 100%.
TUNED: dict[tuple[str, int, int], RowConfig] = {
    ("gated_fwd", 4, 4096): RowConfig(4096, True, 8),
    ("bwd", 4, 8192): RowConfig(8192, True, 4),
    ("gated_fwd", 4, 8192): RowConfig(4096, False, 16),
    ("gated_fwd", 4, 16384): RowConfig(16384, True, 32),
    ("gated_bwd", 4, 16384): RowConfig(8192, False, 8),
    ("fwd", 4, 32768): RowConfig(32768, True, 32),
    ("gated_fwd", 4, 32768): RowConfig(32768, True, 32),
    ("gated_bwd", 4, 32768): RowConfig(8192, False, 16),
    ("fwd", 4, 65536): RowConfig(16384, False, 8),
    ("gated_fwd", 4, 65536): RowConfig(16384, False, 8),
    ("gated_bwd", 4, 65536): RowConfig(8192, False, 8),
    ("fwd", 2, 8192): RowConfig(8192, True, 4),
    ("bwd", 2, 8192): RowConfig(8192, True, 8),
    ("gated_fwd", 2, 8192): RowConfig(8192, True, 4),
    ("gated_bwd", 2, 8192): RowConfig(4096, False, 4),
    ("bwd", 2, 16384): RowConfig(8192, False, 16, programs_per_sm=2),
    ("gated_fwd", 2, 16384): RowConfig(8192, False, 8),
    ("gated_bwd", 2, 16384): RowConfig(4096, False, 16),
    ("bwd", 2, 32768): RowConfig(8192, False, 16),
    ("gated_bwd", 2, 32768): RowConfig(8192, False, 16),
    ("gated_bwd", 2, 65536): RowConfig(16384, False, 8, programs_per_sm=2),
}


_ROW_CONFIG_FIELDS = ("block", "single", "warps", "stages", "programs_per_sm")


def load_tuned(path: str) -> int:
    """Add launch configs measured on this machine's GPU to TUNED (they override the built-in ones).

    ``path`` is a JSON file written by ``benchmarks/tune_row_kernels.py --save``: a list of
    objects with ``kernel``, ``elem_bytes``, ``length`` (a power of two) and the RowConfig
    fields. Also read at import from the file named by ``POLYCOM_TRITON_TUNED``.
    Returns the number of entries loaded.
    """
    with open(path) as f:
        entries = json.load(f)
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of launch configs")
    loaded = {}
    for i, e in enumerate(entries):
        where = f"{path}, entry {i}"
        missing = [k for k in ("kernel", "elem_bytes", "length", "block", "single", "warps") if k not in e]
        if missing:
            raise ValueError(f"{where}: missing key(s) {missing}")
        if e["kernel"] not in ROW_KERNELS:
            raise ValueError(f"{where}: 'kernel' must be one of {ROW_KERNELS}, got {e['kernel']!r}")
        length, block = int(e["length"]), int(e["block"])
        for key, value in (("length", length), ("block", block)):
            if value < 16 or value & (value - 1):
                raise ValueError(f"{where}: {key!r} must be a power of two >= 16, got {value}")
        if bool(e["single"]) != (block >= length):
            raise ValueError(f"{where}: 'single' must be true exactly when 'block' >= 'length'")
        if e["warps"] not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f"{where}: 'warps' must be a power of two from 1 to 32, got {e['warps']!r}")
        if e.get("programs_per_sm") is not None and not e["programs_per_sm"] > 0:
            raise ValueError(f"{where}: 'programs_per_sm' must be positive or null, got {e['programs_per_sm']!r}")
        cfg = RowConfig(**{k: e[k] for k in _ROW_CONFIG_FIELDS if k in e})
        loaded[(e["kernel"], int(e["elem_bytes"]), length)] = cfg
    TUNED.update(loaded)
    row_launch_config.cache_clear()
    return len(loaded)


@functools.lru_cache(maxsize=512)  # called on every launch: keep the host overhead low
def row_launch_config(n: int, elem_bytes: int, kernel: str = "fwd", block_size: int | None = None) -> RowConfig:
    """Block and warps for row-wise ``kernel`` (one of ROW_KERNELS) on rows of ``n`` elements.

    Rows of up to MAX_SINGLE_BLOCK elements stay in registers (one read of x). Longer rows
    are processed in chunks (half the row, at most MAX_CHUNK_BYTES): a statistics pass, then an
    output pass that re-reads the row, mostly from L2. ``block_size`` (a power of two) forces
    the block, so tests can run the chunked path on short rows. Warps grow with the block so
    that each thread holds about 16-64 elements; the backward keeps more values live per
    element, so it uses more. TUNED overrides this rule where an H100 measured better.
    """
    if kernel not in ROW_KERNELS:
        raise ValueError(f"kernel must be one of {ROW_KERNELS}, got {kernel!r}")
    if block_size is None:
        tuned = TUNED.get((kernel, elem_bytes, max(16, triton.next_power_of_2(n))))
        if tuned is not None:
            return tuned
        if n <= MAX_SINGLE_BLOCK:
            block = max(16, triton.next_power_of_2(n))
        else:
            # Two chunks per row where possible: more chunks per row measured slower on H100.
            block = min(triton.next_power_of_2(n) // 2, MAX_CHUNK_BYTES // elem_bytes)
    else:
        block = block_size
    if n > block:
        return RowConfig(block, False, CHUNK_WARPS, CHUNK_STAGES)
    per_warp = 512 if kernel.endswith("bwd") else 1024
    return RowConfig(block, True, max(2, min(16, block // per_warp)))


if os.environ.get("POLYCOM_TRITON_TUNED"):
    load_tuned(os.environ["POLYCOM_TRITON_TUNED"])


@functools.lru_cache(maxsize=16)
def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def grid_programs(rows: int, cfg: RowConfig, device: torch.device, max_programs: int | None = None) -> int:
    """Programs to launch for a row-wise kernel over ``rows`` rows (each program loops over rows).

    ``max_programs`` forces a cap (tests use it to run the looping path in the interpreter);
    otherwise ``cfg.programs_per_sm`` times the SM count caps it on CUDA, and every row gets its
    own program elsewhere.
    """
    if max_programs is not None:
        if max_programs < 1:
            raise ValueError(f"max_programs must be >= 1, got {max_programs}")
        return max(1, min(rows, max_programs))
    if cfg.programs_per_sm is not None and device.type == "cuda":
        return max(1, min(rows, round(cfg.programs_per_sm * _sm_count(device))))
    return max(1, rows)


@triton.jit
def horner(z, c0, c1, c2, c3, c4, DEGREE: tl.constexpr):
    """c0 + c1*z + c2*z^2 + ... + c_DEGREE*z^DEGREE (DEGREE 0..4), by Horner's rule."""
    res = c0
    if DEGREE >= 1:
        acc1 = c1
        if DEGREE >= 2:
            acc2 = c2
            if DEGREE >= 3:
                acc3 = c3
                if DEGREE >= 4:
                    acc3 = acc3 + z * c4
                acc2 = acc2 + z * acc3
            acc1 = acc1 + z * acc2
        res = res + z * acc1
    return res


@triton.jit
def load_coefficients(w_ptr, ORDER: tl.constexpr):
    """(a_1, ..., a_4) in fp32; a_i = weight[ORDER - i], unused orders 0."""
    a1 = tl.load(w_ptr + ORDER - 1).to(tl.float32)
    a2 = 0.0
    a3 = 0.0
    a4 = 0.0
    if ORDER >= 2:
        a2 = tl.load(w_ptr + ORDER - 2).to(tl.float32)
    if ORDER >= 3:
        a3 = tl.load(w_ptr + ORDER - 3).to(tl.float32)
    if ORDER >= 4:
        a4 = tl.load(w_ptr + ORDER - 4).to(tl.float32)
    return a1, a2, a3, a4
