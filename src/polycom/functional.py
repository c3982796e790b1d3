"""Functional API: argument checks, then dispatch to an implementation.

``implementation`` selects the code path: ``"reference"`` is the plain math of
each family (re-exported by ``polycom.reference``; the ground truth); ``"auto"``
(default) lets ``polycom.ops.dispatch`` pick the fastest correct path for the
input's device and dtype. Every path computes the same function. Each function
is defined in its family's module in ``polycom.activations``; this module
gathers them.
"""

from __future__ import annotations

from .activations.baselines import geglu, relu2, swiglu
from .activations.fixed_polynomials import fixed_polynomial
from .activations.gated_polynorm import gated_poly_norm
from .activations.general import poly_com
from .activations.grouped_polynorm import grouped_gated_poly_norm, grouped_poly_norm
from .activations.polynorm import poly_norm
from .activations.polyrelu import poly_relu

__all__ = [
    "poly_relu",
    "poly_norm",
    "poly_com",
    "gated_poly_norm",
    "grouped_poly_norm",
    "grouped_gated_poly_norm",
    "relu2",
    "swiglu",
    "geglu",
    "fixed_polynomial",
]
