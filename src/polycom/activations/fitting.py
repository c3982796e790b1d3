r"""Fit the learnable coefficients of a linear-in-parameters activation to a target activation.

Khalfaoui-Hassani & Kesselheim 2025 (arXiv:2502.01247) approximate a pre-trained model's
activation by matching both the function and its derivative (Hermite interpolation),
so a model keeps working when its GELU is swapped for a learnable one. ``fit`` does
this by weighted least squares: with basis functions phi_j (F = sum_j c_j phi_j),
points x_i on ``interval`` with weights w_i (the N(0, 1) density, or uniform),

    min_c  sum_i w_i [ (F(x_i) - t(x_i))^2 + lambda (F'(x_i) - t'(x_i))^2 ],   lambda = 1 if match_derivative else 0,

a linear least-squares problem in c (``torch.linalg.lstsq``, float64). Derivatives
come from autograd. Fittable: ``Hermite``, ``Fourier`` (amplitudes; the frequencies
stay), ``PolyReLU`` (basis 1, relu(x)^i) and ``PolyNorm``, whose elementwise
polynomial part is fitted: on a row of many i.i.d. entries N(x^i) -> x^i / sqrt(E[x^{2i}])
(law of large numbers), so its basis is 1, x^i / sqrt(E_w[x^{2i}]) with the moment
taken under the fitting distribution.

``fit(model, ...)`` on a module that is not itself fittable fits every fittable
submodule (e.g. a Hugging Face model after ``polycom.hf.swap_activation``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..registry import activation_info, list_activations
from ..validation import check_interval
from .polynorm import PolyNorm
from .polyrelu import PolyReLU

__all__ = ["FitResult", "fit"]

DISTRIBUTIONS = ("normal", "uniform")


@dataclass(frozen=True)
class FitResult:
    """Coefficients set, and the max |error| of value and derivative on a uniform grid over the interval."""

    modules: int
    max_error: float
    max_derivative_error: float


def _target_function(target) -> Callable[[torch.Tensor], torch.Tensor]:
    if isinstance(target, str):
        info = activation_info(target)  # a ValueError lists the valid names
        if info.gated:
            raise ValueError(f"argument 'target': {target!r} is gated (takes gate and up); "
                             f"give a non-gated name: {', '.join(list_activations(gated=False))}")
        return info.build().double()
    if callable(target):
        return target
    raise TypeError(f"argument 'target' must be a callable or a registered activation name, got {type(target).__name__}")


def _poly_relu_basis(m: PolyReLU, x: torch.Tensor) -> list[torch.Tensor]:
    r = torch.relu(x)
    return [torch.ones_like(x)] + [r**i for i in range(1, m.order + 1)]


def _poly_norm_basis(m: PolyNorm, x: torch.Tensor, weights: torch.Tensor) -> list[torch.Tensor]:
    # N(x^i) on a long row of i.i.d. entries: x^i / sqrt(E[x^(2i)]) (module docstring).
    return [torch.ones_like(x)] + [x**i / torch.sqrt((weights * x ** (2 * i)).sum()) for i in range(1, m.order + 1)]


def _set_poly_coefficients(m, c: torch.Tensor) -> None:
    with torch.no_grad():
        m.bias.copy_(c[:1])
        m.weight.copy_(c[1:].flip(0))  # weight[r - i] multiplies the i-th power


def _fittable(m: nn.Module) -> bool:
    return isinstance(m, (PolyReLU, PolyNorm)) or (hasattr(m, "basis") and hasattr(m, "set_basis_coefficients"))


def _basis(m: nn.Module, x: torch.Tensor, weights: torch.Tensor) -> list[torch.Tensor]:
    if isinstance(m, PolyReLU):
        return _poly_relu_basis(m, x)
    if isinstance(m, PolyNorm):
        return _poly_norm_basis(m, x, weights)
    return m.basis(x)


def _values_and_slopes(fn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xr = x.detach().clone().requires_grad_(True)
    y = fn(xr)
    (slope,) = torch.autograd.grad(y.sum(), xr)
    return y.detach(), slope


def _fit_one(m: nn.Module, target, x, weights, match_derivative: bool) -> None:
    xr = x.detach().clone().requires_grad_(True)
    basis = _basis(m, xr, weights)
    values = torch.stack([b.detach() for b in basis], 1)  # (P, J)
    slopes = torch.stack([torch.autograd.grad(b.sum(), xr, retain_graph=True)[0]
                          if b.requires_grad else torch.zeros_like(x) for b in basis], 1)  # (P, J)
    t, dt = _values_and_slopes(target, x)
    sw = weights.sqrt()[:, None]
    rows, rhs = [sw * values], [sw[:, 0] * t]
    if match_derivative:
        rows.append(sw * slopes)
        rhs.append(sw[:, 0] * dt)
    c = torch.linalg.lstsq(torch.cat(rows), torch.cat(rhs)[:, None]).solution[:, 0]
    if isinstance(m, (PolyReLU, PolyNorm)):
        _set_poly_coefficients(m, c.to(m.weight.dtype))
    else:
        first = next(m.parameters())
        m.set_basis_coefficients(c.to(first.dtype))


def fit(module: nn.Module, target, interval: Sequence[float] = (-4.0, 4.0), distribution: str = "normal",
        match_derivative: bool = True, points: int = 4001) -> FitResult:
    """Set the coefficients of ``module`` (or of each fittable submodule) to approximate ``target``.

    ``target``: a callable on float64 tensors or a registered non-gated name ("gelu").
    ``distribution``: "normal" weights the points by the N(0, 1) density, "uniform" equally.
    Returns the max |F - t| and |F' - t'| on the fitting grid (the last module fitted).
    """
    lo, hi = check_interval(interval)
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"argument 'distribution' must be one of {list(DISTRIBUTIONS)}, got {distribution!r}")
    if isinstance(points, bool) or not isinstance(points, int) or points < 16:
        raise ValueError(f"argument 'points' must be an int >= 16, got {points!r}")
    if not isinstance(module, nn.Module):
        raise TypeError(f"argument 'module' must be an nn.Module, got {type(module).__name__}")
    target_fn = _target_function(target)
    targets = [module] if _fittable(module) else [m for m in module.modules() if _fittable(m)]
    if not targets:
        raise ValueError(f"argument 'module': {type(module).__name__} has no fittable activation (Hermite, Fourier, "
                         "PolyReLU, PolyNorm, or a module with basis() and set_basis_coefficients())")
    x = torch.linspace(lo, hi, points, dtype=torch.float64)
    weights = torch.exp(-x.square() / 2) if distribution == "normal" else torch.ones_like(x)
    weights = weights / weights.sum()
    t, dt = _values_and_slopes(target_fn, x)
    max_err = max_slope_err = 0.0
    for m in targets:
        _fit_one(m, target_fn, x, weights, match_derivative)
        xr = x.clone().requires_grad_(True)
        y = torch.stack(_basis(m, xr, weights), 1) @ _coefficients(m).double()
        (slope,) = torch.autograd.grad(y.sum(), xr)
        max_err, max_slope_err = float((y.detach() - t).abs().max()), float((slope - dt).abs().max())
    return FitResult(len(targets), max_err, max_slope_err)


def _coefficients(m: nn.Module) -> torch.Tensor:
    """The coefficients in basis order (the inverse of the setters)."""
    if isinstance(m, (PolyReLU, PolyNorm)):
        return torch.cat([m.bias.detach(), m.weight.detach().flip(0)])
    return m.basis_coefficients()
