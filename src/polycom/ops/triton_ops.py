"""The Triton kernels in the kernel contract of ``fused_op`` (``<op>_forward`` / ``<op>_backward``).

``ops/poly_norm.py``, ``ops/gated_poly_norm.py`` and ``ops/poly_relu.py`` and the grouped ops declare this module as
their Triton backend (``OpKernels(triton=...)``); it is imported on first use only, so machines
without Triton never import it. The launchers live with their kernels in ``triton_poly_norm.py``
and ``triton_poly_relu.py``; here they get the contract's argument lists (the backward receives
every coefficient tensor, and the PolyNorm and PolyReLU kernels do not need the bias). While
``torch.compile`` traces, ``fused_op`` calls them through the op's ``torch.library`` custom op.
"""

from __future__ import annotations

from torch import Tensor

from . import triton_poly_norm as tpn
from . import triton_poly_relu as tpr

poly_norm_forward = tpn.poly_norm_forward_triton
gated_poly_norm_forward = tpn.gated_poly_norm_forward_triton
gated_poly_norm_backward = tpn.gated_poly_norm_backward_triton
poly_relu_forward = tpr.poly_relu_forward_triton
grouped_poly_norm_forward = tpn.grouped_poly_norm_forward_triton
grouped_poly_norm_backward = tpn.grouped_poly_norm_backward_triton
grouped_gated_poly_norm_forward = tpn.grouped_gated_poly_norm_forward_triton
grouped_gated_poly_norm_backward = tpn.grouped_gated_poly_norm_backward_triton


def poly_norm_backward(grad_y: Tensor, x: Tensor, weight: Tensor, bias: Tensor, inv_rms: Tensor):
    return tpn.poly_norm_backward_triton(grad_y, x, weight, inv_rms)


def poly_relu_backward(grad_y: Tensor, x: Tensor, weight: Tensor, bias: Tensor):
    return tpr.poly_relu_backward_triton(grad_y, x, weight)
