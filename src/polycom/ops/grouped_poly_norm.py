"""The grouped PolyNorm op: each row with the coefficients of its own expert, in one launch.

A MoE layer with per-expert coefficients (Motif-3's layout, ``MoEConfig.coefficients =
"per_expert"``) applies expert e's PolyNorm, weight[e] (r,) and bias[e] (1,), to the rows routed
to e. ``row_expert`` (M,) int64 names each row's expert; rows need not be sorted and an expert
may have none. The math per row is PolyNorm's (``poly_norm.py``), with the row's coefficients
gathered; coefficient gradients are the per-row ones summed per expert. Triton: the PolyNorm
kernels with GROUPED, which read each row's coefficient pointers from ``row_expert``
(``triton_poly_norm.py``). The reference formula is
``polycom.activations.polynorm.grouped_poly_norm_reference``.
"""

from __future__ import annotations

import torch

from .fused_op import OpKernels
from .poly_norm import TRITON_MAX_ORDER, _scaled_combine, _scaled_stats, _up, bounded_input, inside_bound, poly_norm_row_grads

__all__ = ["per_expert_sums", "grouped_poly_norm_forward", "grouped_poly_norm_backward", "KERNELS"]


def per_expert_sums(per_row: torch.Tensor, row_expert: torch.Tensor, num_experts: int) -> torch.Tensor:
    """(E, k): the (M, k) per-row values summed over each expert's rows."""
    return per_row.new_zeros((num_experts, per_row.shape[-1])).index_add_(0, row_expert, per_row)


def grouped_poly_norm_forward_parts(x, weight, bias, row_expert, eps, input_bound):
    """(y, inv_rms, t), as ``poly_norm.poly_norm_forward_parts`` with (M, r) gathered coefficients."""
    u, t, inv_rms = _scaled_stats(bounded_input(_up(x), input_bound), weight.shape[-1], eps)
    return _scaled_combine(u, t, weight[row_expert], bias[row_expert]).to(x.dtype), inv_rms, t


def grouped_poly_norm_forward(x, weight, bias, row_expert, eps, input_bound):
    return grouped_poly_norm_forward_parts(x, weight, bias, row_expert, eps, input_bound)[:2]


def grouped_poly_norm_backward(grad_y, x, weight, bias, row_expert, inv_rms, input_bound):
    xf = _up(x)
    grad_x, d, g_rows = poly_norm_row_grads(_up(grad_y), bounded_input(xf, input_bound), weight[row_expert], inv_rms)
    grad_x = inside_bound(grad_x, xf, input_bound)
    experts = weight.shape[0]
    return grad_x.to(x.dtype), per_expert_sums(d, row_expert, experts), per_expert_sums(g_rows, row_expert, experts)


KERNELS = OpKernels(
    forward=grouped_poly_norm_forward,
    backward=grouped_poly_norm_backward,
    saves_stats=True,
    constants=("eps", "input_bound"),
    backward_constants=("input_bound",),
    indices=("row_expert",),
    compile_forward=grouped_poly_norm_forward_parts,  # t as an extra output, as poly_norm.KERNELS
    keep=2,
    triton="polycom.ops.triton_ops",
    triton_max_order=TRITON_MAX_ORDER,
)
