"""The grouped gated PolyNorm op, PolyNorm_e(gate) * up with each row's expert e, in one launch.

``gated_poly_norm.py`` per row, with the row's own expert's coefficients gathered as in
``grouped_poly_norm.py``: Motif's gated PolyNorm in a MoE with per-expert coefficients. The
product is formed in float32 and rounded once. The reference formula is
``polycom.activations.gated_polynorm.grouped_gated_poly_norm_reference``.
"""

from __future__ import annotations

from .fused_op import OpKernels
from .grouped_poly_norm import per_expert_sums
from .poly_norm import (TRITON_MAX_ORDER, _combine, _saved_powers, _scaled_combine, _scaled_stats, _up, bounded_input,
                        inside_bound, poly_norm_row_grads)

__all__ = ["grouped_gated_poly_norm_forward", "grouped_gated_poly_norm_backward", "KERNELS"]


def grouped_gated_poly_norm_forward_parts(gate, up, weight, bias, row_expert, eps, input_bound):
    """(y, inv_rms, t), as ``gated_poly_norm.gated_poly_norm_forward_parts`` with (M, r) gathered coefficients."""
    u, t, inv_rms = _scaled_stats(bounded_input(_up(gate), input_bound), weight.shape[-1], eps)
    return (_scaled_combine(u, t, weight[row_expert], bias[row_expert]) * _up(up)).to(gate.dtype), inv_rms, t


def grouped_gated_poly_norm_forward(gate, up, weight, bias, row_expert, eps, input_bound):
    return grouped_gated_poly_norm_forward_parts(gate, up, weight, bias, row_expert, eps, input_bound)[:2]


def grouped_gated_poly_norm_backward(grad_y, gate, up, weight, bias, row_expert, inv_rms, input_bound):
    gf, uf, gyf = _up(gate), _up(up), _up(grad_y)
    gc = bounded_input(gf, input_bound)
    w_rows, b_rows = weight[row_expert], bias[row_expert]  # (M, r), (M, 1)
    act = _combine(_saved_powers(gc, inv_rms)[2], w_rows, b_rows)  # recomputed: never saved
    grad_gate, d, g_rows = poly_norm_row_grads(gyf * uf, gc, w_rows, inv_rms)
    grad_gate = inside_bound(grad_gate, gf, input_bound)
    experts = weight.shape[0]
    return (grad_gate.to(gate.dtype), (gyf * act).to(up.dtype), per_expert_sums(d, row_expert, experts),
            per_expert_sums(g_rows, row_expert, experts))


KERNELS = OpKernels(
    forward=grouped_gated_poly_norm_forward,
    backward=grouped_gated_poly_norm_backward,
    rows=2,
    saves_stats=True,
    constants=("eps", "input_bound"),
    backward_constants=("input_bound",),
    indices=("row_expert",),
    compile_forward=grouped_gated_poly_norm_forward_parts,  # t as an extra output, as poly_norm.KERNELS
    keep=2,
    triton="polycom.ops.triton_ops",
    triton_max_order=TRITON_MAX_ORDER,
)
