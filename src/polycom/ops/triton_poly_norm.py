r"""Triton kernels for PolyNorm and gated PolyNorm (forward and closed-form backward).

The math is ``polycom.reference.poly_norm_reference``; this module only
evaluates it. Per row of length N, with a_i = weight[r - i], b = bias:

    inv_i = 1 / sqrt(mean(x^(2i)) + eps),   n_i = x^i * inv_i,   y = b + sum_i a_i n_i

Forward, overflow-safe, as ``reference.normalized_powers``: with s = max(1, max|x|)
and u = x / s, every u^(2i) lies in [0, 1] and

    t_i = rsqrt(mean(u^(2i)) + eps * s^(-2i)),   inv_i = t_i * s^(-i),   n_i = u^i * t_i,

so y = b + sum_i (a_i t_i) u^i, evaluated by Horner's rule in u, has bounded
terms. Rows of up to 16384 elements stay in registers (one read of x). Longer
rows are read twice in chunks (statistics, then output, mostly from L2); their
statistics are first summed with s = 1, which gives the same value whenever
nothing overflows, and recomputed with s = max|x| only if the highest power
overflowed fp32 (a max would otherwise cost a pass or a rescale per chunk).

Backward (closed form; only x, the r values inv_i per row and the coefficients).
Differentiating inv_i = (mean(x^(2i)) + eps)^(-1/2) gives
d inv_i / d x_j = -i * inv_i^3 * x_j^(2i-1) / N, hence, with g = dL/dy and
d_i = sum_j g_j n_{i,j} (= c_i * inv_i for c_i = sum_j g_j x_j^i):

    dL/dx_j = sum_i a_i * i * x_j^(i-1) * inv_i * (g_j - (d_i / N) * n_{i,j})
    dL/da_i = sum_rows d_i,    dL/db = sum_rows sum_j g_j

inv_i^3 would underflow for large rows, so the kernel works with the
normalised variable v = x * inv_1 (|v| <= sqrt(N)) and the bounded ratios
rho_i = inv_i / inv_1^i (<= 1 by the power-mean inequality, computed by
repeated division so no intermediate underflows):

    n_i = rho_i v^i,   d_i = rho_i * sum_j g_j v_j^i,
    dL/dx_j = inv_1 * ( g_j * sum_i i a_i rho_i v_j^(i-1)  -  v_j * sum_i e_i (v_j^2)^(i-1) ),
    e_i = i a_i rho_i^2 d_i / N.

Gated PolyNorm y = PolyNorm(gate) * up: the PolyNorm backward runs with
g' = g * up, and dL/dup = g * PolyNorm(gate), recomputed from the stored inv_i
as b + sum_i a_i rho_i v^i (hence the bias argument); dL/db = sum g'.

The backward is exact while every inv_i is a normal fp32 number (roughly
max|x|^r < 1e37); beyond that the stored inv_i underflow to 0 and the
corresponding terms of the gradient vanish (finite, not NaN).

Input bound c (BOUNDED, a constexpr: the unbounded kernels hold no trace of it):
every read of x is clamped to [-c, c] in fp32 before use, and the backward's
dL/dx is multiplied by the indicator -c <= x <= c (torch.clamp's gradient,
inclusive at the bounds; ``ops/poly_norm.py``).
"""

from __future__ import annotations

import math

import torch
from torch.library import wrap_triton

from .triton_utils import (
    check_launch, grid_programs, horner, load_coefficients, row_launch_config, tl, traceable_kernel, triton,
)

__all__ = [
    "poly_norm_forward_triton",
    "poly_norm_backward_triton",
    "gated_poly_norm_forward_triton",
    "gated_poly_norm_backward_triton",
    "grouped_poly_norm_forward_triton",
    "grouped_poly_norm_backward_triton",
    "grouped_gated_poly_norm_forward_triton",
    "grouped_gated_poly_norm_backward_triton",
]


@triton.jit
def _load_coefficients(w_ptr, b_ptr, ORDER: tl.constexpr):
    """(b, a_1, ..., a_4) in fp32; a_i = weight[ORDER - i], unused orders 0."""
    a1, a2, a3, a4 = load_coefficients(w_ptr, ORDER)
    return tl.load(b_ptr).to(tl.float32), a1, a2, a3, a4


