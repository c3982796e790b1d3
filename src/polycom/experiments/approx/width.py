"""How much a wide network moves in training: weight and NTK change vs width.

The network, in NTK parameterisation (Jacot et al. 2018), one hidden layer of width W:

    f(x) = (1 / sqrt(W)) * sum_i v_i * phi(u_i . x / sqrt(d)),   u_i ~ N(0, I_d), v_i ~ N(0, 1)

trained with full-batch gradient descent on 1/2 * mean squared error, at a learning
rate and step count that do not depend on W. Measured after the budget: the relative
change of the first-layer weights ||U_T - U_0||_F / ||U_0||_F (and of v), and of the
empirical NTK on the training points, ||K_T - K_0||_F / ||K_0||_F with
K(x, x') = <grad_theta f(x), grad_theta f(x')>.

Theory (Jacot et al. 2018; Dyer & Gur-Ari 2020, derived for smooth, e.g. polynomial,
activations): the weights move by O(W^(-1/2)) relative to their size and the NTK by
O(W^(-1)), so log-log slopes vs width of -1/2 and -1. ReLU and PolyReLU have a kink at
0, outside the derivation's assumptions: the measurement says how far it carries.
PolyReLU's coefficients are frozen at their init (a_1 = a_2 = a_3 = 1/3): one scalar
shared by all W units gets an O(sqrt(W)) gradient in this parameterisation, which
would not be the wide-network limit the theory describes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ...registry import activation_info

__all__ = ["WidthSettings", "WidthPoint", "LOCAL_ACTIVATIONS", "PREDICTED_SLOPES", "width_activation",
           "measure_width"]

# The theory's log-log slopes vs width (module docstring): weights W^(-1/2), NTK W^(-1).
PREDICTED_SLOPES = {"rel_change_u": -0.5, "rel_change_v": -0.5, "rel_change_ntk": -1.0}


class _Power(nn.Module):
    """phi(z) = z^k / sqrt((2k - 1)!!): a monomial with E[phi(z)^2] = 1 for z ~ N(0, 1)."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k
        self.scale = 1.0 / math.sqrt(math.prod(range(1, 2 * k, 2)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.scale * z.pow(self.k)


# Unit-variance monomials for this study only (the registry's "square" is plain x^2; these are
# scaled so every activation starts with outputs of the same size).
LOCAL_ACTIVATIONS = {"monomial2": lambda: _Power(2), "monomial3": lambda: _Power(3)}


def width_activation(name: str) -> nn.Module:
    if name in LOCAL_ACTIVATIONS:
        return LOCAL_ACTIVATIONS[name]()
    info = activation_info(name)
    if info.gated:
        raise ValueError(f"--ntk-activations: {name!r} is gated; the width study uses a plain "
                         f"one-hidden-layer network (valid: {', '.join(LOCAL_ACTIVATIONS)} or a plain activation)")
    act = info.build().to(torch.float64)
    for p in act.parameters():
        p.requires_grad_(False)  # frozen coefficients: see the module docstring
    return act


@dataclass(frozen=True)
class WidthSettings:
    d: int = 8
    n_points: int = 32
    steps: int = 200
    lr: float = 0.2


@dataclass(frozen=True)
class WidthPoint:
    activation: str
    width: int
    seed: int
    rel_change_u: float
    rel_change_v: float
    rel_change_ntk: float
    loss_start: float
    loss_end: float

    def to_dict(self) -> dict:
        return asdict(self)


class _NTKNet(nn.Module):
    def __init__(self, d: int, width: int, act: nn.Module):
        super().__init__()
        self.u = nn.Parameter(torch.randn(width, d, dtype=torch.float64))
        self.v = nn.Parameter(torch.randn(width, dtype=torch.float64))
        self.act = act
        self.d, self.width = d, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, d) -> (N,)
        return self.act(x @ self.u.T / math.sqrt(self.d)) @ self.v / math.sqrt(self.width)


def _ntk(model: _NTKNet, x: torch.Tensor) -> torch.Tensor:
    """K = J J^T with J (N, P) the per-point gradients: N backward passes, any activation."""
    params = [model.u, model.v]
    rows = []
    for xi in x:
        grads = torch.autograd.grad(model(xi.unsqueeze(0)).squeeze(0), params)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    jac = torch.stack(rows)  # (N, P)
    return jac @ jac.T


def _task(settings: WidthSettings, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(10_000 + seed)
    x = torch.randn(settings.n_points, settings.d, generator=g, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True) * math.sqrt(settings.d)  # |x| = sqrt(d): pre-activations ~ N(0, 1)
    return x, torch.sin(x[:, 0]) + 0.5 * x[:, 1] * x[:, 2] / math.sqrt(2)


def measure_width(activation: str, width: int, seed: int, settings: WidthSettings) -> WidthPoint:
    x, y = _task(settings, seed)
    torch.manual_seed(seed)
    model = _NTKNet(settings.d, width, width_activation(activation))
    u0, v0 = model.u.detach().clone(), model.v.detach().clone()
    k0 = _ntk(model, x)
    opt = torch.optim.SGD([model.u, model.v], lr=settings.lr)
    losses = []
    for _ in range(settings.steps):
        opt.zero_grad()
        loss = 0.5 * (model(x) - y).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    kt = _ntk(model, x)
    with torch.no_grad():
        final = float(0.5 * (model(x) - y).square().mean())
        return WidthPoint(activation, width, seed,
                          float((model.u - u0).norm() / u0.norm()), float((model.v - v0).norm() / v0.norm()),
                          float((kt - k0).norm() / k0.norm()), losses[0], final)
