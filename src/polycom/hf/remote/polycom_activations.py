"""PolyCom activations in plain PyTorch, for model folders loaded without polycom.

This file is copied verbatim into every model folder polycom saves (with
``modeling_polycom.py`` / ``modeling_polycom_swap.py``), so it may import only
torch and transformers. If the ``polycom`` package is importable, every
activation is polycom's own module (fused kernels, every registered name);
otherwise the modules below compute the same functions in plain PyTorch. The
formulas are polycom's reference (``polycom.reference``; Zhuo et al.,
"Polynomial Composition Activations", ICLR 2025), and a polycom test compares
them with it. Imports of polycom stay inside ``try`` (or go through importlib): transformers
refuses remote code whose other imports are missing.

Coefficient layout (the official PolyCom checkpoints): ``weight`` (r,) with
``weight[0]`` the highest power, ``bias`` (1,) = a_0.
"""

from __future__ import annotations

import importlib
import math

import torch
import torch.nn.functional as F
from torch import nn

try:
    import polycom  # fused kernels and every registered activation
except ImportError:
    polycom = None

__all__ = ["poly_norm", "poly_relu", "gated_poly_norm", "build_activation", "is_gated", "register_act2fn",
           "ACTIVATIONS", "uses_polycom"]


def uses_polycom() -> bool:
    """True when the activations are polycom's own modules."""
    return polycom is not None


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def normalized_powers(x: torch.Tensor, order: int, eps: float) -> list[torch.Tensor]:
    """[N(x^1), ..., N(x^r)], N(z) = z / sqrt(mean(z^2, -1) + eps), computed on u = x / s with
    s = max(1, max|x|) per row (N(x^i) = u^i / sqrt(mean(u^2i) + eps s^-2i)): no power overflows."""
    s = x.abs().amax(-1, keepdim=True).clamp(min=1.0)
    u = x / s
    out = []
    for i in range(1, order + 1):
        u_pow = u.pow(i)
        out.append(u_pow * torch.rsqrt(u_pow.square().mean(-1, keepdim=True) + eps * s.pow(-2 * i)))
    return out


def poly_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """PolyNorm(x) = a_0 + sum_{i=1..r} a_i N(x^i), a_i = weight[r - i], a_0 = bias (Zhuo et al. 2025, eq. 3)."""
    r = weight.numel()
    dt = _compute_dtype(x.dtype)
    xf, w = x.to(dt), weight.to(dt)
    out = bias.to(dt).expand_as(xf)
    for i, n_i in enumerate(normalized_powers(xf, r, eps), start=1):
        out = out + w[r - i] * n_i
    return out.to(x.dtype)


def poly_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """PolyReLU(x) = a_0 + sum_{i=1..r} a_i relu(x)^i (Zhuo et al. 2025, eq. 2)."""
    r = weight.numel()
    dt = _compute_dtype(x.dtype)
    w = weight.to(dt)
    act = torch.relu(x.to(dt))
    out = bias.to(dt).expand_as(act)
    power = torch.ones_like(act)
    for i in range(1, r + 1):
        power = power * act
        out = out + w[r - i] * power
    return out.to(x.dtype)


def gated_poly_norm(gate: torch.Tensor, up: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                    eps: float = 1e-6) -> torch.Tensor:
    """PolyNorm(gate) * up (Motif's models; order 2: Swiss AI's PNGLU)."""
    dt = _compute_dtype(gate.dtype)
    return (poly_norm(gate.to(dt), weight, bias, eps) * up.to(dt)).to(gate.dtype)


class _Coefficients(nn.Module):
    """``weight`` (r,) and ``bias`` (1,), the PolyCom init a_i = 1/r, a_0 = 0."""

    def __init__(self, order: int = 3):
        super().__init__()
        self.order = order
        self.weight = nn.Parameter(torch.full((order,), 1.0 / order))
        self.bias = nn.Parameter(torch.zeros(1))


class PolyReLU(_Coefficients):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return poly_relu(x, self.weight, self.bias)