@triton.jit
def _highest(s1, s2, s3, s4, ORDER: tl.constexpr):
    top = s1
    if ORDER == 2:
        top = s2
    if ORDER == 3:
        top = s3
    if ORDER == 4:
        top = s4
    return top


@triton.jit
def _power_sums(u2, ORDER: tl.constexpr):
    """(sum u^2, sum u^4, sum u^6, sum u^8) of a block from u2 = u * u; orders above ORDER give 0."""
    s1 = tl.sum(u2, axis=0)
    s2 = tl.full([], 0.0, tl.float32)
    s3 = tl.full([], 0.0, tl.float32)
    s4 = tl.full([], 0.0, tl.float32)
    if ORDER >= 2:
        s2 = tl.sum(u2 * u2, axis=0)
    if ORDER >= 3:
        s3 = tl.sum(u2 * u2 * u2, axis=0)
    if ORDER >= 4:
        s4 = tl.sum((u2 * u2) * (u2 * u2), axis=0)
    return s1, s2, s3, s4


@triton.jit
def _bounded(x, bound, BOUNDED: tl.constexpr):
    """clamp(x, -c, c) (NaN stays NaN, as in torch.clamp); x itself when unbounded."""
    if BOUNDED:
        x = tl.minimum(tl.maximum(x, -bound, propagate_nan=tl.PropagateNan.ALL), bound,
                       propagate_nan=tl.PropagateNan.ALL)
    return x


@triton.jit
def _inside_bound(gx, x, bound, BOUNDED: tl.constexpr):
    """The gradient w.r.t. clamp(x) as one w.r.t. x: zero where |x| > c, kept at |x| == c."""
    if BOUNDED:
        gx = tl.where(tl.abs(x) <= bound, gx, 0.0)
    return gx


