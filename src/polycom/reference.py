"""Reference math of every activation in polycom: the ground truth.

Each formula is written once, in plain PyTorch, with the paper it comes from, in
its family's module (``polycom.activations.polynorm``, ...); this module holds the
precision rule and the RMS normaliser the families share, and re-exports every
family's formula under its old name (``reference.poly_norm_reference``). Fast
paths (``polycom.ops``) are tested against these functions and never copy them.
No argument checking happens here; the functional forms validate and then
dispatch.

Coefficient layout (official PolyCom code, Zhuo et al. 2025, and the released
``Open-Foundation-Models/PolyNorm_1B`` checkpoints): ``weight`` has shape (r,)
and ``weight[0]`` multiplies the highest power, ``weight[r - 1]`` the linear
term; ``bias`` has shape (1,) and is a_0.

Precision rule: 16-bit inputs are computed in float32 and the result is cast
back to the input dtype; float32/float64 inputs are computed in their own
dtype. PolyNorm outputs are bounded (|N(z)| <= sqrt(d)) so they are finite for
every finite input; PolyReLU outputs grow like x^r and are the true value
rounded to the output dtype (inf once it exceeds the dtype's range).
"""

from __future__ import annotations

import importlib

import torch



def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the polynomial is evaluated in: fp32 for 16-bit inputs."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def rms_normalize(z: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """N(z) = z * rsqrt(mean(z^2, -1) + eps): RMS normalisation without gain.

    This is PolyNorm's normaliser as in the official code (the paper writes an
    L2 normalisation z / ||z||_2; the two differ by sqrt(d)). The statistic is
    taken over the whole last dimension, per row.
    """
    return z * torch.rsqrt(z.pow(2).mean(-1, keepdim=True) + eps)


# Family formulas, imported on first access: the families import this module for the
# helpers above, so importing them here at load time would be circular.
_FAMILY_OF = {
    "normalized_powers": "polynorm",
    "poly_norm_reference": "polynorm",
    "poly_relu_reference": "polyrelu",
    "poly_com_reference": "general",
    "BASE_FUNCTIONS": "general",
    "gated_poly_norm_reference": "gated_polynorm",
    "relu2_reference": "baselines",
    "swiglu_reference": "baselines",
    "geglu_reference": "baselines",
    "fixed_polynomial_reference": "fixed_polynomials",
}


__all__ = ["compute_dtype", "rms_normalize", *_FAMILY_OF]


def __getattr__(name: str):
    family = _FAMILY_OF.get(name)
    if family is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"polycom.activations.{family}"), name)
