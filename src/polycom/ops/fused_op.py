"""One activation op with fast paths: its kernels per backend and the one ``autograd.Function`` that runs them.

An op file (``ops/poly_norm.py``, ...) or a family module declares its kernels once, in an
``OpKernels``; ``dispatch.register_op(name, reference=..., kernels=...)`` makes it a ``FusedOp``.

Kernel contract. Arguments are ``(*rows, *rest)``: the first ``kernels.rows`` tensors are
taken per row of their last dimension (passed as contiguous (M, N) views), ``rest`` are the
coefficient tensors and constants (eps) in the op's own order.

- ``forward(*rows2d, *rest) -> y2d``, or ``(y2d, stats)`` when ``saves_stats`` (PolyNorm's r
  inverse RMS values per row, float32);
- ``backward(grad_y2d, *rows2d, *rest_tensors[, stats], *backward_constants) -> (grad of each row
  tensor, grad of each rest tensor but the index tensors)``: of the constants only those named in
  ``backward_constants`` are passed (PolyNorm's input bound, whose mask the input gradient needs;
  eps is not: the saved statistics hold it), in the forward's order; coefficient gradients may be
  float32, they are cast to each coefficient's dtype here. Index tensors (``indices``, e.g.
  the grouped ops' row -> expert map) are integer inputs that take no gradient.

Backends: ``eager`` is the closed form itself, ``compiled`` its ``torch.compile``
(``compiled.LazyCompiled``; ``compile_forward`` lets a forward compile a variant with extra
outputs, of which the first ``keep`` are returned), ``triton`` the functions
``<name>_forward`` / ``<name>_backward`` of the module named by ``triton``, imported on first
use (Triton is optional; ``triton_max_order`` bounds the coefficient count they hold).

Every op is also a ``torch.library`` custom op pair, ``polycom::<name>(*args, str backend)``
and ``polycom::<name>_backward``, registered with the op: its fake kernel is the eager closed
form run on fake tensors (shapes and dtypes exactly as the real kernels'), and it has autograd
(``register_autograd``), so ``torch.ops.polycom.poly_norm(x, w, b, 1e-6, inf, "eager")`` is a
differentiable op that passes ``torch.library.opcheck``. The autograd Function calls the
kernels directly (no dispatcher overhead), except the ``compiled`` and ``triton`` backends while
``torch.compile`` traces: there the graph gets the custom op, an opaque node, since neither a
compiled function nor a Triton launch can be traced. The ``eager`` backend stays traceable, so
Inductor fuses its closed form into the surrounding graph.

An op with Triton kernels also gets a ``torch.library.triton_op`` pair, ``polycom::<name>_triton``
and ``polycom::<name>_triton_backward`` (``triton_library_ops.py``), registered when its Triton
backend is resolved with ``POLYCOM_TRITON_OP=1`` set, or on ``FusedOp.triton_library_ops()``: its
launches go through ``wrap_triton``, so the compiler sees the kernels themselves. With
``POLYCOM_TRITON_OP=1`` (read once, at import) a ``torch.compile`` trace of a ``triton`` call uses
this pair instead of the opaque op (``TRITON_OPS_UNDER_COMPILE``). It is off by default: traced
with ``aot_eager`` on CPU through the interpreter, Inductor compiling it is unvalidated until a
GPU session runs ``tests/test_gpu.py`` with the switch on.

Saved for backward: the op's input tensors as given (no copy) and the stats; no power,
normalised copy or output. Higher-order gradients: the kernels' backward is a closed form
of first derivatives only, so when a graph of the gradient is requested (``create_graph=True``:
Hessian-vector products, gradient penalties, ``torch.autograd.gradgradcheck``) the backward
recomputes the op with its reference formula under autograd and differentiates that, which is
exact to every order. The first-order path never pays for it.
"""

from __future__ import annotations

import importlib
import inspect
import os
from dataclasses import dataclass, field
from typing import Callable

import torch

from .compiled import LazyCompiled

__all__ = ["OpKernels", "FusedOp", "as_rows"]

BACKENDS = ("eager", "compiled", "triton")

# While torch.compile traces a triton call: the op's triton_op pair (True) or its opaque custom op (module docstring).
TRITON_OPS_UNDER_COMPILE = os.environ.get("POLYCOM_TRITON_OP", "0") == "1"


