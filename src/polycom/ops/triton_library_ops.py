"""An op's Triton kernels as a ``torch.library.triton_op`` pair: the compiler sees the kernels themselves.

``polycom::<name>_triton(*args)`` and ``polycom::<name>_triton_backward(grad_y, *tensors[, stats],
*backward_constants)`` take the kernel contract's arguments (``fused_op``; no ``backend``) and run the
op's Triton launchers with ``traceable=True``: each launch goes through ``torch.library.wrap_triton``,
so when AOTAutograd traces the op it records the launch itself (``triton_kernel_wrapper_functional``,
which Inductor compiles into its own code) instead of one opaque custom op. Autograd is the generic ops' (first order through
the backward op, higher orders through the reference: ``fused_op.register_library_autograd``).

Three things torch needs from the code here and in the launchers:

- ``triton_op`` infers the schema from the function's annotations (it ignores ``schema=``), so each
  body gets a ``__signature__`` built from the kernel contract;
- torch finds the kernels for AOTAutograd's cache key by reading source: the body calls the
  launcher by a bare name (``forward_launcher(...)``), the launchers call theirs by bare names
  (``triton_ops.py``), and each launch is ``wrap_triton(<name>)``;
- under ``TRITON_INTERPRET=1`` (CPU tests) ``triton_utils.traceable_kernel`` gives ``wrap_triton``
  a JITFunction that launches through the interpreter; on a GPU the kernel is already one.

Registered by ``FusedOp.triton_library_ops()`` (this module imports Triton, so never at ``import polycom``).
"""

from __future__ import annotations

import importlib
import inspect

from torch import Tensor
from torch.library import triton_op

from .fused_op import FusedOp, as_rows, library_gradients, register_library_autograd

__all__ = ["register_triton_ops"]


def _signature(parameters: list[tuple[str, type]], returns) -> inspect.Signature:
    return inspect.Signature(
        [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=kind) for name, kind in parameters],
        return_annotation=returns,
    )


def register_triton_ops(op: FusedOp):
    """Register ``polycom::<op.name>_triton`` and ``..._triton_backward``; returns (forward op, backward op)."""
    k = op.kernels
    module = importlib.import_module(k.triton)
    forward_launcher = getattr(module, f"{op.name}_forward")
    backward_launcher = getattr(module, f"{op.name}_backward")
    tensor_names = [p for p in k.arguments if p not in k.constants]
    n_grads = len([p for p in tensor_names if p not in k.indices])

    def triton_forward(*args):
        rows = [as_rows(a) for a in args[: k.rows]]  # (M, N) each
        out = forward_launcher(*rows, *args[k.rows:], traceable=True)
        y, stats = out if k.saves_stats else (out, None)
        y = y.view(args[0].shape)
        return y if stats is None else (y, stats)

    def triton_backward(grad_y, *args):
        n_tensors = len(args) - len(k.backward_constants)
        args, constants = args[:n_tensors], args[n_tensors:]
        tensors, stats = (list(args[:-1]), [args[-1]]) if k.saves_stats else (list(args), [])
        rows = [as_rows(a) for a in tensors[: k.rows]]
        grads = backward_launcher(as_rows(grad_y), *rows, *tensors[k.rows:], *stats, *constants, traceable=True)
        return library_gradients(op, grads, tensors)

    triton_forward.__signature__ = _signature(
        [(p, float if p in k.constants else Tensor) for p in k.arguments],
        tuple[Tensor, Tensor] if k.saves_stats else Tensor,
    )
    triton_backward.__signature__ = _signature(
        [("grad_y", Tensor), *((p, Tensor) for p in tensor_names), *([("stats", Tensor)] if k.saves_stats else []),
         *((p, float) for p in k.backward_constants)],
        tuple[(Tensor,) * n_grads],
    )
    forward_op = triton_op(f"polycom::{op.name}_triton", triton_forward, mutates_args=())
    backward_op = triton_op(f"polycom::{op.name}_triton_backward", triton_backward, mutates_args=())
    register_library_autograd(forward_op, lambda: op, takes_backend=False, backward_op=backward_op)
    return forward_op, backward_op
