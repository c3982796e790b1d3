"""Choose the code path for one activation call.

``"auto"`` picks the fastest path that is correct for the input's device and
dtype; a user can force one by name. The reference path is always available
and is the ground truth of the tests.
"""

from __future__ import annotations

import torch

from .. import reference as ref

IMPLEMENTATIONS = ("auto", "reference")


def available_implementations(x: torch.Tensor) -> list[str]:
    """Implementations that can run on ``x``'s device and dtype, fastest first."""
    return ["reference"]


def select_implementation(x: torch.Tensor, requested: str) -> str:
    if requested not in IMPLEMENTATIONS:
        raise ValueError(f"argument 'implementation' must be one of {list(IMPLEMENTATIONS)}, got {requested!r}")
    available = available_implementations(x)
    if requested == "auto":
        return available[0]
    if requested not in available:
        raise ValueError(
            f"implementation {requested!r} cannot run on a {x.dtype} tensor on {x.device}; available here: {available}"
        )
    return requested


def poly_relu(x, weight, bias, implementation):
    select_implementation(x, implementation)
    return ref.poly_relu_reference(x, weight, bias)


def poly_norm(x, weight, bias, eps, implementation):
    select_implementation(x, implementation)
    return ref.poly_norm_reference(x, weight, bias, eps)


def gated_poly_norm(gate, up, weight, bias, eps, implementation):
    select_implementation(gate, implementation)
    return ref.gated_poly_norm_reference(gate, up, weight, bias, eps)
