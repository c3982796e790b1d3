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
    "powers_inv_rms",
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


def powers_inv_rms(x: torch.Tensor, order: int, eps: float) -> list[torch.Tensor]:
    """[1/rms(x^1), ..., 1/rms(x^r)] per row, with rms(z) = sqrt(mean(z^2) + eps).

    Evaluated overflow-safely: with s = max(1, max|x|) per row and u = x / s,
    mean(x^(2i)) + eps = s^(2i) * (mean(u^(2i)) + eps / s^(2i)), so
    1/rms(x^i) = s^(-i) * rsqrt(mean(u^(2i)) + eps * s^(-2i)). When max|x| <= 1,
    s = 1 and this is the plain formula; for larger rows no intermediate
    exceeds 1 in magnitude, so x^6 never overflows (bf16 values up to 3e38).
    Returns a list of r tensors of shape (..., 1).
    """
    s = x.abs().amax(-1, keepdim=True).clamp(min=1.0)  # (..., 1)
    u = x / s
    inv = []
    for i in range(1, order + 1):
        s_pow = s.pow(-i)  # s^(-i), in (0, 1]
        mean_u = u.pow(2 * i).mean(-1, keepdim=True)
        inv.append(s_pow * torch.rsqrt(mean_u + eps * s_pow * s_pow))
    return inv


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
    inv = powers_inv_rms(xf, r, eps)
    out = bias.to(dt).expand_as(xf)
    power = torch.ones_like(xf)
    for i in range(1, r + 1):
        power = power * xf
        out = out + w[r - i] * (power * inv[i - 1])
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
