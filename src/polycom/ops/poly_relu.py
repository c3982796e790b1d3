"""The PolyReLU op: closed-form forward and backward in PyTorch ops, and its backends.

The ``eager`` kernels, and compiled by Inductor the ``compiled`` ones; the ``triton``
kernels are in ``triton_poly_relu.py``. Elementwise: forward by Horner's rule in
p = relu(x), computed in float32 for 16-bit inputs. The reference formula is
``polycom.activations.polyrelu.poly_relu_reference``.

PolyReLU backward, with p = relu(x):  dL/dx = g * [x > 0] * sum_i i a_i p^(i-1),
dL/da_i = sum g p^i, dL/da_0 = sum g. Only x is saved.
"""

from __future__ import annotations

import torch

from .fused_op import OpKernels
from .poly_norm import TRITON_MAX_ORDER, _up

__all__ = ["poly_relu_forward", "poly_relu_backward", "KERNELS"]


def poly_relu_forward(x, weight, bias):
    p = torch.relu(_up(x))
    w = weight.to(p.dtype)
    y = w[0] * torch.ones_like(p)  # Horner: a_r, then (.. * p + a_{i}) down to a_1, then * p + a_0
    for i in range(1, weight.shape[0]):
        y = y * p + w[i]
    return (y * p + bias.to(p.dtype)).to(x.dtype)


def poly_relu_backward(grad_y, x, weight, bias):
    r = weight.shape[0]
    xf, gf = _up(x), _up(grad_y)
    w = weight.to(xf.dtype)
    p = torch.relu(xf)
    grad_w = []  # a_1 .. a_r
    slope = torch.zeros_like(p)  # sum_i i a_i p^(i-1)
    power_below = torch.ones_like(p)
    for i in range(1, r + 1):
        slope = slope + (i * w[r - i]) * power_below
        power_below = power_below * p  # now p^i
        grad_w.append((gf * power_below).sum())
    grad_x = torch.where(xf > 0, gf * slope, torch.zeros_like(gf))
    return grad_x.to(x.dtype), torch.stack(grad_w[::-1]), gf.sum().reshape(1)


KERNELS = OpKernels(
    forward=poly_relu_forward,
    backward=poly_relu_backward,
    triton="polycom.ops.triton_ops",
    triton_max_order=TRITON_MAX_ORDER,
)
