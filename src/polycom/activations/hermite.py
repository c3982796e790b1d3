r"""Hermite activation: learnable coefficients on the orthonormal probabilists' Hermite basis.

Khalfaoui-Hassani & Kesselheim 2025, "Polynomial, trigonometric, and tropical
activations" (arXiv:2502.01247), Section on the Hermite basis:

    F(x) = sum_{k=0..n} a_k h_k(x),   h_k = He_k / sqrt(k!),

He_k the probabilists' Hermite polynomials (He_0 = 1, He_1 = x,
He_{k+1} = x He_k - k He_{k-1}), so h_{k+1} = (x h_k - sqrt(k) h_{k-1}) / sqrt(k + 1).
The h_k are orthonormal under x ~ N(0, 1): E[h_j h_k] = delta_jk. Since
He_k' = k He_{k-1}, h_k' = sqrt(k) h_{k-1}.

**Variance-preserving initialisation** (the paper's principle: the activation keeps
the second moment of its input and of the gradient, E[F(x)^2] = 1 and
E[F'(x)^2] = 1 for x ~ N(0, 1)). With the orthonormal basis both are closed form:

    E[F^2]  = sum_{k=0..n} a_k^2                       (orthonormality)
    E[F'^2] = E[(sum_k a_k sqrt(k) h_{k-1})^2] = sum_{k=1..n} k a_k^2.

Subtracting, a_0^2 = sum_{k>=2} (k - 1) a_k^2: the constant term is what lets the
nonlinear terms in without breaking either constraint. Our choice (the paper's
constraints, our split): half of the gradient's second moment from the linear term,
half spread evenly over the degrees 2..n,

    a_1^2 = 1/2,   a_k^2 = t for k = 2..n with t sum_{k=2..n} k = 1/2,   a_0^2 = t sum_{k=2..n} (k - 1),

all a_k >= 0 (degree 1: a_1 = 1, a_0 = 0, the identity). Degree 3 gives
a = (sqrt(0.3), sqrt(0.5), sqrt(0.1), sqrt(0.1)).

Default degree 3: the cubic is the lowest degree with both an even and an odd
nonlinear term, and the order PolyCom uses throughout polycom; the degree is a
constructor argument (``degree=``). Parameter: ``coefficients`` (n + 1,), a_0 first.
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

__all__ = ["check_degree", "variance_preserving_hermite_coefficients", "hermite_basis", "hermite_reference",
           "hermite", "Hermite"]

PAPER = "Khalfaoui-Hassani & Kesselheim 2025, Polynomial, trigonometric, and tropical activations"


def check_degree(degree) -> int:
    if isinstance(degree, bool) or not isinstance(degree, int):
        raise TypeError(f"argument 'degree' must be an int, got {type(degree).__name__}")
    if degree < 1:
        raise ValueError(f"argument 'degree' must be >= 1, got {degree}")
    return degree


def variance_preserving_hermite_coefficients(degree: int) -> list[float]:
    """a_0..a_n with sum a_k^2 = 1 and sum k a_k^2 = 1 (module docstring)."""
    check_degree(degree)
    if degree == 1:
        return [0.0, 1.0]
    t = 0.5 / sum(range(2, degree + 1))
    a0 = math.sqrt(t * sum(k - 1 for k in range(2, degree + 1)))
    return [a0, math.sqrt(0.5)] + [math.sqrt(t)] * (degree - 1)


def hermite_basis(x: torch.Tensor, degree: int) -> list[torch.Tensor]:
    """[h_0(x), ..., h_n(x)], h_k = He_k / sqrt(k!), by the three-term recurrence."""
    basis = [torch.ones_like(x), x]
    for k in range(1, degree):
        basis.append((x * basis[k] - math.sqrt(k) * basis[k - 1]) / math.sqrt(k + 1))
    return basis[: degree + 1]


def hermite_reference(x: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """F(x) = sum_k a_k h_k(x), a = ``coefficients`` (a_0 first); Khalfaoui-Hassani & Kesselheim 2025."""
    dt = compute_dtype(x.dtype)
    a = coefficients.to(dt)
    basis = hermite_basis(x.to(dt), a.numel() - 1)
    return sum(a[k] * h for k, h in enumerate(basis)).to(x.dtype)


# Closed-form kernels: the recurrence walked once, two basis values live at a time.
def hermite_forward(x2d: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    dt = compute_dtype(x2d.dtype)
    x, a = x2d.to(dt), coefficients.to(dt)
    prev, cur = torch.ones_like(x), x
    out = a[0] + a[1] * x
    for k in range(1, a.numel() - 1):
        prev, cur = cur, (x * cur - math.sqrt(k) * prev) / math.sqrt(k + 1)
        out = out + a[k + 1] * cur
    return out.to(x2d.dtype)


def hermite_backward(grad_y: torch.Tensor, x2d: torch.Tensor, coefficients: torch.Tensor):
    """dF/dx = sum_{k>=1} a_k sqrt(k) h_{k-1}(x);  dL/da_k = sum(grad_y * h_k(x))."""
    dt = compute_dtype(x2d.dtype)
    x, a, g = x2d.to(dt), coefficients.to(dt), grad_y.to(dt)
    prev, cur = torch.ones_like(x), x  # h_{k-1}, h_k for k = 1
    grad_x = a[1] * prev
    grad_a = [g.sum(), (g * x).sum()]
    for k in range(1, a.numel() - 1):
        prev, cur = cur, (x * cur - math.sqrt(k) * prev) / math.sqrt(k + 1)  # now h_k, h_{k+1}
        grad_x = grad_x + a[k + 1] * math.sqrt(k + 1) * prev
        grad_a.append((g * cur).sum())
    return (g * grad_x).to(x2d.dtype), torch.stack(grad_a)


def hermite(x: torch.Tensor, coefficients: torch.Tensor, implementation: str = "auto") -> torch.Tensor:
    """F(x) = sum_k coefficients[k] * h_k(x) (see ``hermite_reference``)."""
    check_float_tensor(x, "x")
    if not isinstance(coefficients, torch.Tensor) or coefficients.dim() != 1 or coefficients.numel() < 2:
        raise ValueError("argument 'coefficients' must be a tensor of shape (degree + 1,) with degree >= 1, "
                         f"got {getattr(coefficients, 'shape', coefficients)!r}")
    return dispatch.call("hermite", implementation, x, coefficients)


class Hermite(nn.Module):
    """sum_{k=0..degree} a_k He_k(x) / sqrt(k!) with learnable a, variance-preserving at init."""

    tensor_parallel_rule = "elementwise"  # one function per feature: a column shard needs nothing (TP)

    def __init__(self, degree: int = 3, implementation: str = "auto", device=None, dtype=None):
        super().__init__()
        self.degree = check_degree(degree)
        self.implementation = dispatch.check_implementation(implementation, "hermite")
        self.coefficients = nn.Parameter(torch.empty(degree + 1, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.coefficients.copy_(torch.tensor(variance_preserving_hermite_coefficients(self.degree), device="cpu"))

    def basis(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The functions the learnable coefficients multiply (for ``polycom.activations.fit``)."""
        return hermite_basis(x, self.degree)

    def basis_coefficients(self) -> torch.Tensor:
        return self.coefficients.detach()

    def set_basis_coefficients(self, coefficients: torch.Tensor) -> None:
        with torch.no_grad():
            self.coefficients.copy_(coefficients)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return hermite(x, self.coefficients, self.implementation)

    def extra_repr(self) -> str:
        return f"degree={self.degree}" + (f", implementation={self.implementation}"
                                          if self.implementation != "auto" else "")


dispatch.register_op("hermite", reference=hermite_reference,
                     kernels=OpKernels(forward=hermite_forward, backward=hermite_backward))
register_activation("hermite", Hermite, paper=PAPER,
                    description="sum_k a_k He_k(x)/sqrt(k!), learnable, variance-preserving init (degree=3)")
