"""The gated PolyNorm op, PolyNorm(gate) * up: closed-form forward and backward, and its backends.

Same contract and statistics as ``poly_norm.py``, whose helpers it uses: the PolyNorm
backward runs with g' = g * up, and dL/dup = g * PolyNorm(gate), recomputed from the saved
inverse RMS values (never saved). The product PolyNorm(gate) * up is formed in float32 and
rounded once to the output dtype, as the reference does. The input bound clamps the gate
(``poly_norm.py``): PolyNorm(clamp(gate)) * up.
"""

from __future__ import annotations

from .fused_op import OpKernels
from .poly_norm import (TRITON_MAX_ORDER, _combine, _saved_powers, _scaled_combine, _scaled_stats, _up, bounded_input,
                        inside_bound, poly_norm_row_grads)

__all__ = ["gated_poly_norm_forward_parts", "gated_poly_norm_forward", "gated_poly_norm_backward", "KERNELS"]


def gated_poly_norm_forward_parts(gate, up, weight, bias, eps, input_bound):
    """(y, inv_rms, t), as ``poly_norm_forward_parts``."""
    u, t, inv_rms = _scaled_stats(bounded_input(_up(gate), input_bound), weight.shape[-1], eps)
    return (_scaled_combine(u, t, weight, bias) * _up(up)).to(gate.dtype), inv_rms, t


def gated_poly_norm_forward(gate, up, weight, bias, eps, input_bound):
    return gated_poly_norm_forward_parts(gate, up, weight, bias, eps, input_bound)[:2]


def gated_poly_norm_backward(grad_y, gate, up, weight, bias, inv_rms, input_bound):
    gf, uf, gyf = _up(gate), _up(up), _up(grad_y)
    gc = bounded_input(gf, input_bound)
    act = _combine(_saved_powers(gc, inv_rms)[2], weight, bias)  # recomputed: never saved
    grad_gate, d, g_rows = poly_norm_row_grads(gyf * uf, gc, weight, inv_rms)
    grad_gate = inside_bound(grad_gate, gf, input_bound)
    return grad_gate.to(gate.dtype), (gyf * act).to(up.dtype), d.sum(0), g_rows.sum().reshape(1)


KERNELS = OpKernels(
    forward=gated_poly_norm_forward,
    backward=gated_poly_norm_backward,
    rows=2,
    saves_stats=True,
    constants=("eps", "input_bound"),
    backward_constants=("input_bound",),
    compile_forward=gated_poly_norm_forward_parts,  # t as an extra output, as poly_norm.KERNELS
    keep=2,
    triton="polycom.ops.triton_ops",
    triton_max_order=TRITON_MAX_ORDER,
)
