"""Reference math of every activation in polycom: the ground truth.

Each formula is written here once, in plain PyTorch, with the paper it comes
from. Fast paths (``polycom.ops``) are tested against these functions and never
copy them. No argument checking happens here; ``polycom.functional`` validates
and then dispatches.

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

import torch
import torch.nn.functional as F

__all__ = [
    "compute_dtype",
    "rms_normalize",
    "normalized_powers",
    "poly_relu_reference",
    "poly_norm_reference",
    "poly_com_reference",
    "gated_poly_norm_reference",
    "relu2_reference",
    "swiglu_reference",
    "geglu_reference",
    "BASE_FUNCTIONS",
]


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


def _row_scale(x: torch.Tensor) -> torch.Tensor:
    """s = max(1, max|x|) per row, shape (..., 1): divides x so no power of it overflows."""
    return x.abs().amax(-1, keepdim=True).clamp(min=1.0)


def normalized_powers(x: torch.Tensor, order: int, eps: float) -> list[torch.Tensor]:
    """[N(x^1), ..., N(x^r)] with N(z) = z / sqrt(mean(z^2, -1) + eps), overflow-safely.

    With s = max(1, max|x|) per row and u = x / s (so |u| <= 1):
        N(x^i) = u^i / sqrt(mean(u^(2i)) + eps * s^(-2i)),
    the same value as the plain formula (identical when max|x| <= 1), but no
    intermediate exceeds 1 in magnitude, so it stays finite for every finite x
    (x^6 of a bf16 value overflows even float32).
    """
    s = _row_scale(x)
    u = x / s
    out = []
    for i in range(1, order + 1):
        u_pow = u.pow(i)
        eps_scaled = eps * s.pow(-2 * i)
        out.append(u_pow * torch.rsqrt(u_pow.square().mean(-1, keepdim=True) + eps_scaled))
    return out


def poly_relu_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """PolyReLU (PolyCom Type I with rho = ReLU), Zhuo et al. 2025, eq. (2):

        PolyReLU(x) = a_0 + sum_{i=1..r} a_i * relu(x)^i,   a_i = weight[r - i], a_0 = bias

    Elementwise. For x < 0 the output is a_0, not 0.
    """
    r = weight.numel()
    dt = compute_dtype(x.dtype)
    w = weight.to(dt)
    act = torch.relu(x.to(dt))
    out = bias.to(dt).expand_as(act)
    power = torch.ones_like(act)
    for i in range(1, r + 1):
        power = power * act
        out = out + w[r - i] * power
    return out.to(x.dtype)


def poly_norm_reference(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """PolyNorm (PolyCom Type II with rho = RMS normalisation), Zhuo et al. 2025, eq. (3):

        PolyNorm(x) = a_0 + sum_{i=1..r} a_i * N(x^i),   N(z) = z / sqrt(mean(z^2, -1) + eps)

    with a_i = weight[r - i] and a_0 = bias. Not elementwise: N couples all
    features of a row (the MLP hidden vector of one token).
    """
    r = weight.numel()
    dt = compute_dtype(x.dtype)
    xf = x.to(dt)
    w = weight.to(dt)
    out = bias.to(dt).expand_as(xf)
    for i, n_i in enumerate(normalized_powers(xf, r, eps), start=1):
        out = out + w[r - i] * n_i
    return out.to(x.dtype)


def _prelu(x: torch.Tensor, slope: torch.Tensor | None) -> torch.Tensor:
    if slope is None:
        raise ValueError("base 'prelu' needs a slope tensor (argument 'prelu_weight')")
    return F.prelu(x, slope.to(x.dtype))


BASE_FUNCTIONS = {
    "relu": lambda x, eps, slope: torch.relu(x),
    "prelu": lambda x, eps, slope: _prelu(x, slope),
    "gelu": lambda x, eps, slope: F.gelu(x),
    "silu": lambda x, eps, slope: F.silu(x),
    "sigmoid": lambda x, eps, slope: torch.sigmoid(x),
    "rmsnorm": lambda x, eps, slope: rms_normalize(x, eps),
}
"""The base functions rho of general PolyCom (Zhuo et al. 2025, Section 3)."""


def poly_com_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    base: str = "relu",
    kind: str = "I",
    eps: float = 1e-6,
    prelu_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """General PolyCom of order r = len(weight), Zhuo et al. 2025, eq. (1):

        Type I:  PolyCom(x) = a_0 + sum_{i=1..r} a_i * rho(x)^i   (rho, then powers)
        Type II: PolyCom(x) = a_0 + sum_{i=1..r} a_i * rho(x^i)   (powers, then rho)

    with a_i = weight[r - i], a_0 = bias, and rho one of ``BASE_FUNCTIONS``.
    PolyReLU is (relu, I) and PolyNorm is (rmsnorm, II); this direct form is
    used for the other combinations (for 'rmsnorm' it is not overflow-safe the
    way ``poly_norm_reference`` is).
    """
    r = weight.numel()
    rho = BASE_FUNCTIONS[base]
    dt = compute_dtype(x.dtype)
    xf = x.to(dt)
    w = weight.to(dt)
    out = bias.to(dt).expand_as(xf)
    if kind == "I":
        act = rho(xf, eps, prelu_weight)
        terms = [act.pow(i) for i in range(1, r + 1)]
    else:
        terms = [rho(xf.pow(i), eps, prelu_weight) for i in range(1, r + 1)]
    for i, term in enumerate(terms, start=1):
        out = out + w[r - i] * term
    return out.to(x.dtype)


def gated_poly_norm_reference(
    gate: torch.Tensor, up: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """Gated PolyNorm, PolyNorm(gate) * up (Motif's models; with r = 2, Swiss AI's PNGLU).

    Not in the PolyCom paper; the GLU-style use of PolyNorm found in the wild.
    """
    dt = compute_dtype(gate.dtype)
    act = poly_norm_reference(gate.to(dt), weight, bias, eps)
    return (act * up.to(dt)).to(gate.dtype)


def relu2_reference(x: torch.Tensor) -> torch.Tensor:
    """Squared ReLU, relu(x)^2 (So et al. 2021, Primer)."""
    return torch.relu(x).square()


def swiglu_reference(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """SwiGLU, silu(gate) * up (Shazeer 2020)."""
    return F.silu(gate) * up


def geglu_reference(gate: torch.Tensor, up: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """GEGLU, gelu(gate) * up (Shazeer 2020)."""
    return F.gelu(gate, approximate=approximate) * up
