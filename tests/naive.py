"""Naive float64 formulas of the activations, written independently of polycom.

Tests compare polycom's reference and fast paths against these. They are the
paper's definitions typed out directly (no overflow care, no dtype handling):
evaluate them in float64 on values where that is exact enough.
"""

import torch
import torch.nn.functional as F


def naive_poly_relu(x, weight, bias):
    x, weight, bias = x.double(), weight.double(), bias.double()
    r = weight.shape[0]
    out = bias[0] + torch.zeros_like(x)
    for i in range(1, r + 1):
        out = out + weight[r - i] * F.relu(x) ** i
    return out


def naive_poly_norm(x, weight, bias, eps=1e-6):
    x, weight, bias = x.double(), weight.double(), bias.double()
    r = weight.shape[0]
    out = bias[0] + torch.zeros_like(x)
    for i in range(1, r + 1):
        z = x**i
        out = out + weight[r - i] * z / torch.sqrt((z * z).mean(dim=-1, keepdim=True) + eps)
    return out


def naive_gated_poly_norm(gate, up, weight, bias, eps=1e-6):
    return naive_poly_norm(gate, weight, bias, eps) * up.double()


def naive_poly_com(x, weight, bias, base, kind, eps=1e-6, prelu_slope=0.25):
    x, weight, bias = x.double(), weight.double(), bias.double()
    rho = {
        "relu": F.relu,
        "prelu": lambda t: torch.where(t >= 0, t, prelu_slope * t),
        "gelu": lambda t: 0.5 * t * (1 + torch.erf(t / 2**0.5)),
        "silu": lambda t: t / (1 + torch.exp(-t)),
        "sigmoid": lambda t: 1 / (1 + torch.exp(-t)),
        "rmsnorm": lambda t: t / torch.sqrt((t * t).mean(-1, keepdim=True) + eps),
    }[base]
    r = weight.shape[0]
    out = bias[0] + torch.zeros_like(x)
    for i in range(1, r + 1):
        term = rho(x) ** i if kind == "I" else rho(x**i)
        out = out + weight[r - i] * term
    return out
