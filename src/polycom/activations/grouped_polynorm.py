"""Grouped (per-expert) PolyNorm and gated PolyNorm: each row with its own expert's coefficients.

A MoE with per-expert coefficients (Motif-3's layout; ``MoEConfig.coefficients = "per_expert"``)
applies expert e's PolyNorm to the rows routed to e. Written as one op over all rows, it is one
kernel launch per layer instead of one per expert (64 at the paper's MoE, 384 at Motif-3's).
The formula per row is PolyNorm's (``polynorm.py``) or gated PolyNorm's (``gated_polynorm.py``)
with a_i = weight[e, r - i], a_0 = bias[e, 0], e = row_expert of that row. Fast paths: the ops of
``ops/grouped_poly_norm.py`` and ``ops/grouped_gated_poly_norm.py``.
"""

from __future__ import annotations

import math

import torch

from ..ops import dispatch
from ..ops import grouped_gated_poly_norm as grouped_gated_poly_norm_op
from ..ops import grouped_poly_norm as grouped_poly_norm_op
from ..ops.sharded_poly_norm import sharded_poly_norm
from ..reference import compute_dtype
from ..validation import check_eps, check_float_tensor, check_same_shape
from .polynorm import normalized_powers
from .polynorm_bounds import PolyNormBounds, fused_arguments

__all__ = ["grouped_poly_norm_reference", "grouped_gated_poly_norm_reference", "grouped_poly_norm",
           "grouped_gated_poly_norm"]


def grouped_poly_norm_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, row_expert: torch.Tensor,
                                eps: float = 1e-6, input_bound: float = math.inf) -> torch.Tensor:
    """PolyNorm of each row with its expert's coefficients (Zhuo et al. 2025, eq. (3), per expert):

        y[m] = bias[e, 0] + sum_{i=1..r} weight[e, r - i] * N(x[m]^i),   e = row_expert[m]

    at clamp(x, -c, c) for a finite ``input_bound`` c (as ``poly_norm_reference``).
    """
    r = weight.shape[-1]
    dt = compute_dtype(x.dtype)
    w, b = weight.to(dt)[row_expert], bias.to(dt)[row_expert]  # (..., r), (..., 1)
    xf = x.to(dt).clamp(-input_bound, input_bound) if math.isfinite(input_bound) else x.to(dt)
    out = b.expand_as(x)
    for i, n_i in enumerate(normalized_powers(xf, r, eps), start=1):
        out = out + w[..., r - i, None] * n_i
    return out.to(x.dtype)


def grouped_gated_poly_norm_reference(gate: torch.Tensor, up: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                                      row_expert: torch.Tensor, eps: float = 1e-6,
                                      input_bound: float = math.inf) -> torch.Tensor:
    """Gated PolyNorm per expert: y[m] = PolyNorm_e(gate[m]) * up[m], e = row_expert[m], product in float32;
    ``input_bound`` clamps the gate."""
    dt = compute_dtype(gate.dtype)
    act = grouped_poly_norm_reference(gate.to(dt), weight, bias, row_expert, eps, input_bound)
    return (act * up.to(dt)).to(gate.dtype)


def _check_grouped(x: torch.Tensor, weight, bias, row_expert) -> None:
    for name, t in (("weight", weight), ("bias", bias)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.device != x.device:
            raise TypeError(f"argument '{name}' must be a floating-point tensor on {x.device}")
    if weight.dim() != 2 or weight.shape[0] < 1 or weight.shape[1] < 1:
        raise ValueError(f"argument 'weight' must have shape (experts, r), got {tuple(weight.shape)}")
    if tuple(bias.shape) != (weight.shape[0], 1):
        raise ValueError(f"argument 'bias' must have shape ({weight.shape[0]}, 1), got {tuple(bias.shape)}")
    if not isinstance(row_expert, torch.Tensor) or row_expert.dtype != torch.int64:
        raise TypeError("argument 'row_expert' must be an int64 tensor (the expert of each row)")
    if tuple(row_expert.shape) != tuple(x.shape[:-1]) or row_expert.device != x.device:
        raise ValueError(f"argument 'row_expert' must have shape {tuple(x.shape[:-1])} (one expert per row) on "
                         f"{x.device}, got {tuple(row_expert.shape)} on {row_expert.device}")
    # The range check reads the indices: free on CPU, a host sync on an accelerator, so only there skipped
    # (an index out of range is then undefined, as in torch.index_select on CUDA).
    if row_expert.device.type == "cpu" and not torch.compiler.is_compiling() and row_expert.numel():
        lo, hi = int(row_expert.min()), int(row_expert.max())
        if lo < 0 or hi >= weight.shape[0]:
            raise ValueError(f"argument 'row_expert' must hold experts in [0, {weight.shape[0]}), got [{lo}, {hi}]")


def grouped_poly_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, row_expert: torch.Tensor,
                      eps: float = 1e-6, implementation: str = "auto",
                      bounds: PolyNormBounds | None = None, statistics_group=None) -> torch.Tensor:
    """PolyNorm of each row of ``x`` with expert ``row_expert[row]``'s coefficients: weight (E, r), bias (E, 1).

    ``bounds``: Motif's bounded form (``polynorm_bounds.py``), the same for every expert.
    ``statistics_group``: as ``polynorm.poly_norm``'s (rows split over tensor-parallel ranks)."""
    check_float_tensor(x, "x")
    _check_grouped(x, weight, bias, row_expert)
    check_eps(eps)
    weight, bias, input_bound = fused_arguments(bounds, weight, bias)
    if statistics_group is not None:
        return sharded_poly_norm(x, None, weight, bias, row_expert.reshape(-1), eps, input_bound, implementation,
                                 statistics_group)
    return dispatch.call("grouped_poly_norm", implementation, x, weight, bias, row_expert.reshape(-1), eps, input_bound,
                         order=weight.shape[-1])


def grouped_gated_poly_norm(gate: torch.Tensor, up: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                            row_expert: torch.Tensor, eps: float = 1e-6, implementation: str = "auto",
                            bounds: PolyNormBounds | None = None, statistics_group=None) -> torch.Tensor:
    """Gated PolyNorm per expert: ``PolyNorm_e(gate) * up`` with e = ``row_expert`` of each row;
    ``statistics_group`` as ``polynorm.poly_norm``'s."""
    check_float_tensor(gate, "gate")
    check_float_tensor(up, "up")
    check_same_shape(gate, up, "gate", "up")
    _check_grouped(gate, weight, bias, row_expert)
    check_eps(eps)
    weight, bias, input_bound = fused_arguments(bounds, weight, bias)
    if statistics_group is not None:
        return sharded_poly_norm(gate, up, weight, bias, row_expert.reshape(-1), eps, input_bound, implementation,
                                 statistics_group)
    return dispatch.call("grouped_gated_poly_norm", implementation, gate, up, weight, bias, row_expert.reshape(-1),
                         eps, input_bound, order=weight.shape[-1])


def _flat_rows_reference(reference):
    """The reference on the kernels' arguments (..., row_expert, eps, input_bound): row_expert flattened to one
    entry per row."""
    return lambda *args: reference(*args[:-3], args[-3].reshape(args[0].shape[:-1]), *args[-2:])


dispatch.register_op("grouped_poly_norm", reference=_flat_rows_reference(grouped_poly_norm_reference),
                     kernels=grouped_poly_norm_op.KERNELS)
dispatch.register_op("grouped_gated_poly_norm", reference=_flat_rows_reference(grouped_gated_poly_norm_reference),
                     kernels=grouped_gated_poly_norm_op.KERNELS)
