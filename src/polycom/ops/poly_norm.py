"""The PolyNorm op: closed-form forward and backward in PyTorch ops, and its backends.

These closed forms are the ``eager`` kernels, and compiled by Inductor into fused C++ loops
they are the ``compiled`` ones; the ``triton`` kernels (``triton_poly_norm.py``, same math)
are declared in ``KERNELS``. All tensors are 2-D (rows M, features N) and contiguous;
statistics and coefficient gradients are float32 (float64 for float64 inputs); outputs and
input gradients take the input's dtype. The reference formula is
``polycom.activations.polynorm.poly_norm_reference``.

PolyNorm forward, as ``reference.normalized_powers``: with a_i = weight[r-i], the row
scale s = max(1, max|x|) and u = x / s (|u| <= 1, so no power overflows),

    t_i = rsqrt(mean(u^(2i)) + eps * s^(-2i)),   n_i = u^i * t_i,   y = a_0 + sum_i a_i n_i,

and inv_i = t_i * s^(-i) = 1/sqrt(mean(x^(2i)) + eps) is saved for backward: exact for
every finite input (inv_i underflows to 0 only when max|x|^i > ~1e38).

PolyNorm backward. With upstream gradient g and d_i = sum_row(g * n_i):

    dL/dx_j = sum_i a_i * i * x_j^(i-1) * inv_i * (g_j - (d_i / N) * n_{i,j})
    dL/da_i = sum_rows d_i,        dL/da_0 = sum g

(from d inv_i / d x_j = -inv_i^3 * i * x_j^(2i-1) / N). Evaluated, as in the Triton
kernel, with the bounded v = x * inv_1 (|v| <= sqrt(N)) and rho_i = inv_i / inv_1^i
(<= 1, by repeated division so nothing underflows on the way): n_i = rho_i v^i and
x^(i-1) inv_i = inv_1 rho_i v^(i-1), so

    dL/dx_j = inv_1 * sum_i i a_i rho_i v_j^(i-1) * (g_j - (d_i / N) * n_{i,j}).

No term grows like inv_i^3 or x^(2i-1): the gradient is exact while every inv_i is a
normal float32 (max|x|^r < ~1e37) and finite beyond (the terms whose inv_i underflowed
vanish). Only x and the r values inv_i per row are saved.

Input bound c (Motif's bounded PolyNorm, ``activations/polynorm_bounds.py``): the forward
computes all of the above on clamp(x, -c, c), and the backward's dL/dx is the formula above
at the clamped input times the indicator -c <= x <= c (zero outside). The indicator is
inclusive at the bounds, as torch.clamp's own gradient is (``x.clamp(-c, c)`` passes the
gradient where min <= x <= max; at x == c it is 1). The clamp happens in the compute dtype,
inside the kernels' loops: no extra pass over x. ``NO_BOUND`` (inf) is no clamp: a Python
branch, so the unbounded op's code is unchanged.
"""

from __future__ import annotations

import math

import torch

from ..reference import compute_dtype
from .fused_op import OpKernels

__all__ = ["poly_norm_forward_parts", "poly_norm_forward", "poly_norm_backward", "poly_norm_row_grads", "row_sums",
           "input_grad", "bounded_input", "inside_bound", "KERNELS", "NO_BOUND", "TRITON_MAX_ORDER"]

# The Triton kernels hold the coefficients a_1..a_4 in registers (triton_utils); a higher
# order would silently drop terms, so such calls never reach them.
TRITON_MAX_ORDER = 4

NO_BOUND = math.inf  # the input_bound of an unbounded PolyNorm (a float: the library schema's type)


def bounded_input(xf: torch.Tensor, input_bound: float) -> torch.Tensor:
    """clamp(x, -c, c), or x itself with no bound (no op traced)."""
    return xf if input_bound == NO_BOUND else xf.clamp(-input_bound, input_bound)


def inside_bound(grad_x: torch.Tensor, xf: torch.Tensor, input_bound: float) -> torch.Tensor:
    """The gradient w.r.t. the clamped input as one w.r.t. x: zero where |x| > c, kept at |x| == c
    (torch.clamp's gradient mask, min <= x <= max, is inclusive)."""
    return grad_x if input_bound == NO_BOUND else torch.where(xf.abs() <= input_bound, grad_x, 0.0)


