"""Choose the code path for one activation call.

Implementations (all compute the same function; ``reference`` is the ground truth):

- ``reference``: the plain math of ``polycom.reference`` under autograd. Keeps
  every intermediate for backward; slow. Any device, any float dtype.
- ``eager``: closed-form forward/backward in PyTorch ops, memory-lean. Any device.
- ``compiled``: the closed-form functions compiled by ``torch.compile`` (fused C++
  loops on CPU, generated Triton on GPU). Falls back to ``eager`` if compilation
  is unavailable.
- ``triton``: fused Triton kernels; CUDA tensors, or CPU tensors under
  ``TRITON_INTERPRET=1`` (tests). float16/bfloat16/float32.

``auto`` picks: CUDA -> triton for order <= 4 (the kernels hold a_1..a_4; a higher
order goes to compiled/eager, and an explicit ``triton`` raises ValueError), eager
without Triton; CPU -> compiled, or eager
while an outer ``torch.compile`` is tracing (Inductor then fuses the closed form
into the surrounding graph); float64 -> eager on every device.

Which function runs for each implementation of an activation is a table the family
modules fill: ``register_op(name, reference=..., function=...)`` records the reference
formula and the ``autograd.Function`` that runs the (op, backend) kernels of
``kernel_sets``; ``call(name, implementation, order, *args)`` selects and runs one.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Callable

import torch

from .kernel_sets import resolve_lazy_kernels

IMPLEMENTATIONS = ("auto", "reference", "eager", "compiled", "triton")
_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# The Triton kernels hold the coefficients a_1..a_4 in registers (triton_utils); a higher
# order would silently drop terms, so such calls never reach them.
TRITON_MAX_ORDER = 4


@functools.lru_cache(maxsize=None)
def _triton_importable() -> bool:
    try:
        from . import triton_ops  # noqa: F401 - registers the custom ops
    except ValueError:  # a bad POLYCOM_TRITON_TUNED file: the user must hear of it
        raise
    except Exception:  # noqa: BLE001 - missing or broken triton: path unavailable
        return False
    resolve_lazy_kernels()  # now, not on a kernel's first call, which may be inside a compile trace
    return True


def _triton_can_run(x: torch.Tensor) -> bool:
    if x.dtype not in _TRITON_DTYPES:
        return False
    on_device = x.is_cuda or (x.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1")
    return on_device and _triton_importable()


def available_implementations(x: torch.Tensor) -> list[str]:
    """Implementations that can run on ``x``'s device and dtype, fastest first."""
    paths = ["triton"] if _triton_can_run(x) else []
    return paths + ["compiled", "eager", "reference"]


def select_implementation(x: torch.Tensor, requested: str, order: int = 1) -> str:
    """The implementation that runs for ``requested`` on ``x`` with ``order`` coefficients a_1..a_r."""
    if requested not in IMPLEMENTATIONS:
        raise ValueError(f"argument 'implementation' must be one of {list(IMPLEMENTATIONS)}, got {requested!r}")
    triton_order_ok = order <= TRITON_MAX_ORDER
    if requested == "triton" and not triton_order_ok:
        raise ValueError(
            f"implementation 'triton' supports order <= {TRITON_MAX_ORDER}, got order={order}; "
            "use 'auto', 'eager' or 'compiled'"
        )
    if requested == "auto":
        if x.is_cuda and triton_order_ok and _triton_can_run(x):
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


@dataclass(frozen=True)
class DispatchedOp:
    """One activation op with fast paths: its ground truth and the Function running its kernels.

    ``reference(*args)`` and ``function.apply(*args, backend)`` take the same arguments, the
    selecting tensor first.
    """

    name: str
    reference: Callable
    function: type[torch.autograd.Function]


_OPS: dict[str, DispatchedOp] = {}


def register_op(name: str, *, reference: Callable, function: type[torch.autograd.Function]) -> DispatchedOp:
    """Route ``call(name, ...)`` to ``reference`` or ``function``; called by the family modules."""
    op = _OPS[name] = DispatchedOp(name, reference, function)
    return op


def call(name: str, implementation: str, order: int, *args):
    """Run op ``name`` on ``args`` with the implementation selected for ``args[0]`` and ``order``."""
    op = _OPS.get(name)
    if op is None:
        raise ValueError(f"no dispatched op named {name!r}; registered: {sorted(_OPS)}")
    impl = select_implementation(args[0], implementation, order)
    if impl == "reference":
        return op.reference(*args)
    return op.function.apply(*args, impl)
