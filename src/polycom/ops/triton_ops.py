"""The Triton kernels in the kernel contract of ``fused_op`` (``<op>_forward`` / ``<op>_backward``).

``ops/poly_norm.py``, ``ops/gated_poly_norm.py`` and ``ops/poly_relu.py`` and the grouped ops declare this module as
their Triton backend (``OpKernels(triton=...)``); it is imported on first use only, so machines
without Triton never import it. The launchers live with their kernels in ``triton_poly_norm.py``
and ``triton_poly_relu.py``; here they get the contract's argument lists (the backward receives
every coefficient tensor, and the PolyNorm and PolyReLU kernels do not need the bias). While
``torch.compile`` traces, ``fused_op`` calls them through the op's ``torch.library`` custom op, or
through its ``triton_op`` (``triton_library_ops``), which passes ``traceable=True``.

The launchers are imported and called by their bare names: torch finds a ``triton_op``'s kernels
(for AOTAutograd's cache key) by reading the source of the functions it calls by name.
"""

from __future__ import annotations

from torch import Tensor

from .triton_poly_norm import (
    gated_poly_norm_backward_triton,
    gated_poly_norm_forward_triton,
    grouped_gated_poly_norm_backward_triton,
    grouped_gated_poly_norm_forward_triton,
    grouped_poly_norm_backward_triton,
    grouped_poly_norm_forward_triton,
    poly_norm_backward_triton,
    poly_norm_forward_triton,
)
from .triton_poly_relu import poly_relu_backward_triton, poly_relu_forward_triton

poly_norm_forward = poly_norm_forward_triton
gated_poly_norm_forward = gated_poly_norm_forward_triton
gated_poly_norm_backward = gated_poly_norm_backward_triton
poly_relu_forward = poly_relu_forward_triton
grouped_poly_norm_forward = grouped_poly_norm_forward_triton
grouped_poly_norm_backward = grouped_poly_norm_backward_triton
grouped_gated_poly_norm_forward = grouped_gated_poly_norm_forward_triton
grouped_gated_poly_norm_backward = grouped_gated_poly_norm_backward_triton


def poly_norm_backward(grad_y: Tensor, x: Tensor, weight: Tensor, bias: Tensor, inv_rms: Tensor, input_bound: float, *,
                       traceable: bool = False):
    return poly_norm_backward_triton(grad_y, x, weight, inv_rms, input_bound, traceable=traceable)


def poly_relu_backward(grad_y: Tensor, x: Tensor, weight: Tensor, bias: Tensor, *, traceable: bool = False):
    return poly_relu_backward_triton(grad_y, x, weight, traceable=traceable)
