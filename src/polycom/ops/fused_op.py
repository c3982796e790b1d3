"""One activation op with fast paths: its kernels per backend and the one ``autograd.Function`` that runs them.

An op file (``ops/poly_norm.py``, ...) or a family module declares its kernels once, in an
``OpKernels``; ``dispatch.register_op(name, reference=..., kernels=...)`` makes it a ``FusedOp``.

Kernel contract. Arguments are ``(*rows, *rest)``: the first ``kernels.rows`` tensors are
taken per row of their last dimension (passed as contiguous (M, N) views), ``rest`` are the
coefficient tensors and constants (eps) in the op's own order.

- ``forward(*rows2d, *rest) -> y2d``, or ``(y2d, stats)`` when ``saves_stats`` (PolyNorm's r
  inverse RMS values per row, float32);
- ``backward(grad_y2d, *rows2d, *rest_tensors[, stats]) -> (grad of each row tensor, grad of
  each rest tensor)``: constants are not passed; coefficient gradients may be float32, they
  are cast to each coefficient's dtype here.

Backends: ``eager`` is the closed form itself, ``compiled`` its ``torch.compile``
(``compiled.LazyCompiled``; ``compile_forward`` lets a forward compile a variant with extra
outputs, of which the first ``keep`` are returned), ``triton`` the functions
``<name>_forward`` / ``<name>_backward`` of the module named by ``triton``, imported on first
use (Triton is optional; ``triton_max_order`` bounds the coefficient count they hold).

Saved for backward: the op's input tensors as given (no copy) and the stats; no power,
normalised copy or output. Higher-order gradients: the kernels' backward is a closed form
of first derivatives only, so when a graph of the gradient is requested (``create_graph=True``:
Hessian-vector products, gradient penalties, ``torch.autograd.gradgradcheck``) the backward
recomputes the op with its reference formula under autograd and differentiates that, which is
exact to every order. The first-order path never pays for it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

import torch

from .compiled import LazyCompiled

__all__ = ["OpKernels", "FusedOp", "as_rows"]

BACKENDS = ("eager", "compiled", "triton")


def as_rows(t: torch.Tensor) -> torch.Tensor:
    """(..., N) -> contiguous (M, N); a view when ``t`` is already contiguous."""
    return t.reshape(-1, t.shape[-1]).contiguous()


@dataclass(frozen=True)
class OpKernels:
    """The closed-form kernels of one op and the backends it has (module docstring)."""

    forward: Callable
    backward: Callable
    rows: int = 1
    saves_stats: bool = False
    compile_forward: Callable | None = None
    keep: int | None = None
    triton: str | None = None
    triton_max_order: int | None = None

    @property
    def backends(self) -> tuple[str, ...]:
        return ("eager", "compiled") + (("triton",) if self.triton else ())


@dataclass
class FusedOp:
    """An op's reference formula (the ground truth), its kernels and its ``autograd.Function``."""

    name: str
    reference: Callable
    kernels: OpKernels
    function: type[torch.autograd.Function] = field(init=False, repr=False)
    _resolved: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        k = self.kernels
        self._resolved["eager"] = (k.forward, k.backward)
        self._resolved["compiled"] = (
            LazyCompiled(f"{self.name}_forward", k.compile_forward or k.forward, k.keep),
            LazyCompiled(f"{self.name}_backward", k.backward),
        )
        self.function = _fused_function(self)

    def kernel(self, backend: str, direction: str) -> Callable:
        """The ``direction`` ("forward" or "backward") kernel of ``backend``; Triton's is imported here once."""
        pair = self._resolved.get(backend)
        if pair is None:
            if backend not in self.kernels.backends:
                raise ValueError(f"op {self.name!r} has no {backend!r} backend; it has {list(self.kernels.backends)}")
            module = importlib.import_module(self.kernels.triton)
            pair = self._resolved[backend] = (getattr(module, f"{self.name}_forward"),
                                              getattr(module, f"{self.name}_backward"))
        return pair[direction == "backward"]

    def resolve_triton(self) -> None:
        """Import the Triton kernels now, outside any ``torch.compile`` trace (Dynamo cannot trace imports)."""
        if "triton" in self.kernels.backends:
            self.kernel("triton", "forward")


def _differentiable_backward(op: FusedOp, ctx, inputs: list, grad_y: torch.Tensor) -> list:
    """Gradients of the reference formula, with their own graph: exact higher derivatives."""
    tensors = [(i, t) for i, t in enumerate(inputs) if isinstance(t, torch.Tensor) and ctx.needs_input_grad[i + 1]]
    with torch.enable_grad():
        y = op.reference(*inputs)
        grads = torch.autograd.grad(y, [t for _, t in tensors], grad_y, create_graph=True, allow_unused=True)
    out = [None] * len(inputs)
    for (i, t), g in zip(tensors, grads):
        out[i] = torch.zeros_like(t) if g is None else g
    return out


def _fused_function(op: FusedOp) -> type[torch.autograd.Function]:
    """The Function ``apply(backend, *args)`` running ``op``'s kernels on ``backend``."""
    k = op.kernels

    def forward(ctx, backend, *args):
        rows = [as_rows(a) for a in args[: k.rows]]  # (M, N) each
        out = op.kernel(backend, "forward")(*rows, *args[k.rows:])
        y, stats = out if k.saves_stats else (out, None)
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        ctx.save_for_backward(*tensors, *(() if stats is None else (stats,)))
        ctx.backend = backend
        ctx.constants = [None if isinstance(a, torch.Tensor) else a for a in args]
        return y.view(args[0].shape)

    def backward(ctx, grad_y):
        saved = list(ctx.saved_tensors)
        tensors = iter(saved)
        inputs = [next(tensors) if c is None else c for c in ctx.constants]
        if torch.is_grad_enabled():  # create_graph=True: the gradient itself must be differentiable
            return (None, *_differentiable_backward(op, ctx, inputs, grad_y))
        rows = [as_rows(a) for a in inputs[: k.rows]]
        rest = [a for a in inputs[k.rows:] if isinstance(a, torch.Tensor)]
        stats = saved[len(saved) - 1:] if k.saves_stats else []
        grads = iter(op.kernel(ctx.backend, "backward")(as_rows(grad_y), *rows, *rest, *stats))
        out = []
        for i, a in enumerate(inputs):
            if not isinstance(a, torch.Tensor):
                out.append(None)
                continue
            g = next(grads)
            out.append(g.view(a.shape) if i < k.rows else g.to(a.dtype))
        return (None, *out)

    # Named after the op (PolyNormFunction, its nodes PolyNormFunctionBackward): the metaclass
    # names the backward node class when the class is created.
    name = "".join(p.title() for p in op.name.split("_")) + "Function"
    return type(name, (torch.autograd.Function,), {"forward": staticmethod(forward), "backward": staticmethod(backward)})
