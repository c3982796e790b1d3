r"""Fourier activation: a truncated Fourier series with learnable amplitudes and frequencies.

Khalfaoui-Hassani & Kesselheim 2025, "Polynomial, trigonometric, and tropical
activations" (arXiv:2502.01247), the trigonometric basis:

    F(x) = a_0 + sum_{k=1..K} (a_k cos(w_k x) + b_k sin(w_k x)),

with a_0 (``bias``), a (``cos``), b (``sin``) and the frequencies w (``frequency``) all learnable.

**Second moments under x ~ N(0, 1), in closed form.** From E[cos(w x)] = exp(-w^2 / 2)
(the characteristic function of N(0, 1)), E[sin(w x)] = 0, and the product formulas
cos u cos v = (cos(u - v) + cos(u + v)) / 2, sin u sin v = (cos(u - v) - cos(u + v)) / 2:

    C_jk = E[cos(w_j x) cos(w_k x)] = (exp(-(w_j - w_k)^2 / 2) + exp(-(w_j + w_k)^2 / 2)) / 2,
    S_jk = E[sin(w_j x) sin(w_k x)] = (exp(-(w_j - w_k)^2 / 2) - exp(-(w_j + w_k)^2 / 2)) / 2,
    E[sin(w_j x) cos(w_k x)] = 0 (odd integrand).

With w_0 = 0 for the constant term (cos 0 = 1), and F'(x) = sum_k w_k (b_k cos(w_k x) - a_k sin(w_k x)):

    E[F^2]  = a^T C a + b^T S b          (a including a_0, C including w_0 = 0)
    E[F'^2] = (w a)^T S (w a) + (w b)^T C (w b)    ((w a)_k = w_k a_k)

**Variance-preserving initialisation** (the paper's E[F^2] = E[F'^2] = 1): the
even part (a_0, a) = alpha u and the odd part b = beta v, with shapes u_0 = 1,
u_k = v_k = 1 / k^2 (amplitudes decaying so that the derivative terms w_k u_k stay
summable), so E[F^2] = alpha^2 P + beta^2 Q, E[F'^2] = alpha^2 R + beta^2 T: two
linear equations in (alpha^2, beta^2), solved exactly. Frequencies start at
w_k = k; the default K = 4 (frequencies 1..4) gives alpha^2 = 0.198, beta^2 = 0.591.
A frequency set for which the solution is not positive raises an error naming
``frequencies``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..ops import dispatch
from ..ops.fused_op import OpKernels
from ..reference import compute_dtype
from ..registry import register_activation
from ..validation import check_float_tensor
from .hermite import PAPER

__all__ = ["check_frequencies", "fourier_second_moments", "variance_preserving_fourier_parameters",
           "fourier_reference", "fourier", "Fourier"]


def check_frequencies(frequencies) -> tuple[float, ...]:
    try:
        freqs = tuple(float(w) for w in frequencies)
    except (TypeError, ValueError):
        raise ValueError(f"argument 'frequencies' must be a sequence of numbers, got {frequencies!r}") from None
    if not freqs:
        raise ValueError("argument 'frequencies' must be non-empty (at least one frequency w_k > 0), got ()")
    if not all(math.isfinite(w) and w > 0 for w in freqs) or len(set(freqs)) != len(freqs):
        raise ValueError(f"argument 'frequencies' must be distinct finite numbers > 0, got {frequencies!r}")
    return freqs


def _products(w1: torch.Tensor, w2: torch.Tensor, sign: float) -> torch.Tensor:
    """C (sign = +1) or S (sign = -1) of the module docstring, (len(w1), len(w2))."""
    d, s = w1[:, None] - w2[None, :], w1[:, None] + w2[None, :]
    return (torch.exp(-d.square() / 2) + sign * torch.exp(-s.square() / 2)) / 2


def fourier_second_moments(bias, cos, sin, frequency) -> tuple[torch.Tensor, torch.Tensor]:
    """(E[F(x)^2], E[F'(x)^2]) for x ~ N(0, 1), in closed form (module docstring), float64."""
    w = frequency.detach().double()
    a = torch.cat([bias.detach().double().reshape(1), cos.detach().double().to(w.device)])
    b = sin.detach().double().to(w.device)
    w0 = torch.cat([w.new_zeros(1), w])
    value = a @ _products(w0, w0, 1.0) @ a + b @ _products(w, w, -1.0) @ b
    wa, wb = w * a[1:], w * b
    slope = wa @ _products(w, w, -1.0) @ wa + wb @ _products(w, w, 1.0) @ wb
    return value, slope


def variance_preserving_fourier_parameters(frequencies: Sequence[float]) -> dict[str, torch.Tensor]:
    """bias, cos, sin, frequency (float64) with E[F^2] = E[F'^2] = 1 (module docstring)."""
    # On the CPU explicitly: modules may be built under torch.device("meta") (parameter counting).
    cpu = dict(dtype=torch.float64, device="cpu")
    w = torch.tensor(check_frequencies(frequencies), **cpu)
    shape = 1.0 / torch.arange(1, w.numel() + 1, **cpu).square()  # u_k = v_k = 1/k^2
    zero = torch.zeros_like(shape)
    p, r = fourier_second_moments(torch.ones(1, **cpu), shape, zero, w)  # even part alone
    q, t = fourier_second_moments(torch.zeros(1, **cpu), zero, shape, w)  # odd part alone
    alpha2, beta2 = torch.linalg.solve(torch.stack([torch.stack([p, q]), torch.stack([r, t])]), torch.ones(2, **cpu))
    if not (alpha2 > 0 and beta2 > 0):
        raise ValueError(f"argument 'frequencies' = {frequencies!r} admits no variance-preserving init of the "
                         f"1/k^2 shape (solved alpha^2 = {alpha2:.3g}, beta^2 = {beta2:.3g}); use smaller "
                         "frequencies, e.g. 1..K")
    alpha, beta = alpha2.sqrt(), beta2.sqrt()
    return {"bias": alpha.reshape(1), "cos": alpha * shape, "sin": beta * shape, "frequency": w}


def fourier_reference(x, bias, cos, sin, frequency) -> torch.Tensor:
    """F(x) = a_0 + sum_k a_k cos(w_k x) + b_k sin(w_k x); Khalfaoui-Hassani & Kesselheim 2025."""
    dt = compute_dtype(x.dtype)
    xf = x.to(dt)
    out = bias.to(dt).expand_as(xf)
    for a, b, w in zip(cos.to(dt), sin.to(dt), frequency.to(dt)):
        out = out + a * torch.cos(w * xf) + b * torch.sin(w * xf)
    return out.to(x.dtype)


def fourier_forward(x2d, bias, cos, sin, frequency):
    dt = compute_dtype(x2d.dtype)
    x = x2d.to(dt)
    out = bias.to(dt).expand_as(x)
    for k in range(frequency.numel()):
        phase = frequency[k].to(dt) * x
        out = out + cos[k].to(dt) * torch.cos(phase) + sin[k].to(dt) * torch.sin(phase)
    return out.to(x2d.dtype)


def fourier_backward(grad_y, x2d, bias, cos, sin, frequency):
    """dF/dx = sum_k w_k (b_k cos - a_k sin); dF/da_k = cos, dF/db_k = sin, dF/dw_k = x (b_k cos - a_k sin)."""
    dt = compute_dtype(x2d.dtype)
    x, g = x2d.to(dt), grad_y.to(dt)
    grad_x = torch.zeros_like(x)
    grad_cos, grad_sin, grad_freq = [], [], []
    for k in range(frequency.numel()):
        w, a, b = frequency[k].to(dt), cos[k].to(dt), sin[k].to(dt)
        c, s = torch.cos(w * x), torch.sin(w * x)
        slope = b * c - a * s  # d/d(w x) of the k-th term
        grad_x = grad_x + w * slope
        grad_cos.append((g * c).sum())
        grad_sin.append((g * s).sum())
        grad_freq.append((g * x * slope).sum())
    return ((g * grad_x).to(x2d.dtype), g.sum().reshape(1), torch.stack(grad_cos), torch.stack(grad_sin),
            torch.stack(grad_freq))


def fourier(x, bias, cos, sin, frequency, implementation: str = "auto") -> torch.Tensor:
    """F(x) = bias + sum_k cos[k] cos(frequency[k] x) + sin[k] sin(frequency[k] x)."""
    check_float_tensor(x, "x")
    if not (cos.shape == sin.shape == frequency.shape and cos.dim() == 1 and cos.numel() >= 1):
        raise ValueError("arguments 'cos', 'sin', 'frequency' must share one shape (K,) with K >= 1, got "
                         f"{tuple(cos.shape)}, {tuple(sin.shape)}, {tuple(frequency.shape)}")
    return dispatch.call("fourier", implementation, x, bias, cos, sin, frequency)


class Fourier(nn.Module):
    """a_0 + sum_k a_k cos(w_k x) + b_k sin(w_k x), all learnable, variance-preserving at init."""

    tensor_parallel_rule = "elementwise"  # one function per feature: a column shard needs nothing (TP)

    def __init__(self, frequencies: Sequence[float] = (1.0, 2.0, 3.0, 4.0), learn_frequencies: bool = True,
                 implementation: str = "auto", device=None, dtype=None):
        super().__init__()
        self.frequencies = check_frequencies(frequencies)
        self.implementation = dispatch.check_implementation(implementation, "fourier")
        k = len(self.frequencies)
        self.bias = nn.Parameter(torch.empty(1, device=device, dtype=dtype))
        self.cos = nn.Parameter(torch.empty(k, device=device, dtype=dtype))
        self.sin = nn.Parameter(torch.empty(k, device=device, dtype=dtype))
        self.frequency = nn.Parameter(torch.empty(k, device=device, dtype=dtype), requires_grad=learn_frequencies)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            for name, value in variance_preserving_fourier_parameters(self.frequencies).items():
                getattr(self, name).copy_(value)

    def basis(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[1, cos(w_1 x), .., cos(w_K x), sin(w_1 x), .., sin(w_K x)] at the current frequencies (for ``fit``)."""
        w = self.frequency.detach().to(x.dtype)
        return [torch.ones_like(x)] + [torch.cos(wk * x) for wk in w] + [torch.sin(wk * x) for wk in w]

    def basis_coefficients(self) -> torch.Tensor:
        return torch.cat([self.bias, self.cos, self.sin]).detach()

    def set_basis_coefficients(self, coefficients: torch.Tensor) -> None:
        k = len(self.frequencies)
        with torch.no_grad():
            self.bias.copy_(coefficients[:1])
            self.cos.copy_(coefficients[1: k + 1])
            self.sin.copy_(coefficients[k + 1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fourier(x, self.bias, self.cos, self.sin, self.frequency, self.implementation)

    def extra_repr(self) -> str:
        return f"frequencies={self.frequencies}"


dispatch.register_op("fourier", reference=fourier_reference,
                     kernels=OpKernels(forward=fourier_forward, backward=fourier_backward))
register_activation("fourier", Fourier, paper=PAPER,
                    description="a0 + sum_k a_k cos(w_k x) + b_k sin(w_k x), learnable a, b, w; variance-preserving")