def _scaled_stats(xf: torch.Tensor, order: int, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(u, t, inv_rms) of the forward: u = x / max(1, max|x|) per row, t and inv_rms (M, r)."""
    s_inv = 1.0 / xf.abs().amax(-1, keepdim=True).clamp(min=1.0)  # (M, 1)
    u = xf * s_inv  # a product, not a division, per element: measurably faster on CPU
    u2 = u.square()
    t_cols, s_cols = [], []
    u2i, s_inv_i = u2, s_inv  # u^(2i), s^(-i) for i = 1
    for i in range(1, order + 1):
        if i > 1:
            u2i, s_inv_i = u2i * u2, s_inv_i * s_inv
        t_cols.append(torch.rsqrt(u2i.mean(-1, keepdim=True) + eps * s_inv_i * s_inv_i))  # (M, 1)
        s_cols.append(s_inv_i)
    t = torch.cat(t_cols, dim=-1)  # (M, r)
    return u, t, t * torch.cat(s_cols, dim=-1)


def _scaled_combine(u: torch.Tensor, t: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """a_0 + sum_i a_i t_i u^i by Horner's rule in u, with per-row coefficients c_i = a_i t_i.

    ``weight`` (r,) and ``bias`` (1,), or one row of each per row of u: (M, r) and (M, 1)."""
    r = t.shape[-1]
    c = t * weight.to(t.dtype).flip(-1)  # (M, r): column i-1 holds a_i t_i (weight[..., 0] is a_r)
    y = c[:, r - 1 : r]
    for i in range(r - 1, 0, -1):
        y = y * u + c[:, i - 1 : i]
    return y * u + bias.to(t.dtype)


def _saved_powers(xf: torch.Tensor, inv_rms: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """(v, [rho_i], [n_i]) from the saved inv_rms: v = x * inv_1, rho_i = inv_i / inv_1^i, n_i = rho_i v^i."""
    k = inv_rms[:, :1]  # inv_1, (M, 1)
    v = xf * k
    rho, normed, v_i = [1.0], [v], v  # rho_1 = 1, n_1 = v
    for i in range(2, inv_rms.shape[-1] + 1):
        ratio = inv_rms[:, i - 1 : i]
        for _ in range(i):
            ratio = ratio / k
        v_i = v_i * v
        rho.append(ratio)
        normed.append(ratio * v_i)
    return v, rho, normed


def _coefficient(w: torch.Tensor, i: int) -> torch.Tensor:
    """a_i of ``w`` in the weight layout, (1,) for shared coefficients or (M, 1) for one row each."""
    return w[..., w.shape[-1] - i, None]


def _combine(terms: list[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    w = weight.to(terms[0].dtype)
    y = bias.to(terms[0].dtype) + _coefficient(w, 1) * terms[0]
    for i in range(2, len(terms) + 1):
        y = y + _coefficient(w, i) * terms[i - 1]
    return y


def _up(t: torch.Tensor) -> torch.Tensor:
    return t.to(compute_dtype(t.dtype))


def poly_norm_forward_parts(x, weight, bias, eps, input_bound):
    """(y, inv_rms, t): the forward and its per-row scales t_i (see ``KERNELS``: compiled with t
    as an output, Inductor reads t from memory instead of recomputing r rsqrt per element)."""
    u, t, inv_rms = _scaled_stats(bounded_input(_up(x), input_bound), weight.shape[-1], eps)
    return _scaled_combine(u, t, weight, bias).to(x.dtype), inv_rms, t


def poly_norm_forward(x, weight, bias, eps, input_bound):
    return poly_norm_forward_parts(x, weight, bias, eps, input_bound)[:2]


def poly_norm_row_grads(gf, xf, weight, inv_rms):
    """(grad_x, dL/dweight per row (M, r) in the weight layout, dL/dbias per row (M, 1)) for float32 g, x.

    ``weight`` (r,), or (M, r) with one row of coefficients per row of x."""
    powers = _saved_powers(xf, inv_rms)
    d = row_sums(gf, powers[2])
    grad_x = input_grad(gf, weight, powers, inv_rms, d, xf.shape[-1])
    # Bias gradient as row sums: Inductor then computes it in the same loop over each row as
    # the d_i, where a sum over the whole tensor costs a separate pass over g (CPU,
    # 4096 x 4096 fp32: 30.5 ms instead of 33.0 ms for the backward).
    return grad_x, torch.cat(d[::-1], dim=-1), gf.sum(-1, keepdim=True)


def row_sums(gf, normed):
    """[d_1, ..., d_r], d_i = sum_row(g * n_i), each (M, 1): the backward's reductions over a row."""
    return [(gf * n_i).sum(-1, keepdim=True) for n_i in normed]


def input_grad(gf, weight, powers, inv_rms, d, n):
    """dL/dx from the row sums ``d`` = [d_1 .. d_r] over a row of ``n`` features.

    ``powers``: ``_saved_powers(x, inv_rms)``. Apart from ``d`` the sum runs per element, so a
    row split across ranks needs only d (and n, the whole row's width) from the others."""
    v, rho, normed = powers
    w = weight.to(gf.dtype)
    grad_x = torch.zeros_like(gf)  # dL/dx / inv_1, accumulated over i
    v_below = torch.ones_like(gf)  # v^(i-1)
    for i in range(1, len(normed) + 1):
        inner = gf - (d[i - 1] / n) * normed[i - 1]
        grad_x = grad_x + (_coefficient(w, i) * i) * rho[i - 1] * v_below * inner
        v_below = v_below * v
    return grad_x * inv_rms[:, :1]


def poly_norm_backward(grad_y, x, weight, bias, inv_rms, input_bound):
    xf = _up(x)
    grad_x, d, g_rows = poly_norm_row_grads(_up(grad_y), bounded_input(xf, input_bound), weight, inv_rms)
    return inside_bound(grad_x, xf, input_bound).to(x.dtype), d.sum(0), g_rows.sum().reshape(1)


KERNELS = OpKernels(
    forward=poly_norm_forward,
    backward=poly_norm_backward,
    saves_stats=True,
    constants=("eps", "input_bound"),
    backward_constants=("input_bound",),
    # Compiled with the per-row scales t as a third output: a graph output is materialised, and
    # Inductor then reads t from memory in the output loop instead of recomputing r rsqrt per
    # element (measured 10% slower on CPU).
    compile_forward=poly_norm_forward_parts,
    keep=2,
    triton="polycom.ops.triton_ops",
    triton_max_order=TRITON_MAX_ORDER,
)
