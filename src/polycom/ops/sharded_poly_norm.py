"""PolyNorm over a row split across tensor-parallel ranks: the row statistics summed over the group.

Under tensor parallelism (``train/tensor_parallel.py``) the MLP's up and gate projections are
column-parallel, so each of the T ranks holds n = N / T of a token's N hidden features. PolyNorm
normalises over all N (``activations/polynorm.py``), so normalising the local n is a different
function (the official code's behaviour at T > 1). This op makes the shard-local computation
exact with one ``all_reduce`` per pass, of a few floats per row:

forward
    S_i = sum_{j local} x_j^(2i), (M, r) in float64 -> all_reduce(sum) over the group ->
    inv_i = 1 / sqrt(S_i / N + eps) -> y = a_0 + sum_i a_i x^i inv_i on the local features
    (formed as ``poly_norm._saved_powers`` does, from v = x inv_1 and inv_i / inv_1^i, so no
    power of x is formed in the output pass).
backward
    d_i = sum_{j local} g_j n_ij and sum_{j local} g_j, (M, r + 1) -> all_reduce(sum) ->
    dL/dx by ``poly_norm.input_grad`` with the whole row's N; dL/da_i = sum_rows d_i and
    dL/da_0 = sum g are then the whole gradient on every rank (no further reduction).

The sums are float64: x^(2i) of any float32 |x| < 3.4e38 is below float64's 1.8e308 for
r <= 3 (r = 4: |x| < 1e38), so no row scale is needed, where the single-rank kernels divide
by max|x| (which would need a second collective, a max, before the sums). The sums of
non-negative terms lose nothing to cancellation. The output and the backward follow the
single-rank closed forms, so they agree with them to float32 rounding. The input bound
(``poly_norm.py``) is applied as there: every pass reads clamp(x, -c, c), and dL/dx is
masked with -c <= x <= c (c = inf: no clamp, no mask).

Gated PolyNorm multiplies by the local ``up`` (its backward runs with g * up); grouped ops
gather each row's expert's coefficients (``row_expert``) and sum coefficient gradients per
expert. Backends: ``eager`` (these functions) and ``compiled`` (each one compiled by
``torch.compile``, with the all_reduce between them); ``triton`` runs ``compiled`` (on a GPU,
Inductor generates Triton for the same passes), since the fused Triton kernels hold the
statistics pass and the output pass in one launch. First derivatives are exact with or without
``create_graph=True``; differentiating them again raises ``DOUBLE_BACKWARD_ERROR`` (the
single-rank ops differentiate their reference formula, which normalises over one rank's shard).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..reference import compute_dtype
from .compiled import LazyCompiled
from .grouped_poly_norm import per_expert_sums
from .poly_norm import _combine, _saved_powers, _up, bounded_input, input_grad, inside_bound, row_sums

__all__ = ["sharded_poly_norm", "statistics_width", "DOUBLE_BACKWARD_ERROR"]


def _partial_sums(x, weight, input_bound):
    """(M, r) float64: sum over the local features of x^(2i), i = 1..r (r from ``weight``'s last dim)."""
    x2 = bounded_input(x.to(torch.float64), input_bound).square()
    cols, power = [], x2
    for i in range(weight.shape[-1]):
        if i:
            power = power * x2
        cols.append(power.sum(-1, keepdim=True))
    return torch.cat(cols, dim=-1)


def _forward_output(x, up, weight, bias, inv_rms, input_bound):
    """y on the local features from the whole row's inv_rms; ``up`` None for plain PolyNorm."""
    y = _combine(_saved_powers(bounded_input(_up(x), input_bound), inv_rms)[2], weight, bias)
    return (y if up is None else y * _up(up)).to(x.dtype)


def _backward_sums(grad_y, x, up, inv_rms, input_bound):
    """(M, r + 1): [d in the weight layout (d_r .. d_1), sum_row g'] on the local features, g' = g [* up]."""
    gf = _up(grad_y) if up is None else _up(grad_y) * _up(up)
    d = row_sums(gf, _saved_powers(bounded_input(_up(x), input_bound), inv_rms)[2])
    return torch.cat([*d[::-1], gf.sum(-1, keepdim=True)], dim=-1)


def _backward_input(grad_y, x, up, weight, bias, inv_rms, sums, n, input_bound):
    """(dL/dx, dL/dup or None) from the whole row's sums (``_backward_sums`` all-reduced)."""
    r = inv_rms.shape[-1]
    xf = _up(x)
    gf = _up(grad_y) if up is None else _up(grad_y) * _up(up)
    powers = _saved_powers(bounded_input(xf, input_bound), inv_rms)
    d = [sums[:, r - i : r - i + 1].to(gf.dtype) for i in range(1, r + 1)]  # d_1 .. d_r
    grad_x = inside_bound(input_grad(gf, weight, powers, inv_rms, d, n), xf, input_bound).to(x.dtype)
    if up is None:
        return grad_x, None
    return grad_x, (_up(grad_y) * _combine(powers[2], weight, bias)).to(up.dtype)


_COMPILED = {
    "partial_sums": LazyCompiled("sharded_poly_norm_sums", _partial_sums),
    "forward_output": LazyCompiled("sharded_poly_norm_output", _forward_output),
    "backward_sums": LazyCompiled("sharded_poly_norm_backward_sums", _backward_sums),
    "backward_input": LazyCompiled("sharded_poly_norm_backward_input", _backward_input),
}
_EAGER = {"partial_sums": _partial_sums, "forward_output": _forward_output, "backward_sums": _backward_sums,
          "backward_input": _backward_input}


def _kernel(backend: str, name: str):
    return (_COMPILED if backend == "compiled" else _EAGER)[name]


def statistics_width(local_width: int, group) -> int:
    """N, the whole row's width: the local width times the group's size (column shards are equal)."""
    return local_width * dist.get_world_size(group)


def _rows(t):
    return None if t is None else t.reshape(-1, t.shape[-1]).contiguous()


class ShardedPolyNormFunction(torch.autograd.Function):
    """``apply(x, up, weight, bias, row_expert, eps, input_bound, group, backend)``; up / row_expert may be None."""

    @staticmethod
    def forward(ctx, x, up, weight, bias, row_expert, eps, input_bound, group, backend):
        x2, up2 = _rows(x), _rows(up)
        n = statistics_width(x2.shape[-1], group)
        sums = _kernel(backend, "partial_sums")(x2, weight, input_bound)
        dist.all_reduce(sums, group=group)  # the one collective of the forward: r float64 per row
        inv_rms = torch.rsqrt(sums / n + eps).to(compute_dtype(x.dtype))  # (M, r)
        w, b = (weight, bias) if row_expert is None else (weight[row_expert], bias[row_expert])
        y = _kernel(backend, "forward_output")(x2, up2, w, b, inv_rms, input_bound)
        ctx.save_for_backward(x, up, weight, bias, row_expert, inv_rms)
        ctx.group, ctx.backend, ctx.n, ctx.input_bound = group, backend, n, input_bound
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, grad_y):
        saved = ctx.saved_tensors
        if not torch.is_grad_enabled():
            return ShardedPolyNormFunction._gradients(ctx, grad_y, *saved)
        # create_graph=True: the first derivatives are right, but they have no graph (a second
        # derivative would need one through the collectives); differentiating them raises.
        with torch.no_grad():
            grads = ShardedPolyNormFunction._gradients(ctx, grad_y, *saved)
        anchors = [t for t in (grad_y, *saved) if t is not None and t.requires_grad]
        return tuple(g if g is None else _NoDoubleBackward.apply(g, *anchors) for g in grads)

    @staticmethod
    def _gradients(ctx, grad_y, x, up, weight, bias, row_expert, inv_rms):
        g2, x2, up2 = _rows(grad_y), _rows(x), _rows(up)
        sums = _kernel(ctx.backend, "backward_sums")(g2, x2, up2, inv_rms, ctx.input_bound)
        dist.all_reduce(sums, group=ctx.group)  # the one collective of the backward: r + 1 per row
        w, b = (weight, bias) if row_expert is None else (weight[row_expert], bias[row_expert])
        grad_x, grad_up = _kernel(ctx.backend, "backward_input")(g2, x2, up2, w, b, inv_rms, sums, ctx.n,
                                                                 ctx.input_bound)
        r = weight.shape[-1]
        if row_expert is None:
            grad_w, grad_b = sums[:, :r].sum(0), sums[:, r:].sum().reshape(1)
        else:
            grad_w = per_expert_sums(sums[:, :r], row_expert, weight.shape[0])
            grad_b = per_expert_sums(sums[:, r:], row_expert, weight.shape[0])
        return (grad_x.view(x.shape), None if up is None else grad_up.view(up.shape), grad_w.to(weight.dtype),
                grad_b.to(bias.dtype), None, None, None, None, None)


