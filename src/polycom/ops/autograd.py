"""``autograd.Function``s with closed-form backward, shared by every backend (eager, compiled, triton).

What is saved for backward: the input(s) as 2-D views (no copy when the input is
contiguous) and, for PolyNorm, r float32 numbers per row (the inverse RMS of
each power): at most the input's bytes plus 16 bytes per row for r <= 4. No
power, normalised copy or output is kept. The backward formulas are in
``closed_form.py``. Coefficient gradients are reduced in float32 and cast to the
coefficients' dtype.

Kernels are looked up by (op, implementation) in ``kernel_sets``, which the activation
family modules fill. The implementation name is a plain string argument so that ``torch.compile``
(Dynamo) can trace these Functions, forward and backward.
"""

from __future__ import annotations

import torch

from .kernel_sets import kernel


def _as_rows(t: torch.Tensor) -> torch.Tensor:
    """(..., N) -> contiguous (M, N); a view when ``t`` is already contiguous."""
    return t.reshape(-1, t.shape[-1]).contiguous()


class PolyNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps, impl):
        x2d = _as_rows(x)  # (M, N)
        y, inv_rms = kernel("poly_norm_forward", impl)(x2d, weight, bias, eps)
        ctx.save_for_backward(x2d, weight, inv_rms)
        ctx.impl, ctx.bias_dtype = impl, bias.dtype
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, grad_y):
        x2d, weight, inv_rms = ctx.saved_tensors
        grad_x, grad_w, grad_b = kernel("poly_norm_backward", ctx.impl)(_as_rows(grad_y), x2d, weight, inv_rms)
        return grad_x.view(grad_y.shape), grad_w.to(weight.dtype), grad_b.to(ctx.bias_dtype), None, None


class GatedPolyNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up, weight, bias, eps, impl):
        gate2d, up2d = _as_rows(gate), _as_rows(up)  # (M, N) each
        y, inv_rms = kernel("gated_poly_norm_forward", impl)(gate2d, up2d, weight, bias, eps)
        ctx.save_for_backward(gate2d, up2d, weight, bias, inv_rms)
        ctx.impl = impl
        return y.view(gate.shape)

    @staticmethod
    def backward(ctx, grad_y):
        gate2d, up2d, weight, bias, inv_rms = ctx.saved_tensors
        grad_gate, grad_up, grad_w, grad_b = kernel("gated_poly_norm_backward", ctx.impl)(
            _as_rows(grad_y), gate2d, up2d, weight, bias, inv_rms
        )
        shape = grad_y.shape
        return grad_gate.view(shape), grad_up.view(shape), grad_w.to(weight.dtype), grad_b.to(bias.dtype), None, None


class PolyReLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, impl):
        x2d = _as_rows(x)  # (M, N)
        y = kernel("poly_relu_forward", impl)(x2d, weight, bias)
        ctx.save_for_backward(x2d, weight)
        ctx.impl, ctx.bias_dtype = impl, bias.dtype
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, grad_y):
        x2d, weight = ctx.saved_tensors
        grad_x, grad_w, grad_b = kernel("poly_relu_backward", ctx.impl)(_as_rows(grad_y), x2d, weight)
        return grad_x.view(grad_y.shape), grad_w.to(weight.dtype), grad_b.to(ctx.bias_dtype), None
