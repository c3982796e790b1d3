r"""Triton kernels for PolyReLU (forward and closed-form backward), elementwise.

The math is ``polycom.reference.poly_relu_reference``; this module only
evaluates it. With z = relu(x), a_i = weight[r - i], b = bias and g = dL/dy:

    y = b + sum_i a_i z^i                                 (Horner's rule in z, fp32)
    dL/dx = g * [x > 0] * sum_i i a_i z^(i-1)             (relu'(0) = 0, as torch)
    dL/da_i = sum g * z^i,    dL/db = sum g

The coefficient gradients are summed per program into a small fp32 buffer
(one row per program), then over programs by torch: deterministic, no atomics.
"""

from __future__ import annotations

import torch
from torch.library import wrap_triton

from .triton_utils import check_launch, horner, load_coefficients, tl, traceable_kernel, triton

__all__ = ["poly_relu_forward_triton", "poly_relu_backward_triton"]

_BLOCK = 4096  # elements per program: 8 KiB (16-bit) or 16 KiB (fp32) of input
_NUM_WARPS = 8


@triton.jit
def _fwd_kernel(x_ptr, y_ptr, w_ptr, b_ptr, numel, ORDER: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    z = tl.maximum(tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32), 0.0)
    a1, a2, a3, a4 = load_coefficients(w_ptr, ORDER)
    y = horner(z, tl.load(b_ptr).to(tl.float32), a1, a2, a3, a4, ORDER)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_kernel(gy_ptr, x_ptr, w_ptr, gx_ptr, part_ptr, numel, ORDER: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    g = tl.load(gy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    z = tl.maximum(x, 0.0)
    a1, a2, a3, a4 = load_coefficients(w_ptr, ORDER)
    dpoly = horner(z, a1, 2.0 * a2, 3.0 * a3, 4.0 * a4, 0.0, ORDER - 1)
    gx = tl.where(x > 0.0, g * dpoly, 0.0)
    tl.store(gx_ptr + offs, gx.to(gx_ptr.dtype.element_ty), mask=mask)

    # Partial coefficient gradients of this program: [grad_weight (highest power first), grad_bias].
    part_row = part_ptr + pid * (ORDER + 1)
    tl.store(part_row + ORDER, tl.sum(g, axis=0))
    gz = g * z
    tl.store(part_row + ORDER - 1, tl.sum(gz, axis=0))
    if ORDER >= 2:
        gz = gz * z
        tl.store(part_row + ORDER - 2, tl.sum(gz, axis=0))
    if ORDER >= 3:
        gz = gz * z
        tl.store(part_row + ORDER - 3, tl.sum(gz, axis=0))
    if ORDER >= 4:
        gz = gz * z
        tl.store(part_row + ORDER - 4, tl.sum(gz, axis=0))


def poly_relu_forward_triton(x, weight, bias, *, block_size=_BLOCK, traceable=False):
    """PolyReLU forward on a contiguous ``x`` (any shape): returns y in x's dtype.

    ``traceable``: launch through ``torch.library.wrap_triton`` (the op's ``triton_op``), so a traced
    graph holds the kernel itself; eager calls launch it directly (the traced launch costs host time).
    """
    check_launch("poly_relu_forward_triton", x, weight, bias)
    y = torch.empty_like(x)
    numel = x.numel()
    if numel:
        grid = (triton.cdiv(numel, block_size),)
        if traceable:
            kernel = traceable_kernel(_fwd_kernel)
            launch = wrap_triton(kernel)
        else:
            launch = _fwd_kernel
        launch[grid](x, y, weight, bias, numel, ORDER=weight.numel(), BLOCK=block_size, num_warps=_NUM_WARPS)
    return y


def poly_relu_backward_triton(grad_y, x, weight, *, block_size=_BLOCK, traceable=False):
    """PolyReLU backward: returns (grad_x in x's dtype, grad_weight fp32 like weight, grad_bias (1,) fp32).

    ``traceable`` as in ``poly_relu_forward_triton``."""
    check_launch("poly_relu_backward_triton", x, grad_y, weight)
    order = weight.numel()
    grad_x = torch.empty_like(x)
    numel = x.numel()
    programs = triton.cdiv(numel, block_size)
    partials = torch.empty((programs, order + 1), dtype=torch.float32, device=x.device)
    if numel:
        if traceable:
            kernel = traceable_kernel(_bwd_kernel)
            launch = wrap_triton(kernel)
        else:
            launch = _bwd_kernel
        launch[(programs,)](
            grad_y.contiguous(), x, weight, grad_x, partials, numel,
            ORDER=order, BLOCK=block_size, num_warps=_NUM_WARPS,
        )
    sums = partials.sum(dim=0)  # deterministic: fixed-order reduction over programs
    return grad_x, sums[:order].reshape(weight.shape), sums[order:]
