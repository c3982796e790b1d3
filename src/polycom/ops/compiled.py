"""The ``compiled`` backend: an op's closed-form kernel compiled by ``torch.compile`` on first use.

``LazyCompiled(name, fn)`` compiles ``fn`` once per variant (dtype, feature width,
coefficient count; the row count stays symbolic) with Inductor (fused C++ loops on CPU,
generated Triton on GPU). If compilation fails (no C++ compiler, an unsupported platform,
the recompile limit) it warns once and runs ``fn`` eagerly for that variant for good.
"""

from __future__ import annotations

import time
import types
import warnings
from typing import Callable

import torch

# First-call wall time (seconds) of each compiled kernel: mostly Inductor's
# compile time, a fraction of it when the on-disk FX/Inductor cache is warm.
COMPILE_SECONDS: dict[str, float] = {}
_compile_failures: dict[tuple, str] = {}


def _own_code_copy(fn: Callable) -> Callable:
    """``fn`` with a code object of its own. Dynamo keeps its compile cache and
    recompile limit (8) per code object, so giving each variant its own copy
    means mixed dtypes, orders and widths in one process never exhaust it."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


def _variant_key(args) -> tuple:
    """Dtype and the static sizes of every tensor: the feature width N of the 2-D
    ones (the row count M stays symbolic) and the length of the 1-D coefficients."""
    return tuple((a.dtype, a.shape[-1]) for a in args if isinstance(a, torch.Tensor))


def _mark_rows_dynamic(args) -> None:
    mark = getattr(torch._dynamo, "maybe_mark_dynamic", None)  # absent in old releases: then automatic dynamic
    if mark is None:
        return
    for a in args:
        if isinstance(a, torch.Tensor) and a.dim() == 2:
            mark(a, 0)


class LazyCompiled:
    """``torch.compile(fn)`` per variant on first call; eager ``fn`` where compiling fails.

    ``keep``: return only the first ``keep`` outputs (the forwards compile a function with an
    extra output, see ``fused_op.OpKernels.compile_forward``).
    """

    def __init__(self, name: str, fn: Callable, keep: int | None = None):
        self.name, self.fn, self.compiled, self.keep = name, fn, {}, keep

    def __call__(self, *args):
        key = (self.name, *_variant_key(args))
        if key in _compile_failures:
            return self.fn(*args)
        compiled = self.compiled.get(key)
        if compiled is None:
            # One compiled kernel per (dtype, width, order), with the row count
            # symbolic: MoE groups and generation change it every step, while a
            # static feature width keeps the inner loops fully vectorised.
            compiled = self.compiled[key] = torch.compile(_own_code_copy(self.fn), fullgraph=True, dynamic=False)
        start = time.perf_counter()
        try:
            _mark_rows_dynamic(args)
            out = compiled(*args)
            if self.keep is not None:
                out = out[: self.keep]
        except Exception as exc:  # noqa: BLE001 - compiler or recompile-limit failure: use eager
            _compile_failures[key] = f"{type(exc).__name__}: {exc}"[:500]
            warnings.warn(
                f"polycom: torch.compile of {self.name} failed, using the eager closed-form path for it "
                f"({_compile_failures[key]})",
                RuntimeWarning,
                stacklevel=3,
            )
            out = self.fn(*args)  # a genuine error in the math raises here again
            return out if self.keep is None else out[: self.keep]
        COMPILE_SECONDS.setdefault(self.name, time.perf_counter() - start)
        return out


def compile_failures() -> dict[tuple, str]:
    """Kernel variants whose compilation failed in this process (they run eagerly)."""
    return dict(_compile_failures)
