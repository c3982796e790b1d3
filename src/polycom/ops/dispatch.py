"""Choose the code path for one activation call, and the table of ops that have fast paths.

Implementations (all compute the same function; ``reference`` is the ground truth):

- ``reference``: the plain math of the family (``polycom.reference``) under autograd. Keeps
  every intermediate for backward; slow. Any device, any float dtype, every transform.
- ``eager``: closed-form forward/backward in PyTorch ops, memory-lean. Any device.
- ``compiled``: the closed-form functions compiled by ``torch.compile`` (fused C++
  loops on CPU, generated Triton on GPU). Falls back to ``eager`` if compilation
  is unavailable.
- ``triton``: fused Triton kernels, for ops that have them; CUDA tensors, or CPU tensors
  under ``TRITON_INTERPRET=1`` (tests). float16/bfloat16/float32.

``auto`` picks: CUDA -> triton where the op has Triton kernels for its order (PolyNorm's hold
a_1..a_4; a higher order goes to eager, and an explicit ``triton`` raises ValueError), eager
otherwise; CPU -> compiled, or eager while an outer ``torch.compile`` is tracing (Inductor
then fuses the closed form into the surrounding graph); float64 -> eager on every device.

Every path is right under every transform. Double backward (``create_graph=True``)
differentiates the reference formula (``fused_op``), exact to any order. Under the
``torch.func`` transforms (``vmap``, ``grad``, ``jvp``, ``jacrev``, ...) and forward-mode AD
the fused kernels cannot run (a Triton launch or an Inductor-compiled function has no batching
or tangent rule), so ``auto``, ``eager`` and ``compiled`` run the reference formula there; an
explicit ``triton`` raises ``ValueError``.

``register_op(name, reference=..., kernels=OpKernels(...))`` is the one registration of an op:
its ground truth and the backends it has (``fused_op``); ``call(name, implementation, *args,
order=r)`` selects and runs one.
"""

from __future__ import annotations

import os
from typing import Callable

import torch
from torch.autograd import forward_ad

from .fused_op import FusedOp, OpKernels

IMPLEMENTATIONS = ("auto", "reference", "eager", "compiled", "triton")
_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_triton_state: list[bool] = []  # [importable], filled on first need


def _triton_importable() -> bool:
    if not _triton_state:
        try:
            from . import triton_ops  # noqa: F401 - registers the custom ops
        except ValueError:  # a bad POLYCOM_TRITON_TUNED file: the user must hear of it
            raise
        except Exception:  # noqa: BLE001 - missing or broken triton: path unavailable
            _triton_state.append(False)
        else:
            for op in _OPS.values():  # now, not on a kernel's first call, which may be inside a compile trace
                op.resolve_triton()
            _triton_state.append(True)
    return _triton_state[0]


# Dynamo calls it once and keeps the answer: no import in a trace. This is the mark that
# torch.compiler.assume_constant_result sets, set without it: the decorator imports Dynamo,
# a second of `import polycom` (tests/test_packaging.py checks that the mark is the same).
_triton_importable._dynamo_marked_constant = True


def _triton_can_run(x: torch.Tensor) -> bool:
    if x.dtype not in _TRITON_DTYPES:
        return False
    on_device = x.is_cuda or (x.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1")
    return on_device and _triton_importable()


def available_implementations(x: torch.Tensor) -> list[str]:
    """Implementations that can run on ``x``'s device and dtype, fastest first."""
    paths = ["triton"] if _triton_can_run(x) else []
    return paths + ["compiled", "eager", "reference"]


def under_function_transform() -> bool:
    """True inside ``torch.func`` transforms (vmap, grad, jvp, ...) or a forward-mode AD level."""
    if torch.compiler.is_compiling():
        return False
    return torch._C._functorch.maybe_current_level() is not None or forward_ad._current_level >= 0


def select_implementation(x: torch.Tensor, requested: str, order: int = 1, *, triton_max_order: int | None = 4,
                          op: str = "this op") -> str:
    """The implementation that runs for ``requested`` on ``x`` with ``order`` coefficients a_1..a_r.

    ``triton_max_order``: the highest order the op's Triton kernels serve, None if it has none.
    """
    if requested not in IMPLEMENTATIONS:
        raise ValueError(f"argument 'implementation' must be one of {list(IMPLEMENTATIONS)}, got {requested!r}")
    if requested == "triton":
        if triton_max_order is None:
            raise ValueError(f"argument 'implementation': {op} has no Triton kernel; use 'auto', 'eager' or 'compiled'")
        if order > triton_max_order:
            raise ValueError(
                f"implementation 'triton' supports order <= {triton_max_order}, got order={order}; "
                "use 'auto', 'eager' or 'compiled'"
            )
    if under_function_transform():
        if requested == "triton":
            raise ValueError("implementation 'triton' cannot run under torch.func transforms or forward-mode AD; "
                             "use 'auto' (the reference formula runs there)")
        return "reference"
    if requested == "auto":
        triton_ok = triton_max_order is not None and order <= triton_max_order
        if x.is_cuda and triton_ok and _triton_can_run(x):
            return "triton"
        if x.device.type == "cpu" and x.dtype != torch.float64 and not torch.compiler.is_compiling():
            return "compiled"
        return "eager"
    if requested not in available_implementations(x):
        raise ValueError(
            f"implementation {requested!r} cannot run on a {x.dtype} tensor on {x.device}; "
            f"available here: {available_implementations(x)}"
        )
    if requested == "compiled" and torch.compiler.is_compiling():
        return "eager"  # already inside a compiled graph: let the outer compile fuse it
    return requested


_OPS: dict[str, FusedOp] = {}


def register_op(name: str, *, reference: Callable, kernels: OpKernels) -> FusedOp:
    """Make ``call(name, ...)`` run ``reference`` or ``kernels``; called once per op by its family module."""
    op = _OPS[name] = FusedOp(name, reference, kernels)
    if _triton_state and _triton_state[0]:
        op.resolve_triton()
    return op


def registered_op(name: str) -> FusedOp:
    op = _OPS.get(name)
    if op is None:
        raise ValueError(f"no dispatched op named {name!r}; registered: {sorted(_OPS)}")
    return op


def check_implementation(implementation, name: str) -> str:
    """``implementation`` if op ``name`` can have it (checked at module construction)."""
    kernels = registered_op(name).kernels
    valid = [i for i in IMPLEMENTATIONS if i in ("auto", "reference") or i in kernels.backends]
    if implementation not in valid:
        raise ValueError(f"argument 'implementation' must be one of {valid} for {name}, got {implementation!r}")
    return implementation


def call(name: str, implementation: str, *args, order: int = 1):
    """Run op ``name`` on ``args`` with the implementation selected for ``args[0]`` and ``order``."""
    op = registered_op(name)
    k = op.kernels
    impl = select_implementation(args[0], implementation, order,
                                 triton_max_order=k.triton_max_order if k.triton else None, op=name)
    if impl == "reference":
        return op.reference(*args)
    return op.function.apply(impl, *args)
