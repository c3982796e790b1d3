"""The target functions of the rate sweep, and the smoothness n the theory is read with.

Every target maps x of shape (N, d) to y of shape (N,) in float64. Its random parts
(coefficients, directions) come from a generator seeded by (target, d) only, so every
activation and every model seed fits the same function. Inputs are uniform on
[-1, 1]^d, except ``hermite``, whose inputs are standard Gaussian (the setting of
single-index learning, where the Hermite polynomials are orthogonal).

``smoothness`` is the n of W^{n,inf} used for the predicted rate params^(-n/d)
(Zhuo et al. 2025, Section 2, after Yarotsky 2017); ``math.inf`` marks targets that
are analytic (in every W^{n,inf}, so the theory predicts a rate faster than every
power; the constants grow with n). ``effective_dim`` is the number of directions the
target varies along; the theory's d is the worst case over the unit ball, and targets
that depend on fewer directions can beat it.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from numpy.polynomial import hermite_e

__all__ = ["Target", "TARGETS", "list_targets", "get_target", "target_function", "sample_inputs", "HERMITE_DEGREE"]

HERMITE_DEGREE = 4  # He_4(z) = z^4 - 6 z^2 + 3 (probabilists' Hermite)
BUMP_WIDTH = 0.5  # sigma of the Gaussian bump per unit of sqrt(d): it keeps the bump inside [-1, 1]^d


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    smoothness: float  # n in W^{n,inf}; math.inf for analytic targets
    effective_dim: Callable[[int], int]
    build: Callable[[int, np.random.Generator], Callable[[torch.Tensor], torch.Tensor]]
    gaussian_inputs: bool = False


def _sines(d, rng):
    return lambda x: torch.sin(math.pi * x).prod(-1)


def _bump(d, rng):
    sigma2 = (BUMP_WIDTH ** 2) * d
    return lambda x: torch.exp(-x.square().sum(-1) / (2 * sigma2))


def _cubic(d, rng):
    # p(x) = sum_j a_j x_j^3 + sum_{j<k} b_jk x_j x_k: degree exactly 3 for every d.
    a = torch.from_numpy(rng.standard_normal(d)) / math.sqrt(d)
    b = torch.from_numpy(np.triu(rng.standard_normal((d, d)), k=1)) / max(1.0, math.sqrt(d * (d - 1) / 2))
    return lambda x: x.pow(3) @ a + torch.einsum("nj,jk,nk->n", x, b, x)


def _hermite(d, rng):
    w = rng.standard_normal(d)
    w = torch.from_numpy(w / np.linalg.norm(w))
    coef = [0.0] * HERMITE_DEGREE + [1.0]
    return lambda x: torch.from_numpy(hermite_e.hermeval((x @ w).numpy(), coef))


def _norm_cubed(d, rng):
    return lambda x: x.norm(dim=-1).pow(3)


def _abs_first(d, rng):
    return lambda x: x[:, 0].abs()


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("sines", "prod_j sin(pi x_j)", math.inf, lambda d: d, _sines),
    Target("bump", f"exp(-|x|^2 / (2 sigma^2)), sigma = {BUMP_WIDTH} sqrt(d)", math.inf, lambda d: d, _bump),
    Target("cubic", "sum_j a_j x_j^3 + sum_{j<k} b_jk x_j x_k (degree 3, random a, b)", math.inf,
           lambda d: d, _cubic),
    Target("hermite", f"He_{HERMITE_DEGREE}(<w, x>), |w| = 1, x ~ N(0, I)", math.inf, lambda d: 1, _hermite,
           gaussian_inputs=True),
    Target("norm3", "|x|^3 (third derivatives bounded, not continuous at 0)", 3.0, lambda d: d, _norm_cubed),
    Target("abs", "|x_1| (non-smooth control, Lipschitz)", 1.0, lambda d: 1, _abs_first),
)}


def list_targets() -> list[str]:
    return list(TARGETS)


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}; valid targets: {', '.join(TARGETS)}")
    return TARGETS[name]


def target_function(target: Target, d: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The target's function in dimension d; its random parts depend on (name, d) only."""
    seed = zlib.crc32(f"{target.name}/{d}".encode())
    return target.build(d, np.random.default_rng(seed))


def sample_inputs(target: Target, d: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, d) float64 inputs from the target's input distribution."""
    if target.gaussian_inputs:
        return torch.randn(n, d, generator=generator, dtype=torch.float64)
    return torch.rand(n, d, generator=generator, dtype=torch.float64) * 2 - 1
