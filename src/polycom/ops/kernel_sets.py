"""Kernels keyed by (op, backend), filled by the activation family modules.

An *op* is one kernel of the contract (``"poly_norm_forward"``, ``"poly_relu_backward"``,
...; the signatures are in ``closed_form.py``); a *backend* is ``"eager"``,
``"compiled"`` or ``"triton"``. Each family registers its kernels where it is defined
(``polycom.activations.polynorm`` for PolyNorm) and the autograd Functions look them up
with ``kernel(op, backend)``, so a new fast path is one registration, not an edit here.

- ``register_closed_form(op, fn)``: the eager backend is ``fn`` itself; the compiled one
  wraps it in ``torch.compile`` (Inductor's C++ backend on CPU), compiled on first use;
  if compilation fails (no C++ compiler, an unsupported platform, the recompile limit) it
  warns once and runs ``fn`` eagerly for good.
- ``register_kernel(op, "triton", module=...)``: the kernel is ``KERNELS[op]`` of that
  module, imported on first use (Triton may be absent; ``triton_ops.py`` registers
  ``torch.library`` custom ops so ``torch.compile`` and FSDP see opaque ops).
"""

from __future__ import annotations

import importlib
import time
import types
import warnings
from typing import Callable

import torch

BACKENDS = ("eager", "compiled", "triton")

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


class _LazyCompiled:
    """``torch.compile(fn)`` per variant on first call; eager ``fn`` where compiling fails.

    ``keep``: return only the first ``keep`` outputs (the forwards compile a function with an
    extra output, see ``register_closed_form``).
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


_KERNELS: dict[tuple[str, str], Callable] = {}
_LAZY_KERNELS: dict[tuple[str, str], str] = {}  # (op, backend) -> module whose KERNELS[op] it is


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"argument 'backend' must be one of {list(BACKENDS)}, got {backend!r}")


def register_kernel(op: str, backend: str, fn: Callable | None = None, *, module: str | None = None) -> None:
    """Make ``fn`` (or ``KERNELS[op]`` of ``module``, imported on first use) the ``backend`` kernel of ``op``."""
    _check_backend(backend)
    if (fn is None) == (module is None):
        raise ValueError(f"register_kernel({op!r}, {backend!r}): pass exactly one of 'fn' and 'module'")
    _KERNELS.pop((op, backend), None)
    _LAZY_KERNELS.pop((op, backend), None)
    if fn is not None:
        _KERNELS[(op, backend)] = fn
    else:
        _LAZY_KERNELS[(op, backend)] = module


def register_closed_form(op: str, fn: Callable, *, compile_fn: Callable | None = None, keep: int | None = None) -> None:
    """Register ``fn`` as the eager kernel of ``op`` and its ``torch.compile`` as the compiled one.

    ``compile_fn`` (default ``fn``) is what gets compiled, of which the first ``keep``
    outputs are returned: the PolyNorm forwards compile a variant with the per-row scales t
    as an extra output, because a graph output is materialised and Inductor then reads t
    from memory in the output loop instead of recomputing r rsqrt per element (measured
    10% slower on CPU).
    """
    register_kernel(op, "eager", fn)
    register_kernel(op, "compiled", _LazyCompiled(op, compile_fn or fn, keep))


def resolve_lazy_kernels() -> None:
    """Import every module a lazy kernel lives in and record its kernels.

    Called when the Triton path is first found usable (``dispatch._triton_importable``),
    outside any ``torch.compile`` trace: Dynamo cannot trace ``importlib``, and a model's
    first call may well be a compiled one.
    """
    for key in _LAZY_KERNELS:
        if key not in _KERNELS:  # once resolved, nothing is left for a trace to import
            _resolve(key)


def _resolve(key: tuple[str, str]) -> Callable:
    fn = _KERNELS[key] = importlib.import_module(_LAZY_KERNELS[key]).KERNELS[key[0]]
    return fn


def kernel(op: str, backend: str) -> Callable:
    """The ``backend`` kernel of ``op``; a ``ValueError`` lists what is registered."""
    fn = _KERNELS.get((op, backend))
    if fn is None:
        if (op, backend) not in _LAZY_KERNELS:
            _check_backend(backend)
            raise ValueError(f"no {backend!r} kernel registered for op {op!r}; registered: {registered_kernels()}")
        fn = _resolve((op, backend))
    return fn


def registered_kernels() -> list[tuple[str, str]]:
    """Every registered (op, backend), sorted."""
    return sorted({*_KERNELS, *_LAZY_KERNELS})