@triton.jit
def _chunk_offsets(BLOCK_N: tl.constexpr, VEC: tl.constexpr):
    """Offsets of a chunk as a (BLOCK_N / VEC, VEC) tile: VEC contiguous elements (16 bytes) per
    thread, so sums over axis 1 stay inside a thread and the per-lane accumulators are VEC times
    smaller; the registers saved let more of the row be in flight."""
    return tl.arange(0, BLOCK_N // VEC)[:, None] * VEC + tl.arange(0, VEC)[None, :]


@triton.jit
def _chunked_power_sums(
    x_row, N, rs, bound, ORDER: tl.constexpr, BLOCK_N: tl.constexpr, VEC: tl.constexpr, STAGES: tl.constexpr,
    BOUNDED: tl.constexpr,
):
    """_power_sums of u = x * rs over a row read in chunks (per-lane accumulators, one reduction)."""
    offs = _chunk_offsets(BLOCK_N, VEC)
    acc1 = tl.zeros([BLOCK_N // VEC], tl.float32)
    acc2 = tl.zeros([BLOCK_N // VEC], tl.float32)
    acc3 = tl.zeros([BLOCK_N // VEC], tl.float32)
    acc4 = tl.zeros([BLOCK_N // VEC], tl.float32)
    for start in tl.range(0, N, BLOCK_N, num_stages=STAGES):
        mask = start + offs < N
        x = tl.load(x_row + start + offs, mask=mask, other=0.0, eviction_policy="evict_last").to(tl.float32)
        u = _bounded(x, bound, BOUNDED) * rs
        u2 = u * u
        acc1 += tl.sum(u2, axis=1)
        if ORDER >= 2:
            acc2 += tl.sum(u2 * u2, axis=1)
        if ORDER >= 3:
            acc3 += tl.sum(u2 * u2 * u2, axis=1)
        if ORDER >= 4:
            acc4 += tl.sum((u2 * u2) * (u2 * u2), axis=1)
    return tl.sum(acc1, axis=0), tl.sum(acc2, axis=0), tl.sum(acc3, axis=0), tl.sum(acc4, axis=0)


@triton.jit
def _chunked_abs_max(x_row, N, bound, BLOCK_N: tl.constexpr, BOUNDED: tl.constexpr):
    offs = tl.arange(0, BLOCK_N)
    mx = tl.zeros([BLOCK_N], tl.float32)
    for start in range(0, N, BLOCK_N):
        xc = _bounded(tl.load(x_row + start + offs, mask=start + offs < N, other=0.0).to(tl.float32), bound, BOUNDED)
        mx = tl.maximum(mx, tl.abs(xc))
    return tl.max(mx, axis=0)


@triton.jit
def _fwd_row(
    row, x_ptr, up_ptr, y_ptr, inv_ptr, w_ptr, b_ptr, N, eps, bound,
    ORDER: tl.constexpr, BLOCK_N: tl.constexpr, SINGLE: tl.constexpr, GATED: tl.constexpr, STAGES: tl.constexpr,
    VEC: tl.constexpr, BOUNDED: tl.constexpr,
):
    # Statistics S_i = sum (x * rs)^(2i) with rs = 1 / s, s = max(1, max|x|) as in the reference.
    x_row = x_ptr + row * N
    offs = tl.arange(0, BLOCK_N)
    if SINGLE:
        # Whole row in registers: one read of x; the max costs one more reduction, no memory.
        mask = offs < N
        x = _bounded(tl.load(x_row + offs, mask=mask, other=0.0).to(tl.float32), bound, BOUNDED)
        rs = 1.0 / tl.maximum(tl.max(tl.abs(x), axis=0), 1.0)
        u = x * rs
        s1, s2, s3, s4 = _power_sums(u * u, ORDER)
    else:
        # Statistics pass over the row in chunks; the output pass below re-reads it (mostly from L2).
        # A max would need its own pass (or a rescale per chunk), so the sums are first taken with
        # rs = 1: the same value whenever nothing overflows (s cancels); only if the highest power
        # overflowed fp32 (e.g. r = 3 and max|x| > ~1e5) are they recomputed with the max.
        rs = tl.full([], 1.0, tl.float32)
        s1, s2, s3, s4 = _chunked_power_sums(x_row, N, rs, bound, ORDER, BLOCK_N, VEC, STAGES, BOUNDED)
        if _highest(s1, s2, s3, s4, ORDER) > 3.0e38:
            rs = 1.0 / _chunked_abs_max(x_row, N, bound, BLOCK_N, BOUNDED)
            s1, s2, s3, s4 = _chunked_power_sums(x_row, N, rs, bound, ORDER, BLOCK_N, VEC, STAGES, BOUNDED)

    # t_i = inv_i / rs^i; rs^(2i) and rs^i by repeated products (they may underflow to 0: fine).
    inv_n = 1.0 / N
    rs2 = rs * rs
    inv_row = inv_ptr + row * ORDER
    t1 = tl.rsqrt(s1 * inv_n + eps * rs2)
    tl.store(inv_row, t1 * rs)
    t2 = 0.0
    t3 = 0.0
    t4 = 0.0
    if ORDER >= 2:
        t2 = tl.rsqrt(s2 * inv_n + eps * (rs2 * rs2))
        tl.store(inv_row + 1, t2 * rs * rs)
    if ORDER >= 3:
        t3 = tl.rsqrt(s3 * inv_n + eps * (rs2 * rs2 * rs2))
        tl.store(inv_row + 2, t3 * rs * rs * rs)
    if ORDER >= 4:
        t4 = tl.rsqrt(s4 * inv_n + eps * ((rs2 * rs2) * (rs2 * rs2)))
        tl.store(inv_row + 3, t4 * rs * rs * rs * rs)

    b, a1, a2, a3, a4 = _load_coefficients(w_ptr, b_ptr, ORDER)
    c1 = a1 * t1
    c2 = a2 * t2
    c3 = a3 * t3
    c4 = a4 * t4
    y_row = y_ptr + row * N
    if SINGLE:
        y = horner(u, b, c1, c2, c3, c4, ORDER)
        if GATED:
            y = y * tl.load(up_ptr + row * N + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_row + offs, y.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        # Output pass: re-reads the row, newest chunks first: the statistics pass has just read
        # them, so they are the likeliest still in L2.
        last = ((N - 1) // BLOCK_N) * BLOCK_N
        for back in tl.range(0, N, BLOCK_N, num_stages=STAGES):
            start = last - back
            mask = start + offs < N
            xc = tl.load(x_row + start + offs, mask=mask, other=0.0, eviction_policy="evict_first").to(tl.float32)
            xc = _bounded(xc, bound, BOUNDED)
            y = horner(xc * rs, b, c1, c2, c3, c4, ORDER)
            if GATED:
                y = y * tl.load(up_ptr + row * N + start + offs, mask=mask, other=0.0).to(tl.float32)
            tl.store(y_row + start + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _grad_terms(g, x, up, k, b, a1, a2, a3, a4, r2, r3, r4, ORDER: tl.constexpr, GATED: tl.constexpr):
    """(g', v, PolyNorm(x) or 0) for one block: g' = g * up when gated, v = x * inv_1."""
    v = x * k
    p = 0.0
    if GATED:
        p = horner(v, b, a1, a2 * r2, a3 * r3, a4 * r4, ORDER)
        g = g * up
    return g, v, p


@triton.jit
def _bwd_row(
    row, gy_ptr, x_ptr, up_ptr, inv_ptr, w_ptr, b_ptr, gx_ptr, gup_ptr, part_ptr, N, bound,
    ORDER: tl.constexpr, BLOCK_N: tl.constexpr, SINGLE: tl.constexpr, GATED: tl.constexpr, STAGES: tl.constexpr,
    VEC: tl.constexpr, BOUNDED: tl.constexpr,
):
    base = row * N
    offs = tl.arange(0, BLOCK_N)
    inv_row = inv_ptr + row * ORDER
    k = tl.load(inv_row)  # inv_1
    # rho_i = inv_i / inv_1^i by repeated division: no intermediate underflows.
    r2 = 0.0
    r3 = 0.0
    r4 = 0.0
    if ORDER >= 2:
        r2 = tl.load(inv_row + 1) / k / k
    if ORDER >= 3:
        r3 = tl.load(inv_row + 2) / k / k / k
    if ORDER >= 4:
        r4 = tl.load(inv_row + 3) / k / k / k / k
    b, a1, a2, a3, a4 = _load_coefficients(w_ptr, b_ptr, ORDER)

    # Pass 1: D_i = sum_j g'_j v_j^i and G = sum_j g'_j.
    if SINGLE:
        mask = offs < N
        g0 = tl.load(gy_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
        x_in = tl.load(x_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
        up = 0.0
        if GATED:
            up = tl.load(up_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
        g, v, p = _grad_terms(g0, _bounded(x_in, bound, BOUNDED), up, k, b, a1, a2, a3, a4, r2, r3, r4, ORDER, GATED)
        gsum = tl.sum(g, axis=0)
        gv = g * v
        dsum1 = tl.sum(gv, axis=0)
        dsum2 = 0.0
        dsum3 = 0.0
        dsum4 = 0.0
        if ORDER >= 2:
            gv = gv * v
            dsum2 = tl.sum(gv, axis=0)
        if ORDER >= 3:
            gv = gv * v
            dsum3 = tl.sum(gv, axis=0)
        if ORDER >= 4:
            gv = gv * v
            dsum4 = tl.sum(gv, axis=0)
    else:
        offs2 = _chunk_offsets(BLOCK_N, VEC)
        acc0 = tl.zeros([BLOCK_N // VEC], tl.float32)
        acc1 = tl.zeros([BLOCK_N // VEC], tl.float32)
        acc2 = tl.zeros([BLOCK_N // VEC], tl.float32)
        acc3 = tl.zeros([BLOCK_N // VEC], tl.float32)
        acc4 = tl.zeros([BLOCK_N // VEC], tl.float32)
        for start in tl.range(0, N, BLOCK_N, num_stages=STAGES):
            mask2 = start + offs2 < N
            g = tl.load(gy_ptr + base + start + offs2, mask=mask2, other=0.0, eviction_policy="evict_last")
            x = tl.load(x_ptr + base + start + offs2, mask=mask2, other=0.0, eviction_policy="evict_last")
            up = 0.0
            if GATED:
                up = tl.load(up_ptr + base + start + offs2, mask=mask2, other=0.0, eviction_policy="evict_last")
                up = up.to(tl.float32)
            g, v, p = _grad_terms(
                g.to(tl.float32), _bounded(x.to(tl.float32), bound, BOUNDED), up, k, b, a1, a2, a3, a4, r2, r3, r4, ORDER, GATED
            )
            acc0 += tl.sum(g, axis=1)
            gv = g * v
            acc1 += tl.sum(gv, axis=1)
            if ORDER >= 2:
                gv = gv * v
                acc2 += tl.sum(gv, axis=1)
            if ORDER >= 3:
                gv = gv * v
                acc3 += tl.sum(gv, axis=1)
            if ORDER >= 4:
                gv = gv * v
                acc4 += tl.sum(gv, axis=1)
        gsum = tl.sum(acc0, axis=0)
        dsum1 = tl.sum(acc1, axis=0)
        dsum2 = tl.sum(acc2, axis=0)
        dsum3 = tl.sum(acc3, axis=0)
        dsum4 = tl.sum(acc4, axis=0)

    # Per-row weight/bias gradients (summed over rows by the launcher): d_i = rho_i * D_i.
    part_row = part_ptr + row * (ORDER + 1)
    tl.store(part_row + ORDER, gsum)
    tl.store(part_row + ORDER - 1, dsum1)
    if ORDER >= 2:
        tl.store(part_row + ORDER - 2, r2 * dsum2)
    if ORDER >= 3:
        tl.store(part_row + ORDER - 3, r3 * dsum3)
    if ORDER >= 4:
        tl.store(part_row + ORDER - 4, r4 * dsum4)

    # dx = inv_1 * (g' * P'(v) - v * sum_i e_i (v^2)^(i-1)), e_i = i a_i rho_i^2 d_i / N.
    inv_n = 1.0 / N
    e1 = a1 * dsum1 * inv_n
    e2 = 2.0 * a2 * r2 * r2 * r2 * dsum2 * inv_n
    e3 = 3.0 * a3 * r3 * r3 * r3 * dsum3 * inv_n
    e4 = 4.0 * a4 * r4 * r4 * r4 * dsum4 * inv_n
    p1 = 2.0 * a2 * r2
    p2 = 3.0 * a3 * r3
    p3 = 4.0 * a4 * r4
    if SINGLE:
        dpoly = horner(v, a1, p1, p2, p3, 0.0, ORDER - 1)
        gx = k * (g * dpoly - v * horner(v * v, e1, e2, e3, e4, 0.0, ORDER - 1))
        gx = _inside_bound(gx, x_in, bound, BOUNDED)
        tl.store(gx_ptr + base + offs, gx.to(gx_ptr.dtype.element_ty), mask=mask)
        if GATED:
            tl.store(gup_ptr + base + offs, (g0 * p).to(gup_ptr.dtype.element_ty), mask=mask)
    else:
        # Newest chunks first: the stats pass just read them, so they are the likeliest still in L2.
        last = ((N - 1) // BLOCK_N) * BLOCK_N
        for back in tl.range(0, N, BLOCK_N, num_stages=STAGES):
            start = last - back
            mask = start + offs < N
            g0 = tl.load(gy_ptr + base + start + offs, mask=mask, other=0.0, eviction_policy="evict_first")
            x = tl.load(x_ptr + base + start + offs, mask=mask, other=0.0, eviction_policy="evict_first")
            g0 = g0.to(tl.float32)
            up = 0.0
            if GATED:
                up = tl.load(up_ptr + base + start + offs, mask=mask, other=0.0, eviction_policy="evict_first")
                up = up.to(tl.float32)
            x = x.to(tl.float32)
            g, v, p = _grad_terms(g0, _bounded(x, bound, BOUNDED), up, k, b, a1, a2, a3, a4, r2, r3, r4, ORDER, GATED)
            dpoly = horner(v, a1, p1, p2, p3, 0.0, ORDER - 1)
            gx = _inside_bound(k * (g * dpoly - v * horner(v * v, e1, e2, e3, e4, 0.0, ORDER - 1)), x, bound, BOUNDED)
            tl.store(gx_ptr + base + start + offs, gx.to(gx_ptr.dtype.element_ty), mask=mask)
            if GATED:
                tl.store(gup_ptr + base + start + offs, (g0 * p).to(gup_ptr.dtype.element_ty), mask=mask)


# Each program takes rows pid, pid + P, pid + 2P, ... of the M rows (P programs). With one
# program per row (P = M) this is the classic row kernel; for long rows the launcher caps P
# near the SM count, so that only P rows are in flight: a chunked row is read twice (stats,
# then output), and the second read hits L2 only while P * (row bytes) fits in it.
@triton.jit
def _row_coefficients(row, w_ptr, b_ptr, e_ptr, ORDER: tl.constexpr, GROUPED: tl.constexpr):
    """Pointers to the coefficients of ``row``: shared, or those of its expert (weight (E, r), bias (E, 1))."""
    if GROUPED:
        e = tl.load(e_ptr + row)
        return w_ptr + e * ORDER, b_ptr + e
    return w_ptr, b_ptr


@triton.jit
def _fwd_kernel(
    x_ptr, up_ptr, y_ptr, inv_ptr, w_ptr, b_ptr, e_ptr, M, N, eps, bound,
    ORDER: tl.constexpr, BLOCK_N: tl.constexpr, SINGLE: tl.constexpr, GATED: tl.constexpr, STAGES: tl.constexpr,
    VEC: tl.constexpr, GROUPED: tl.constexpr, BOUNDED: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)  # int64: row * N may exceed 2^31
    while row < M:
        w_row, b_row = _row_coefficients(row, w_ptr, b_ptr, e_ptr, ORDER, GROUPED)
        _fwd_row(
            row, x_ptr, up_ptr, y_ptr, inv_ptr, w_row, b_row, N, eps, bound,
            ORDER, BLOCK_N, SINGLE, GATED, STAGES, VEC, BOUNDED,
        )
        row += tl.num_programs(0)


@triton.jit
def _bwd_kernel(
    gy_ptr, x_ptr, up_ptr, inv_ptr, w_ptr, b_ptr, e_ptr, gx_ptr, gup_ptr, part_ptr, M, N, bound,
    ORDER: tl.constexpr, BLOCK_N: tl.constexpr, SINGLE: tl.constexpr, GATED: tl.constexpr, STAGES: tl.constexpr,
    VEC: tl.constexpr, GROUPED: tl.constexpr, BOUNDED: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)  # int64: row * N may exceed 2^31
    while row < M:
        w_row, b_row = _row_coefficients(row, w_ptr, b_ptr, e_ptr, ORDER, GROUPED)
        _bwd_row(
            row, gy_ptr, x_ptr, up_ptr, inv_ptr, w_row, b_row, gx_ptr, gup_ptr, part_ptr, N, bound,
            ORDER, BLOCK_N, SINGLE, GATED, STAGES, VEC, BOUNDED,
        )
        row += tl.num_programs(0)


def _row_shape(x, name):
    if x.dim() != 2:
        raise RuntimeError(f"{name} expects a 2-D (rows, features) tensor, got shape {tuple(x.shape)}")
    return x.shape


def _bound_argument(input_bound) -> float:
    """The kernels' float ``bound`` (unread without BOUNDED: 0.0 then, never inf)."""
    return float(input_bound) if math.isfinite(input_bound) else 0.0


def _forward(x, up, weight, bias, eps, block_size, max_programs, name, cfg=None, row_expert=None, traceable=False,
             input_bound=math.inf):
    check_launch(name, x, weight, bias, *([] if up is None else [up]), *([] if row_expert is None else [row_expert]))
    m, n = _row_shape(x, name)
    order = weight.shape[-1]
    y = torch.empty_like(x)
    inv_rms = torch.empty((m, order), dtype=torch.float32, device=x.device)
    if m == 0 or n == 0:
        return y, inv_rms.fill_(float("nan") if n == 0 else 0.0)
    if cfg is None:  # int(n): the config is cached per length, and a traced length (SymInt) is unhashable
        cfg = row_launch_config(int(n), x.element_size(), "fwd" if up is None else "gated_fwd", block_size)
    if traceable:  # every pointer the variant does not use gets its own tensor (_unused_pointer)
        kernel = traceable_kernel(_fwd_kernel)
        launch, unused_up, unused_e = wrap_triton(kernel), _unused_pointer(x), _unused_pointer(x)
    else:
        launch, unused_up, unused_e = _fwd_kernel, x, x
    launch[(grid_programs(m, cfg, x.device, max_programs),)](
        x, unused_up if up is None else up, y, inv_rms, weight, bias, unused_e if row_expert is None else row_expert,
        m, n, float(eps), _bound_argument(input_bound),
        ORDER=order, BLOCK_N=cfg.block, SINGLE=cfg.single, GATED=up is not None, STAGES=cfg.stages,
        VEC=min(cfg.block, 16 // x.element_size()), GROUPED=row_expert is not None,
        BOUNDED=math.isfinite(input_bound), num_warps=cfg.warps,
    )
    return y, inv_rms


def _unused_pointer(like):
    """A tensor for a pointer argument the kernel variant never reads or writes, in a traced launch.

    Eager launches pass another argument there; a traced launch must not pass one tensor twice, because
    where the compiler cannot tell which arguments a kernel writes (without a GPU target, so under the
    interpreter, always) it copies each argument separately and takes each output from its own copy
    (grad_x as both gx_ptr and the unused gup_ptr gave wrong gradients). One element of ``like``'s
    dtype, from the same allocator, keeps the kernel's signature (pointer dtype, 16-byte alignment)
    that of the eager launch, so it compiles to the same kernel.
    """
    return like.new_empty(1)


def _backward(grad_y, x, up, weight, bias, inv_rms, block_size, max_programs, name, cfg=None, row_expert=None,
              traceable=False, input_bound=math.inf):
    check_launch(name, x, grad_y, inv_rms, weight, *([] if up is None else [up, bias]),
                 *([] if row_expert is None else [bias, row_expert]))
    m, n = _row_shape(x, name)
    order = weight.shape[-1]
    grad_x = torch.empty_like(x)
    grad_up = None if up is None else torch.empty_like(up)
    partials = torch.empty((m, order + 1), dtype=torch.float32, device=x.device)  # per row: grad_w, grad_b
    if n == 0:
        partials.zero_()
    elif m > 0:
        if cfg is None:  # int(n) as in _forward
            cfg = row_launch_config(int(n), x.element_size(), "bwd" if up is None else "gated_bwd", block_size)
        if traceable:  # every pointer the variant does not use gets its own tensor (_unused_pointer)
            kernel = traceable_kernel(_bwd_kernel)
            launch = wrap_triton(kernel)
            unused_up, unused_b, unused_e, unused_gup = (_unused_pointer(x), _unused_pointer(weight),
                                                         _unused_pointer(x), _unused_pointer(grad_x))
        else:
            launch, unused_up, unused_b, unused_e, unused_gup = _bwd_kernel, x, weight, x, grad_x
        launch[(grid_programs(m, cfg, x.device, max_programs),)](
            grad_y.contiguous(), x, unused_up if up is None else up, inv_rms.contiguous(), weight,
            unused_b if bias is None else bias, unused_e if row_expert is None else row_expert,
            grad_x, unused_gup if up is None else grad_up, partials, m, n, _bound_argument(input_bound),
            ORDER=order, BLOCK_N=cfg.block, SINGLE=cfg.single, GATED=up is not None, STAGES=cfg.stages,
            VEC=min(cfg.block, 16 // x.element_size()), GROUPED=row_expert is not None,
            BOUNDED=math.isfinite(input_bound), num_warps=cfg.warps,
        )
    if row_expert is not None:  # per expert: (E, r + 1) sums of its rows' partials
        sums = partials.new_zeros((weight.shape[0], order + 1)).index_add_(0, row_expert, partials)
        return grad_x, grad_up, sums[:, :order], sums[:, order:]
    sums = partials.sum(dim=0)  # deterministic: fixed-order reduction over rows
    return grad_x, grad_up, sums[:order].reshape(weight.shape), sums[order:]


def poly_norm_forward_triton(x, weight, bias, eps=1e-6, input_bound=math.inf, *, block_size=None, max_programs=None,
                             traceable=False):
    """PolyNorm forward on (M, N) ``x``: returns (y in x's dtype, inv_rms (M, r) fp32).

    ``block_size`` (a power of two) forces the block; rows longer than it take the chunked path.
    ``max_programs`` caps the grid (each program then loops over rows); by default the
    launcher decides (see ``triton_utils.grid_programs``). ``traceable``: launch through
    ``torch.library.wrap_triton`` (the body of the op's ``triton_op``), so a traced graph holds the
    kernel itself; eager calls launch it directly (the traced launch costs host time). Every
    launcher below takes the same keyword. ``input_bound``: x is clamped to [-c, c] (inf: no
    bound); every launcher takes it, the backward ones after inv_rms.
    """
    return _forward(x, None, weight, bias, eps, block_size, max_programs, "poly_norm_forward_triton",
                    traceable=traceable, input_bound=input_bound)


def poly_norm_backward_triton(grad_y, x, weight, inv_rms, input_bound=math.inf, *, block_size=None, max_programs=None,
                              traceable=False):
    """PolyNorm backward: returns (grad_x in x's dtype, grad_weight fp32 like weight, grad_bias (1,) fp32)."""
    grad_x, _, grad_w, grad_b = _backward(
        grad_y, x, None, weight, None, inv_rms, block_size, max_programs, "poly_norm_backward_triton",
        traceable=traceable, input_bound=input_bound,
    )
    return grad_x, grad_w, grad_b


def gated_poly_norm_forward_triton(gate, up, weight, bias, eps=1e-6, input_bound=math.inf, *, block_size=None,
                                   max_programs=None, traceable=False):
    """Gated PolyNorm forward, PolyNorm(gate) * up: returns (y in gate's dtype, inv_rms of gate (M, r) fp32)."""
    return _forward(
        gate, up.contiguous(), weight, bias, eps, block_size, max_programs, "gated_poly_norm_forward_triton",
        traceable=traceable, input_bound=input_bound,
    )


def gated_poly_norm_backward_triton(grad_y, gate, up, weight, bias, inv_rms, input_bound=math.inf, *, block_size=None,
                                    max_programs=None, traceable=False):
    """Gated PolyNorm backward: returns (grad_gate, grad_up, grad_weight fp32, grad_bias (1,) fp32)."""
    return _backward(
        grad_y, gate, up.contiguous(), weight, bias, inv_rms, block_size, max_programs,
        "gated_poly_norm_backward_triton", traceable=traceable, input_bound=input_bound,
    )


def grouped_poly_norm_forward_triton(x, weight, bias, row_expert, eps=1e-6, input_bound=math.inf, *, block_size=None,
                                     max_programs=None, traceable=False):
    """Grouped PolyNorm forward: row m uses expert ``row_expert[m]``'s coefficients (weight (E, r), bias (E, 1))."""
    return _forward(x, None, weight, bias, eps, block_size, max_programs, "grouped_poly_norm_forward_triton",
                    row_expert=row_expert, traceable=traceable, input_bound=input_bound)


def grouped_poly_norm_backward_triton(grad_y, x, weight, bias, row_expert, inv_rms, input_bound=math.inf, *,
                                      block_size=None, max_programs=None, traceable=False):
    """Grouped PolyNorm backward: (grad_x, grad_weight (E, r) fp32, grad_bias (E, 1) fp32)."""
    grad_x, _, grad_w, grad_b = _backward(grad_y, x, None, weight, bias, inv_rms, block_size, max_programs,
                                          "grouped_poly_norm_backward_triton", row_expert=row_expert, traceable=traceable,
                                          input_bound=input_bound)
    return grad_x, grad_w, grad_b


def grouped_gated_poly_norm_forward_triton(gate, up, weight, bias, row_expert, eps=1e-6, input_bound=math.inf, *,
                                           block_size=None, max_programs=None, traceable=False):
    """Grouped gated PolyNorm forward, PolyNorm_e(gate) * up with row m's expert e = ``row_expert[m]``."""
    return _forward(gate, up.contiguous(), weight, bias, eps, block_size, max_programs,
                    "grouped_gated_poly_norm_forward_triton", row_expert=row_expert, traceable=traceable,
                    input_bound=input_bound)


def grouped_gated_poly_norm_backward_triton(grad_y, gate, up, weight, bias, row_expert, inv_rms, input_bound=math.inf,
                                            *, block_size=None, max_programs=None, traceable=False):
    """Grouped gated PolyNorm backward: (grad_gate, grad_up, grad_weight (E, r) fp32, grad_bias (E, 1) fp32)."""
    return _backward(grad_y, gate, up.contiguous(), weight, bias, inv_rms, block_size, max_programs,
                     "grouped_gated_poly_norm_backward_triton", row_expert=row_expert, traceable=traceable,
                     input_bound=input_bound)