class _NoDoubleBackward(torch.autograd.Function):
    """``apply(g, *anchors)``: g, tied to the graph of ``anchors``; its backward raises (no second derivative)."""

    @staticmethod
    def forward(ctx, g, *anchors):
        return g.clone()

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(DOUBLE_BACKWARD_ERROR)


DOUBLE_BACKWARD_ERROR = ("PolyNorm under tensor parallelism has no double backward: its first derivatives "
                         "(create_graph=True) are exact, but differentiating them again is refused; run it on "
                         "one rank (statistics_group=None) for higher derivatives")


def sharded_poly_norm(x, up, weight, bias, row_expert, eps, input_bound, implementation, group):
    """PolyNorm (``up`` None) or gated PolyNorm of rows whose features are split over ``group``.

    ``row_expert`` (M,) selects each row's coefficients from weight (E, r), bias (E, 1) (grouped
    ops), or None for weight (r,), bias (1,); ``input_bound`` clamps x (inf: none).
    ``implementation`` as for the single-rank op;
    ``reference`` and the ``torch.func`` transforms are refused (module docstring)."""
    from . import dispatch

    if implementation == "reference" or dispatch.under_function_transform():
        raise ValueError("PolyNorm under tensor parallelism runs 'auto', 'eager' or 'compiled' only, outside "
                         "torch.func transforms: the reference formula normalises over one rank's shard")
    backend = dispatch.select_implementation(x, implementation, weight.shape[-1], triton_max_order=4,
                                             op="sharded_poly_norm")
    backend = "compiled" if backend == "triton" else backend
    if backend == "compiled" and torch.compiler.is_compiling():
        backend = "eager"
    return ShardedPolyNormFunction.apply(x, up, weight, bias, row_expert, eps, input_bound, group, backend)
