"""Argument checks shared by the functional API and the modules.

Each error names the argument it is about, so a user reading a traceback knows
which value to fix.
"""

from __future__ import annotations

import math

import torch

__all__ = ["check_float_tensor", "check_coefficients", "check_eps", "check_interval", "check_order",
           "check_same_shape"]


def check_float_tensor(x, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"argument '{name}' must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"argument '{name}' must be a floating-point tensor (float16, bfloat16, float32 or float64), "
            f"got {x.dtype}; convert it with {name}.float()"
        )
    if x.dim() == 0:
        raise ValueError(f"argument '{name}' must have at least one dimension, got a 0-d tensor")
    if x.shape[-1] == 0:
        raise ValueError(f"argument '{name}' has a last dimension of size 0; the features dimension must be non-empty")


def check_order(order) -> None:
    if isinstance(order, bool) or not isinstance(order, int):
        raise TypeError(f"argument 'order' must be an int, got {type(order).__name__}")
    if order < 1:
        raise ValueError(f"argument 'order' must be >= 1, got {order}")


def check_eps(eps) -> None:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"argument 'eps' must be a float, got {type(eps).__name__}")
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"argument 'eps' must be a finite number > 0, got {eps}")


def check_coefficients(weight, bias, x: torch.Tensor) -> None:
    """weight: (r,) with r >= 1, bias: (1,), both floating point on x's device."""
    for name, t in (("weight", weight), ("bias", bias)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"argument '{name}' must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"argument '{name}' must be a floating-point tensor, got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"argument '{name}' is on {t.device} but the input is on {x.device}")
    if weight.dim() != 1 or weight.numel() < 1:
        raise ValueError(
            f"argument 'weight' must have shape (r,) with r >= 1 (weight[0] multiplies x^r), "
            f"got shape {tuple(weight.shape)}"
        )
    if bias.numel() != 1 or bias.dim() > 1:
        raise ValueError(f"argument 'bias' must have shape (1,), got shape {tuple(bias.shape)}")


def check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"arguments '{name_a}' and '{name_b}' must have the same shape, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.device != b.device:
        raise ValueError(f"arguments '{name_a}' and '{name_b}' must be on the same device, got {a.device} and {b.device}")


def check_interval(interval, name: str = "interval") -> tuple[float, float]:
    """``(lo, hi)`` as floats, finite with lo < hi."""
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise ValueError(f"argument '{name}' must be two numbers (lo, hi), got {interval!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"argument '{name}' must be finite with lo < hi, got {interval!r}")
    return lo, hi
