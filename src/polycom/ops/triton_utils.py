"""Shared plumbing for the Triton kernels: availability, launch checks, heuristics.

Importing this module never fails: without Triton, ``triton`` and ``tl`` are
small stand-ins that let the kernel modules define their (never launched)
kernels, and every launcher raises a ``RuntimeError`` through ``check_launch``.

Kernels run on CUDA tensors, or on CPU tensors under the Triton interpreter
(``TRITON_INTERPRET=1``, numerics only; that is how the tests run without a GPU).
"""

from __future__ import annotations

import os
import types

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
    "horner",
]


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_available() -> bool:
    """Triton is importable and something can run its kernels (a CUDA device or the interpreter)."""
    return HAS_TRITON and (interpreting() or torch.cuda.is_available())


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


def _num_warps(block: int, elem_bytes: int) -> int:
    # About 16 bytes of input per thread per load: one vectorised access.
    warps = block * elem_bytes // (32 * 16)
    return max(1, min(16, triton.next_power_of_2(max(warps, 1)) if HAS_TRITON else warps))


def row_launch_config(n: int, elem_bytes: int, block_size: int | None = None) -> tuple[int, bool, int]:
    """(BLOCK_N, whether the whole row fits in one block, num_warps) for a row-wise kernel.

    A row of up to 16 KiB of 16-bit input (8192 elements) or 32 KiB of fp32
    (8192 elements) stays in registers: one read of the input. Longer rows are
    processed in chunks of BLOCK_N (a statistics pass, then an output pass that
    re-reads the row, mostly from L2). ``block_size`` forces a (power of two)
    block for tests of the chunked path.
    """
    max_single = 8192
    if block_size is None:
        block = triton.next_power_of_2(n)
        if block > max_single:
            block = 4096 if elem_bytes >= 4 else 8192
    else:
        block = block_size
    single = n <= block
    return block, single, _num_warps(block, elem_bytes)


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