def as_rows(t: torch.Tensor) -> torch.Tensor:
    """(..., N) -> contiguous (M, N); a view when ``t`` is already contiguous."""
    return t.reshape(-1, t.shape[-1]).contiguous()


@dataclass(frozen=True)
class OpKernels:
    """The closed-form kernels of one op and the backends it has (module docstring).

    ``constants``: the names of the forward's float arguments (eps); ``backward_constants``: those of
    them the backward takes too; ``indices``: the names of its integer tensors (no gradient); every
    other argument is a differentiable tensor.
    """

    forward: Callable
    backward: Callable
    rows: int = 1
    saves_stats: bool = False
    constants: tuple[str, ...] = ()
    backward_constants: tuple[str, ...] = ()
    indices: tuple[str, ...] = ()
    compile_forward: Callable | None = None
    keep: int | None = None
    triton: str | None = None
    triton_max_order: int | None = None

    @property
    def backends(self) -> tuple[str, ...]:
        return ("eager", "compiled") + (("triton",) if self.triton else ())

    @property
    def arguments(self) -> list[str]:
        return list(inspect.signature(self.forward).parameters)


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
        self._is_index = [name in k.indices for name in k.arguments]  # once: inspect.signature costs ~70 us
        self._tensor_takes_grad = [name not in k.indices for name in k.arguments if name not in k.constants]
        self._backward_constant_at = [i for i, name in enumerate(k.arguments) if name in k.backward_constants]
        self._resolved["eager"] = (k.forward, k.backward)
        self._resolved["compiled"] = (
            LazyCompiled(f"{self.name}_forward", k.compile_forward or k.forward, k.keep),
            LazyCompiled(f"{self.name}_backward", k.backward),
        )
        self.function = _fused_function(self)
        _LIBRARY_TARGETS[self.name] = self  # a re-registered op (a re-imported family) takes over its library ops
        _library_ops(self)  # now: registering inside a torch.compile trace is impossible

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
            if TRITON_OPS_UNDER_COMPILE:  # registered now: a trace that needs them cannot register them
                self.triton_library_ops()

    def library_ops(self):
        """(``torch.ops.polycom.<name>``, ``torch.ops.polycom.<name>_backward``)."""
        return _library_ops(self)

    def triton_library_ops(self):
        """(``torch.ops.polycom.<name>_triton``, ``..._triton_backward``): the Triton kernels as a ``triton_op`` pair.

        Registered on first call (it imports Triton and reads the launchers' source); only ops with a
        Triton backend have them."""
        ops = _TRITON_LIBRARY_OPS.get(self.name)
        if ops is None:
            from .triton_library_ops import register_triton_ops  # imports Triton: never at `import polycom`

            ops = _TRITON_LIBRARY_OPS[self.name] = register_triton_ops(self)
        return ops

    def _traced_ops(self, backend: str) -> tuple[Callable, Callable]:
        """The library ops a ``torch.compile`` trace of a compiled/triton call records, taking the kernel arguments."""
        if backend == "triton" and TRITON_OPS_UNDER_COMPILE:
            return self.triton_library_ops()
        forward_op, backward_op = self.library_ops()
        return (lambda *args: forward_op(*args, backend)), (lambda *args: backward_op(*args, backend))

    def run_forward(self, backend: str, args) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(y shaped as ``args[0]``, stats or None); a library op while a compile traces a compiled/triton call."""
        if backend != "eager" and torch.compiler.is_compiling():
            out = self._traced_ops(backend)[0](*args)
            return out if self.kernels.saves_stats else (out, None)
        return self.run_kernel_forward(backend, args)

    def run_kernel_forward(self, backend: str, args) -> tuple[torch.Tensor, torch.Tensor | None]:
        k = self.kernels
        rows = [as_rows(a) for a in args[: k.rows]]  # (M, N) each
        out = self.kernel(backend, "forward")(*rows, *args[k.rows:])
        y, stats = out if k.saves_stats else (out, None)
        # Detached: y shaped as the input, not a view of the kernel's (M, N) output. Both run with
        # grad off, so nothing is lost; a view would make FSDP2 warn on an activation that is its
        # own unit (bf16-fsdp), since an in-place op on a unit's view output skips its hook.
        return y.view(args[0].shape).detach(), stats

    def run_backward(self, backend: str, grad_y, inputs: list, stats, needs_input_grad, backward_op=None) -> list:
        """The gradient of every input (None for constants and for inputs that need none).

        With grad mode on (``create_graph=True``) the reference formula is differentiated under autograd,
        so the gradient has a graph of its own and every higher derivative is exact. ``backward_op``: a
        backward library op to call with ``(grad_y, *tensors[, stats], *backward_constants)`` instead of the kernel (default:
        the traced one for compiled/triton while torch.compile traces)."""
        if torch.is_grad_enabled():
            return _differentiable_backward(self, inputs, grad_y, needs_input_grad)
        k = self.kernels
        tensors = [a for a in inputs if isinstance(a, torch.Tensor)]
        extra = ([] if stats is None else [stats]) + [inputs[i] for i in self._backward_constant_at]
        if backward_op is None and backend != "eager" and torch.compiler.is_compiling():
            backward_op = self._traced_ops(backend)[1]
        if backward_op is not None:
            grads = iter(backward_op(grad_y, *tensors, *extra))
        else:
            rows = [as_rows(a) for a in tensors[: k.rows]]
            grads = iter(self.kernel(backend, "backward")(as_rows(grad_y), *rows, *tensors[k.rows:], *extra))
        out = []
        for i, (a, is_index) in enumerate(zip(inputs, self._is_index)):
            g = next(grads) if isinstance(a, torch.Tensor) and not is_index else None
            if g is not None:
                g = g.view(a.shape) if i < k.rows else g.to(a.dtype)
            out.append(g if needs_input_grad[i] else None)
        return out


def _differentiable_backward(op: FusedOp, inputs: list, grad_y: torch.Tensor, needs_input_grad) -> list:
    """Gradients of the reference formula, with their own graph: exact higher derivatives."""
    wanted = [i for i, t in enumerate(inputs) if isinstance(t, torch.Tensor) and needs_input_grad[i]]
    with torch.enable_grad():
        y = op.reference(*inputs)
        grads = torch.autograd.grad(y, [inputs[i] for i in wanted], grad_y, create_graph=True, allow_unused=True)
    out = [None] * len(inputs)
    for i, g in zip(wanted, grads):
        out[i] = torch.zeros_like(inputs[i]) if g is None else g
    return out


def _fused_function(op: FusedOp) -> type[torch.autograd.Function]:
    """The Function ``apply(backend, *args)`` running ``op``'s kernels on ``backend``."""

    def forward(ctx, backend, *args):
        y, stats = op.run_forward(backend, args)
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        ctx.save_for_backward(*tensors, *(() if stats is None else (stats,)))
        ctx.backend = backend
        ctx.constants = [None if isinstance(a, torch.Tensor) else a for a in args]
        return y

    def backward(ctx, grad_y):
        saved = list(ctx.saved_tensors)
        stats = saved.pop() if op.kernels.saves_stats else None
        tensors = iter(saved)
        inputs = [next(tensors) if c is None else c for c in ctx.constants]
        return (None, *op.run_backward(ctx.backend, grad_y, inputs, stats, ctx.needs_input_grad[1:]))

    # Named after the op (PolyNormFunction, its nodes PolyNormFunctionBackward): the metaclass
    # names the backward node class when the class is created.
    name = "".join(p.title() for p in op.name.split("_")) + "Function"
    return type(name, (torch.autograd.Function,), {"forward": staticmethod(forward), "backward": staticmethod(backward)})


