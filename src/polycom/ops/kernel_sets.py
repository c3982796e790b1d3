"""Named sets of forward/backward kernels: "eager", "compiled" and "triton".

Each set has the six functions of the kernel contract (see ``closed_form.py``).
"compiled" wraps the closed-form functions in ``torch.compile`` (Inductor's C++
backend on CPU), compiled on first use; if compilation fails (no C++ compiler,
an unsupported platform) it warns once and falls back to "eager" for good.
"triton" goes through ``torch.library`` custom ops (``triton_ops.py``) so that
``torch.compile`` and FSDP see opaque ops with fake implementations.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from . import closed_form as cf

KERNEL_NAMES = (
    "poly_norm_forward",
    "poly_norm_backward",
    "gated_poly_norm_forward",
    "gated_poly_norm_backward",
    "poly_relu_forward",
    "poly_relu_backward",
)


@dataclass(frozen=True)
class KernelSet:
    poly_norm_forward: Callable
    poly_norm_backward: Callable
    gated_poly_norm_forward: Callable
    gated_poly_norm_backward: Callable
    poly_relu_forward: Callable
    poly_relu_backward: Callable


EAGER = KernelSet(*(getattr(cf, f"{name}_torch") for name in KERNEL_NAMES))

# First-call wall time (seconds) of each compiled kernel: mostly Inductor's
# compile time, a few ms when the on-disk FX/Inductor cache is warm.
COMPILE_SECONDS: dict[str, float] = {}
_compile_failed: list[str] = []


class _LazyCompiled:
    """``torch.compile(fn)`` on first call; eager ``fn`` if compiling fails."""

    def __init__(self, name: str, fn: Callable):
        self.name, self.fn, self.compiled = name, fn, None

    def __call__(self, *args):
        if _compile_failed:
            return self.fn(*args)
        if self.compiled is None:
            # dynamic=False: one specialisation per shape; models see a handful of
            # shapes and static loops vectorise better than symbolic ones.
            self.compiled = torch.compile(self.fn, fullgraph=True, dynamic=False)
            start = time.perf_counter()
            try:
                out = self.compiled(*args)
            except Exception as exc:  # noqa: BLE001 - any compiler failure means: use eager
                _compile_failed.append(f"{type(exc).__name__}: {exc}"[:500])
                warnings.warn(
                    f"polycom: torch.compile of {self.name} failed, using the eager closed-form path instead "
                    f"({_compile_failed[0]})",
                    RuntimeWarning,
                    stacklevel=3,
                )
                return self.fn(*args)
            COMPILE_SECONDS[self.name] = time.perf_counter() - start
            return out
        return self.compiled(*args)


COMPILED = KernelSet(*(_LazyCompiled(name, getattr(cf, f"{name}_torch")) for name in KERNEL_NAMES))


def compile_failed() -> bool:
    """True once a compilation failed in this process (``"compiled"`` then runs eagerly)."""
    return bool(_compile_failed)


def kernel_set(name: str) -> KernelSet:
    if name == "eager":
        return EAGER
    if name == "compiled":
        return COMPILED
    if name == "triton":
        from .triton_ops import TRITON

        return TRITON
    raise ValueError(f"no kernel set named {name!r}")
