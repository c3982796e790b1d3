"""One memory-lean ``autograd.Function`` for every learnable elementwise family (Hermite, Fourier, tropical).

A family with parameters p_1..p_m and an elementwise y = F(x; p) registers two
closed-form kernels (``ops.kernel_sets.register_closed_form``):

- ``<op>_forward(x2d, *params) -> y2d``
- ``<op>_backward(grad_y2d, x2d, *params) -> (grad_x2d, grad_p_1, ..., grad_p_m)``

and ``lean_function(op)`` returns the Function that runs them. Saved for backward:
the input as a 2-D view (no copy when contiguous) and the parameters; the basis
values and the output are recomputed in backward, not kept (the reference under
autograd keeps one tensor per basis function). Parameter gradients are reduced in
float32 (or float64 for float64 inputs) and cast to the parameters' dtype.
"""

from __future__ import annotations

import functools

import torch

from ..ops.dispatch import IMPLEMENTATIONS, TRITON_MAX_ORDER
from ..ops.kernel_sets import kernel

__all__ = ["lean_function", "as_rows", "check_implementation", "NO_TRITON_ORDER"]

# These families have closed-form kernels only (eager / compiled). dispatch picks Triton on
# CUDA for order <= TRITON_MAX_ORDER; passing this order makes "auto" pick eager there instead.
NO_TRITON_ORDER = TRITON_MAX_ORDER + 1


def check_implementation(implementation) -> str:
    if implementation not in IMPLEMENTATIONS or implementation == "triton":
        valid = [i for i in IMPLEMENTATIONS if i != "triton"]
        raise ValueError(f"argument 'implementation' must be one of {valid} (no Triton kernel), got {implementation!r}")
    return implementation


def as_rows(t: torch.Tensor) -> torch.Tensor:
    """(..., N) -> contiguous (M, N); a view when ``t`` is already contiguous."""
    return t.reshape(-1, t.shape[-1]).contiguous()


@functools.lru_cache(maxsize=None)
def lean_function(op: str) -> type[torch.autograd.Function]:
    """The Function ``apply(x, *params, impl)`` running the ``op`` forward/backward kernels."""

    class LeanElementwiseFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, *params_and_impl):
            *params, impl = params_and_impl
            x2d = as_rows(x)  # (M, N)
            y = kernel(f"{op}_forward", impl)(x2d, *params)
            ctx.save_for_backward(x2d, *params)
            ctx.impl = impl
            return y.view(x.shape)

        @staticmethod
        def backward(ctx, grad_y):
            x2d, *params = ctx.saved_tensors
            grad_x, *grad_params = kernel(f"{op}_backward", ctx.impl)(as_rows(grad_y), x2d, *params)
            grads = [g.to(p.dtype) for g, p in zip(grad_params, params)]
            return (grad_x.view(grad_y.shape), *grads, None)

    LeanElementwiseFunction.__name__ = LeanElementwiseFunction.__qualname__ = \
        "".join(part.title() for part in op.split("_")) + "Function"
    return LeanElementwiseFunction