# ---- torch.library registration ----

_LIBRARY_TARGETS: dict[str, FusedOp] = {}  # op name -> the FusedOp its library ops run
_LIBRARY_OPS: dict[str, tuple] = {}
_TRITON_LIBRARY_OPS: dict[str, tuple] = {}  # op name -> its triton_op pair (FusedOp.triton_library_ops)


def _schemas(op: FusedOp) -> tuple[str, str]:
    k = op.kernels
    params = k.arguments
    tensors = [p for p in params if p not in k.constants]
    forward_args = ", ".join(f"{'float' if p in k.constants else 'Tensor'} {p}" for p in params)
    forward = f"({forward_args}, str backend) -> " + ("(Tensor, Tensor)" if k.saves_stats else "Tensor")
    backward_args = ["Tensor grad_y", *(f"Tensor {p}" for p in tensors), *(["Tensor stats"] if k.saves_stats else []),
                     *(f"float {p}" for p in k.backward_constants)]
    n_grads = len([p for p in tensors if p not in k.indices])
    backward = f"({', '.join(backward_args)}, str backend) -> ({', '.join(['Tensor'] * n_grads)})"
    return forward, backward


def _library_ops(op: FusedOp):
    name = op.name
    if name in _LIBRARY_OPS:
        return _LIBRARY_OPS[name]
    forward_schema, backward_schema = _schemas(op)
    target = lambda: _LIBRARY_TARGETS[name]  # noqa: E731

    def forward_impl(*args):
        *args, backend = args
        y, stats = target().run_kernel_forward(backend, args)
        return y if stats is None else (y, stats)

    def forward_fake(*args):
        *args, _ = args
        y, stats = target().run_kernel_forward("eager", args)  # the closed form on fake tensors: exact shapes and dtypes
        return y if stats is None else (y, stats)

    def backward_impl(*args, fake=False):
        *args, backend = args
        fused = target()
        k = fused.kernels
        n_tensors = len(args) - len(k.backward_constants)
        grad_y, tensors, constants = args[0], list(args[1:n_tensors]), args[n_tensors:]
        stats = tensors.pop() if k.saves_stats else None
        rows = [as_rows(a) for a in tensors[: k.rows]]
        grads = fused.kernel("eager" if fake else backend, "backward")(as_rows(grad_y), *rows, *tensors[k.rows:],
                                                                       *([] if stats is None else [stats]), *constants)
        return library_gradients(fused, grads, tensors)

    forward_op = torch.library.custom_op(f"polycom::{name}", forward_impl, mutates_args=(), schema=forward_schema)
    forward_op.register_fake(forward_fake)
    backward_op = torch.library.custom_op(f"polycom::{name}_backward", backward_impl, mutates_args=(),
                                          schema=backward_schema)
    backward_op.register_fake(lambda *args: backward_impl(*args, fake=True))
    register_library_autograd(forward_op, target, takes_backend=True)
    _LIBRARY_OPS[name] = (forward_op, backward_op)
    return forward_op, backward_op


