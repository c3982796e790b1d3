r"""Tropical activations: a max-plus polynomial, and a difference of two (a tropical rational function).

Khalfaoui-Hassani & Kesselheim 2025, "Polynomial, trigonometric, and tropical
activations" (arXiv:2502.01247): the tropicalisation of sum_k a_k x^k replaces
(+, *) by (max, +), so x^k becomes k x and

    P(x) = max_{k=0..n} (a_k + k x)                    (``tropical``, convex, piecewise linear)
    R(x) = P(x) - Q(x),  Q(x) = max_{k=0..m} (c_k + k x)   (``tropical_rational``)

with learnable a (and c). P has slope k between the breakpoints b_k = a_{k-1} - a_k and
b_{k+1} (when every piece is active: b_1 < ... < b_n).

**Variance-preserving initialisation** (E[F^2] = E[F'^2] = 1 for x ~ N(0, 1)). F is
piecewise linear, so both moments are closed form: on a piece alpha + beta x over
(l, u), with Phi, phi the normal CDF and density,

    E[(alpha + beta x) 1_(l,u)]   = alpha dPhi + beta (phi(l) - phi(u))
    E[(alpha + beta x)^2 1_(l,u)] = alpha^2 dPhi + 2 alpha beta (phi(l) - phi(u)) + beta^2 (dPhi + l phi(l) - u phi(u))
    E[F'^2]                       = sum_pieces beta^2 dPhi,     dPhi = Phi(u) - Phi(l).

Our parametrisation of the init (the paper's two constraints; our shape): unit-spaced
breakpoints b_k = s + (k - 1). ``tropical``: the offset s is solved (bisection)
for E[P'^2] = 1 (it falls from n^2 to 0 as s grows), then a constant added to
every a_k for E[P^2] = 1 (a shift t with t^2 + 2 t E[G] + E[G^2] = 1, the larger
root). ``tropical_rational``: Q gets the breakpoints s + n + (k - 1), so R's slope
climbs 0, 1, .., n and falls back to 0 (a smooth-step-like ramp), s solved the same
way. Slopes are integers, so the init needs n >= 2 (n = 1 gives E[F'^2] < 1 for any
breakpoint); default degree 3 for ``tropical`` and 2 + 2 for ``tropical_rational``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..ops import dispatch
from ..ops.fused_op import OpKernels
from ..reference import compute_dtype
from ..registry import register_activation
from ..validation import check_float_tensor
from .hermite import PAPER

__all__ = ["tropical_polynomial_reference", "tropical_rational_reference", "piecewise_linear_moments",
           "variance_preserving_tropical_coefficients",
           "variance_preserving_tropical_rational_coefficients", "TropicalPolynomial", "TropicalRational"]


def _check_tropical_degree(degree, name: str = "degree") -> int:
    if isinstance(degree, bool) or not isinstance(degree, int):
        raise TypeError(f"argument '{name}' must be an int, got {type(degree).__name__}")
    if degree < 1:
        raise ValueError(f"argument '{name}' must be >= 1, got {degree}")
    if degree < 2:
        raise ValueError(f"argument '{name}' must be >= 2 for the variance-preserving init (integer slopes 0..1 "
                         f"cannot reach E[F'^2] = 1), got {degree}")
    return degree


def _max_plus(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """max_k (a_k + k x), all pieces stacked: (n + 1, *x.shape) -> x.shape."""
    k = torch.arange(a.numel(), dtype=x.dtype, device=x.device)
    lines = a.reshape(-1, *([1] * x.dim())) + k.reshape(-1, *([1] * x.dim())) * x
    return lines.max(0).values


def tropical_polynomial_reference(x: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """P(x) = max_k (a_k + k x), a = ``coefficients``; Khalfaoui-Hassani & Kesselheim 2025."""
    dt = compute_dtype(x.dtype)
    return _max_plus(x.to(dt), coefficients.to(dt)).to(x.dtype)


def tropical_rational_reference(x, numerator, denominator) -> torch.Tensor:
    """R(x) = max_k (a_k + k x) - max_k (c_k + k x)."""
    dt = compute_dtype(x.dtype)
    xf = x.to(dt)
    return (_max_plus(xf, numerator.to(dt)) - _max_plus(xf, denominator.to(dt))).to(x.dtype)


def _envelope(x: torch.Tensor, a: torch.Tensor):
    """max_k (a_k + k x) and the slope k of the maximising piece, one pass, nothing stacked."""
    best, slope = a[0] + torch.zeros_like(x), torch.zeros_like(x)
    for k in range(1, a.numel()):
        line = a[k] + k * x
        take = line > best  # ties stay with the lower k
        best, slope = torch.where(take, line, best), torch.where(take, float(k), slope)
    return best, slope


def _piece_sums(g: torch.Tensor, slope: torch.Tensor, pieces: int) -> torch.Tensor:
    """(sum of g where the maximising piece is k) for k = 0..pieces-1: dL/da_k."""
    return torch.stack([(g * (slope == k)).sum() for k in range(pieces)])


def tropical_forward(x2d, coefficients):
    dt = compute_dtype(x2d.dtype)
    return _envelope(x2d.to(dt), coefficients.to(dt))[0].to(x2d.dtype)


def tropical_backward(grad_y, x2d, coefficients):
    dt = compute_dtype(x2d.dtype)
    g = grad_y.to(dt)
    _, slope = _envelope(x2d.to(dt), coefficients.to(dt))
    return (g * slope).to(x2d.dtype), _piece_sums(g, slope, coefficients.numel())


def tropical_rational_forward(x2d, numerator, denominator):
    dt = compute_dtype(x2d.dtype)
    x = x2d.to(dt)
    return (_envelope(x, numerator.to(dt))[0] - _envelope(x, denominator.to(dt))[0]).to(x2d.dtype)


def tropical_rational_backward(grad_y, x2d, numerator, denominator):
    dt = compute_dtype(x2d.dtype)
    x, g = x2d.to(dt), grad_y.to(dt)
    _, p_slope = _envelope(x, numerator.to(dt))
    _, q_slope = _envelope(x, denominator.to(dt))
    return ((g * (p_slope - q_slope)).to(x2d.dtype), _piece_sums(g, p_slope, numerator.numel()),
            -_piece_sums(g, q_slope, denominator.numel()))


def _pieces(f, knots):
    """(lo, hi, alpha, beta) per interval between the sorted ``knots``, f = alpha + beta x there."""
    edges = [-math.inf, *sorted(knots), math.inf]
    for lo, hi in zip(edges[:-1], edges[1:]):
        if math.isfinite(lo) and math.isfinite(hi):
            left, right = lo + (hi - lo) / 4, hi - (hi - lo) / 4
        else:
            inner = hi - 1 if math.isfinite(hi) else (lo + 1 if math.isfinite(lo) else 0.0)
            left, right = inner - 0.5, inner + 0.5
        beta = (f(right) - f(left)) / (right - left)
        yield lo, hi, f(left) - beta * left, beta


def _normal_pdf(t: float) -> float:
    return math.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)  # 0 at +-inf


def _normal_cdf(t: float) -> float:
    return 0.5 * math.erfc(-t / math.sqrt(2))  # erfc keeps the lower tail's relative precision


def _times_pdf(t: float) -> float:
    return t * _normal_pdf(t) if math.isfinite(t) else 0.0


def _bisect(f, lo: float, hi: float, xtol: float = 1e-13) -> float:
    """A root of ``f`` in [lo, hi], where f(lo) and f(hi) differ in sign."""
    f_lo = f(lo)
    if f_lo * f(hi) > 0:
        raise ValueError(f"no sign change of the init equation on [{lo}, {hi}]")
    while hi - lo > xtol:
        mid = (lo + hi) / 2
        f_mid = f(mid)
        if f_mid == 0:
            return mid
        if (f_mid < 0) == (f_lo < 0):
            lo, f_lo = mid, f_mid
        else:
            hi = mid
    return (lo + hi) / 2


def piecewise_linear_moments(f, knots) -> tuple[float, float, float]:
    """(E[f], E[f^2], E[f'^2]) for x ~ N(0, 1), f linear between ``knots`` (closed form, module docstring)."""
    mean = value = slope_sq = 0.0
    for lo, hi, alpha, beta in _pieces(f, knots):
        d_cdf, d_pdf = _normal_cdf(hi) - _normal_cdf(lo), _normal_pdf(lo) - _normal_pdf(hi)
        mean += alpha * d_cdf + beta * d_pdf
        value += alpha**2 * d_cdf + 2 * alpha * beta * d_pdf + beta**2 * (d_cdf + _times_pdf(lo) - _times_pdf(hi))
        slope_sq += beta**2 * d_cdf
    return mean, value, slope_sq


def _coefficients_for(breakpoints) -> list[float]:
    """a_0 = 0, a_k = a_{k-1} - b_k: the max-plus polynomial with every piece active at these breakpoints."""
    a = [0.0]
    for b in breakpoints:
        a.append(a[-1] - b)
    return a


def _line_max(a):
    return lambda x: max(ak + k * x for k, ak in enumerate(a))


def _variance_preserving(build, bracket) -> tuple[list[float], list[float]]:
    """Solve the offset s (in ``bracket``) for E[F'^2] = 1, then shift the numerator for E[F^2] = 1."""
    s = _bisect(lambda s: piecewise_linear_moments(*build(s)[2:])[2] - 1.0, *bracket)
    p, q, f, knots = build(s)
    mean, second, _ = piecewise_linear_moments(f, knots)
    variance = second - mean**2
    if variance > 1:
        raise ValueError(f"no variance-preserving shift: Var F = {variance:.3g} > 1")
    shift = -mean + math.sqrt(1 - variance)  # t^2 + 2 t E[G] + E[G^2] = 1, the larger root
    return [c + shift for c in p], q


def variance_preserving_tropical_coefficients(degree: int) -> list[float]:
    """a_0..a_n of the variance-preserving ``tropical`` init (module docstring)."""
    n = _check_tropical_degree(degree)

    def build(s):
        knots = [s + k for k in range(n)]
        a = _coefficients_for(knots)
        return a, [], _line_max(a), knots

    return _variance_preserving(build, (-12.0, 12.0))[0]  # E[F'^2] - 1: n^2 - 1 > 0 at -12, -1 at 12


def variance_preserving_tropical_rational_coefficients(degree: int) -> tuple[list[float], list[float]]:
    """(a, c) of the variance-preserving ``tropical_rational`` init: P and Q of degree ``degree`` each."""
    n = _check_tropical_degree(degree)

    def build(s):
        p_knots, q_knots = [s + k for k in range(n)], [s + n + k for k in range(n)]
        a, c = _coefficients_for(p_knots), _coefficients_for(q_knots)
        p, q = _line_max(a), _line_max(c)
        return a, c, (lambda x: p(x) - q(x)), p_knots + q_knots

    centred = -(2 * n - 1) / 2  # knots symmetric about 0: the slope-n piece straddles 0, E[R'^2] > 1 there
    return _variance_preserving(build, (centred, 12.0))


class TropicalPolynomial(nn.Module):
    """max_{k=0..degree} (a_k + k x) with learnable a, variance-preserving at init."""

    tensor_parallel_rule = "elementwise"  # one function per feature: a column shard needs nothing (TP)

    def __init__(self, degree: int = 3, implementation: str = "auto", device=None, dtype=None):
        super().__init__()
        self.degree = _check_tropical_degree(degree)
        self.implementation = dispatch.check_implementation(implementation, "tropical")
        self.coefficients = nn.Parameter(torch.empty(degree + 1, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.coefficients.copy_(torch.tensor(variance_preserving_tropical_coefficients(self.degree), device="cpu"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_float_tensor(x, "x")
        return dispatch.call("tropical", self.implementation, x, self.coefficients)

    def extra_repr(self) -> str:
        return f"degree={self.degree}"


class TropicalRational(nn.Module):
    """max_k (a_k + k x) - max_k (c_k + k x), both of ``degree``, learnable a and c, variance-preserving at init."""

    tensor_parallel_rule = "elementwise"  # one function per feature: a column shard needs nothing (TP)

    def __init__(self, degree: int = 2, implementation: str = "auto", device=None, dtype=None):
        super().__init__()
        self.degree = _check_tropical_degree(degree)
        self.implementation = dispatch.check_implementation(implementation, "tropical_rational")
        self.numerator = nn.Parameter(torch.empty(degree + 1, device=device, dtype=dtype))
        self.denominator = nn.Parameter(torch.empty(degree + 1, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        a, c = variance_preserving_tropical_rational_coefficients(self.degree)
        with torch.no_grad():
            self.numerator.copy_(torch.tensor(a, device="cpu"))
            self.denominator.copy_(torch.tensor(c, device="cpu"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_float_tensor(x, "x")
        return dispatch.call("tropical_rational", self.implementation, x, self.numerator,
                             self.denominator)

    def extra_repr(self) -> str:
        return f"degree={self.degree}"


dispatch.register_op("tropical", reference=tropical_polynomial_reference,
                     kernels=OpKernels(forward=tropical_forward, backward=tropical_backward))
dispatch.register_op("tropical_rational", reference=tropical_rational_reference,
                     kernels=OpKernels(forward=tropical_rational_forward, backward=tropical_rational_backward))
register_activation("tropical", TropicalPolynomial, paper=PAPER,
                    description="max_k (a_k + k x), learnable max-plus polynomial, variance-preserving (degree=3)")
register_activation("tropical_rational", TropicalRational, paper=PAPER,
                    description="max_k (a_k + k x) - max_k (c_k + k x), tropical rational, variance-preserving")
