r"""Fixed low-degree polynomial activations: least-squares ReLU approximations, x^2 and x^2 + x.

The activations of privacy-preserving inference, where only additions and
multiplications are cheap (Garimella, Jha and Reagen 2021, "Sisyphus: A Cautionary
Tale of Using Low-Degree Polynomial Activations in Privacy-Preserving Deep
Learning"; "quad" x^2 + x and "square" x^2 as there). They have no learnable
parameters, and, unlike PolyNorm, nothing bounds their output: in deep models
activations can escape (grow without bound layer after layer).

``ReLUApproximation(degree, interval)`` is the polynomial p of the given degree
closest to ReLU in L2 on [lo, hi], in closed form by Legendre projection. With
x = m + h t (m = (lo + hi) / 2, h = (hi - lo) / 2, t in [-1, 1]) and P_n the Legendre
polynomials,

    p(x) = sum_{n=0..degree} c_n P_n((x - m) / h),   c_n = (2n + 1) / 2 * \int_{-1}^{1} relu(m + h t) P_n(t) dt,

each integral exact since relu(m + h t) = m + h t for t > -m / h and 0 below. On a
symmetric interval [-a, a] (the default, a = 5): relu(x) = x / 2 + |x| / 2 with |x|
even, so every odd coefficient above the linear one is 0, and the degree-3 fit *is*
the degree-2 one: p(x) = 3 a / 32 + x / 2 + 15 x^2 / (32 a). The two differ on an
asymmetric interval.

Every activation here is p(s x) for coefficients c_0..c_n (lowest power first; note:
the reverse of PolyCom's ``weight`` layout) and an input scale s (default 1), which
maps inputs of scale 1 / s onto the interval the polynomial was fitted on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from numpy.polynomial import Legendre, Polynomial
from torch import nn

from ..reference import compute_dtype
from ..registry import register_activation
from ..validation import check_float_tensor, check_interval

__all__ = [
    "relu_least_squares_coefficients",
    "fixed_polynomial_reference",
    "fixed_polynomial",
    "FixedPolynomial",
    "ReLUApproximation",
]

PAPER = "Garimella, Jha, Reagen 2021, Sisyphus: A Cautionary Tale of Using Low-Degree Polynomial Activations"


def relu_least_squares_coefficients(degree: int, interval: Sequence[float] = (-5.0, 5.0)) -> tuple[float, ...]:
    """c_0..c_degree (lowest power first) of the degree-``degree`` least-squares fit of ReLU on ``interval``.

    Legendre projection, see the module docstring: the exact minimiser of
    \\int_lo^hi (p(x) - relu(x))^2 dx over polynomials of that degree.
    """
    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 1:
        raise ValueError(f"argument 'degree' must be an int >= 1, got {degree!r}")
    lo, hi = check_interval(interval)
    m, h = (lo + hi) / 2, (hi - lo) / 2
    start = min(1.0, max(-1.0, -m / h))  # relu(m + h t) = m + h t for t > start, 0 below
    line = Polynomial([m, h])  # m + h t
    legendre_coefs = []
    for n in range(degree + 1):
        antiderivative = (line * Legendre.basis(n).convert(kind=Polynomial)).integ()
        legendre_coefs.append((2 * n + 1) / 2 * (antiderivative(1.0) - antiderivative(start)))
    # The series in P_n((x - m) / h), rewritten as a power series in x.
    power = Legendre(legendre_coefs, domain=[lo, hi]).convert(kind=Polynomial).coef
    return tuple(float(c) for c in np.pad(power, (0, degree + 1 - len(power))))


def fixed_polynomial_reference(
    x: torch.Tensor, coefficients: Sequence[float], input_scale: float = 1.0
) -> torch.Tensor:
    """p(s x) = sum_k c_k (s x)^k, c = ``coefficients`` (lowest power first), by Horner's rule."""
    dt = compute_dtype(x.dtype)
    z = x.to(dt) * input_scale
    out = torch.full_like(z, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        out = out * z + c
    return out.to(x.dtype)


def _check_coefficient_list(coefficients) -> tuple[float, ...]:
    try:
        coefs = tuple(float(c) for c in coefficients)
    except (TypeError, ValueError):
        raise ValueError(f"argument 'coefficients' must be a sequence of numbers, got {coefficients!r}") from None
    if not coefs or not all(math.isfinite(c) for c in coefs):
        raise ValueError(f"argument 'coefficients' must be a non-empty sequence of finite numbers, got {coefficients!r}")
    return coefs


def _check_input_scale(input_scale) -> float:
    if isinstance(input_scale, bool) or not isinstance(input_scale, (int, float)) or not \
            (math.isfinite(input_scale) and input_scale > 0):
        raise ValueError(f"argument 'input_scale' must be a finite number > 0, got {input_scale!r}")
    return float(input_scale)


def fixed_polynomial(x: torch.Tensor, coefficients: Sequence[float], input_scale: float = 1.0) -> torch.Tensor:
    """p(s x) for fixed ``coefficients`` c_0..c_n (lowest power first) and ``input_scale`` s."""
    check_float_tensor(x, "x")
    return fixed_polynomial_reference(x, _check_coefficient_list(coefficients), _check_input_scale(input_scale))


class FixedPolynomial(nn.Module):
    """p(s x) = sum_k c_k (s x)^k with fixed coefficients (no parameters, nothing in the state dict)."""

    tensor_parallel_rule = "elementwise"  # one function per feature: a column shard needs nothing (TP)

    def __init__(self, coefficients: Sequence[float], input_scale: float = 1.0):
        super().__init__()
        self.coefficients = _check_coefficient_list(coefficients)
        self.input_scale = _check_input_scale(input_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fixed_polynomial(x, self.coefficients, self.input_scale)

    def extra_repr(self) -> str:
        s = "coefficients=(" + ", ".join(f"{c:.6g}" for c in self.coefficients) + ")"
        return s + (f", input_scale={self.input_scale:g}" if self.input_scale != 1.0 else "")


class ReLUApproximation(FixedPolynomial):
    """The degree-``degree`` least-squares approximation of ReLU on ``interval``, applied to s x."""

    tensor_parallel_rule = "elementwise"  # one function per feature: a column shard needs nothing (TP)

    def __init__(self, degree: int = 2, interval: Sequence[float] = (-5.0, 5.0), input_scale: float = 1.0):
        super().__init__(relu_least_squares_coefficients(degree, interval), input_scale)
        self.degree, self.interval = degree, check_interval(interval)

    def extra_repr(self) -> str:
        return f"degree={self.degree}, interval=[{self.interval[0]:g}, {self.interval[1]:g}], " + super().extra_repr()


register_activation("poly2_relu_approx", ReLUApproximation, default_kwargs={"degree": 2}, paper=PAPER,
                    description="least-squares degree-2 fit of relu on [-5, 5] (interval=, input_scale=)")
register_activation("poly3_relu_approx", ReLUApproximation, default_kwargs={"degree": 3}, paper=PAPER,
                    description="least-squares degree-3 fit of relu on [-5, 5] (= degree 2 on a symmetric interval)")
register_activation("square", FixedPolynomial, default_kwargs={"coefficients": (0.0, 0.0, 1.0)}, paper=PAPER,
                    description="x^2")
register_activation("quad", FixedPolynomial, default_kwargs={"coefficients": (0.0, 1.0, 1.0)}, paper=PAPER,
                    description="x^2 + x")