def library_gradients(op: FusedOp, grads, tensors: list) -> tuple:
    """A backward library op's outputs from the kernel's gradients of ``tensors`` (the op's tensor inputs).

    Library ops may return neither views of their inputs nor of one another: the row gradients are
    shaped as their inputs, and the coefficient gradients of a Triton kernel, slices of one reduction
    buffer, each get their own copy."""
    targets = [t for t, takes_grad in zip(tensors, op._tensor_takes_grad) if takes_grad]
    return tuple(g.view(t.shape) if i < op.kernels.rows else g.clone() for i, (g, t) in enumerate(zip(grads, targets)))


def register_library_autograd(forward_op, target: Callable[[], FusedOp], *, takes_backend: bool,
                              backward_op=None) -> None:
    """Autograd of a forward library op: first order through a backward library op, higher orders through the
    reference (``FusedOp.run_backward``).

    ``takes_backend``: the ops end with a ``str backend`` argument (the generic pair; their backward op is
    looked up per call) or not (a ``triton_op`` pair, whose ``backward_op`` is given)."""

    def setup_context(ctx, inputs, output):
        args, backend = (inputs[:-1], inputs[-1]) if takes_backend else (inputs, "triton")
        stats = output[1] if target().kernels.saves_stats else None
        if stats is not None:
            ctx.mark_non_differentiable(stats)
        ctx.save_for_backward(*(a for a in args if isinstance(a, torch.Tensor)), *(() if stats is None else (stats,)))
        ctx.backend, ctx.constants = backend, [None if isinstance(a, torch.Tensor) else a for a in args]

    def autograd_backward(ctx, grad_y, *_grad_stats):
        fused = target()
        saved = list(ctx.saved_tensors)
        stats = saved.pop() if fused.kernels.saves_stats else None
        tensors = iter(saved)
        inputs = [next(tensors) if c is None else c for c in ctx.constants]
        # The raw op's backward is the backward op: traceable by AOTAutograd whatever the backend.
        if takes_backend:
            generic_backward = fused.library_ops()[1]
            call = lambda *args: generic_backward(*args, ctx.backend)  # noqa: E731
            needs = ctx.needs_input_grad[:-1]
        else:
            call, needs = backward_op, ctx.needs_input_grad
        grads = fused.run_backward(ctx.backend, grad_y, inputs, stats, needs, backward_op=call)
        return (*grads, None) if takes_backend else tuple(grads)

    forward_op.register_autograd(autograd_backward, setup_context=setup_context)