class PolyNorm(_Coefficients):
    """PolyNorm; the keyword options are Motif's bounded form: y = s P(clamp(x, +-c_x); sigmoid(w), clamp(b, +-c_b))."""

    def __init__(self, order: int = 3, eps: float = 1e-6, *, sigmoid_coefficients: bool = False,
                 bias_bound: float | None = None, output_scale: float = 1.0, input_bound: float | None = None):
        super().__init__(order)
        self.eps = eps
        self.sigmoid_coefficients, self.bias_bound = sigmoid_coefficients, bias_bound
        self.output_scale, self.input_bound = output_scale, input_bound
        if sigmoid_coefficients:  # the stored logits of a_i = 1/r (order 1 starts at a_1 = 1/2)
            with torch.no_grad():
                self.weight.fill_(-math.log(order - 1) if order > 1 else 0.0)

    def bounded(self, x: torch.Tensor):
        """(x, weight, bias) for the plain formula, Motif's maps applied (identity for the paper's PolyNorm)."""
        weight, bias = self.weight, self.bias
        if self.sigmoid_coefficients:
            weight = torch.sigmoid(weight)
        if self.bias_bound is not None:
            bias = bias.clamp(-self.bias_bound, self.bias_bound)
        if self.output_scale != 1.0:
            weight, bias = weight * self.output_scale, bias * self.output_scale
        if self.input_bound is not None:
            x = x.clamp(-self.input_bound, self.input_bound)
        return x, weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return poly_norm(*self.bounded(x), self.eps)


class GatedPolyNorm(PolyNorm):
    def forward(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        gate, weight, bias = self.bounded(gate)
        return gated_poly_norm(gate, up, weight, bias, self.eps)


class ReLU2(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x).square()


class SwiGLU(nn.Module):
    def forward(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return F.silu(gate) * up


class GEGLU(nn.Module):
    def __init__(self, approximate: str = "none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return F.gelu(gate, approximate=self.approximate) * up


_MOTIF = {"sigmoid_coefficients": True, "bias_bound": 0.5, "output_scale": 0.5, "input_bound": 1e6}

# name -> (module class, default keyword arguments, gated): polycom's registry entries of these names.
ACTIVATIONS = {
    "polynorm": (PolyNorm, {}, False),
    "motif_polynorm": (PolyNorm, _MOTIF, False),
    "polyrelu": (PolyReLU, {}, False),
    "gated_polynorm": (GatedPolyNorm, {}, True),
    "pnglu": (GatedPolyNorm, {"order": 2}, True),
    "motif_gated_polynorm": (GatedPolyNorm, _MOTIF, True),
    "relu": (nn.ReLU, {}, False),
    "gelu": (nn.GELU, {}, False),
    "gelu_tanh": (nn.GELU, {"approximate": "tanh"}, False),
    "silu": (nn.SiLU, {}, False),
    "relu2": (ReLU2, {}, False),
    "swiglu": (SwiGLU, {}, True),
    "geglu": (GEGLU, {}, True),
}
POLYCOM_ONLY_KWARGS = ("implementation",)  # options of polycom's kernels; the plain modules have one path


def _entry(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r} needs the polycom package (pip install polycom); without it this "
                         f"model folder runs {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def build_activation(name: str, kwargs: dict | None = None) -> nn.Module:
    """A new module for activation ``name`` (polycom's when importable)."""
    kwargs = dict(kwargs or {})
    if polycom is not None:
        return polycom.get_activation(name, **kwargs)
    cls, defaults, _ = _entry(name)
    for key in POLYCOM_ONLY_KWARGS:
        kwargs.pop(key, None)
    return cls(**{**defaults, **kwargs})


def is_gated(name: str) -> bool:
    """Whether ``name`` takes (gate, up)."""
    if polycom is not None:
        return polycom.activation_info(name).gated
    return _entry(name)[2]


def register_act2fn() -> None:
    """Make ``config.hidden_act`` accept polycom's non-gated names (``ACT2FN["polynorm"]``, ...), where free."""
    from transformers.activations import ACT2FN

    if polycom is not None:
        importlib.import_module("polycom.hf")  # registers polycom's own modules
        return
    for name, (cls, defaults, gated) in ACTIVATIONS.items():
        if not gated and name not in ACT2FN:
            ACT2FN[name] = (cls, defaults)
