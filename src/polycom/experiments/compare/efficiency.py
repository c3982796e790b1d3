"""Token efficiency: how many of the baseline's tokens an activation needs to reach
the baseline's final validation loss.

For seed k, target = the baseline's last validation loss L_b(T). On the activation's
curve (tokens t_i, loss L_i) take the first eval point with L_i <= target and
interpolate linearly between it and the point before, giving t*; the multiplier is
t* / T. Below 1: the activation gets there with fewer tokens. An activation that never
reaches the target within the budget has a multiplier above 1 that the curve cannot
resolve: it is reported as censored (``reached=False``, value ``nan``), never
extrapolated. Linear interpolation makes the answer exact for piecewise-linear curves
and second-order accurate between eval points for smooth ones, so the eval schedule
must resolve the curve (``compare`` validates at least 10 times per run).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["TokenMultiplier", "tokens_to_reach", "token_multiplier"]


@dataclass(frozen=True)
class TokenMultiplier:
    value: float  # t* / T; nan when not reached
    reached: bool


def tokens_to_reach(tokens, losses, target: float) -> float:
    """First token count at which the piecewise-linear curve (tokens, losses) reaches
    ``target`` (loss <= target); nan if it never does. Before the first eval point the
    curve is unknown, so a first point already at the target gives that point's tokens."""
    t, y = np.asarray(tokens, dtype=float), np.asarray(losses, dtype=float)
    if t.shape != y.shape or t.ndim != 1 or t.size == 0:
        raise ValueError("tokens_to_reach: tokens and losses must be equal-length, non-empty 1-D sequences")
    if np.any(np.diff(t) <= 0):
        raise ValueError("tokens_to_reach: tokens must be strictly increasing")
    hits = np.flatnonzero(y <= target)
    if hits.size == 0:
        return math.nan
    i = int(hits[0])
    if i == 0:
        return float(t[0])
    # Between (t[i-1], y[i-1] > target) and (t[i], y[i] <= target).
    frac = (y[i - 1] - target) / (y[i - 1] - y[i])
    return float(t[i - 1] + frac * (t[i] - t[i - 1]))


def token_multiplier(act_tokens, act_losses, base_tokens, base_losses) -> TokenMultiplier:
    """Tokens the activation needs to reach the baseline's final loss, over the baseline's tokens."""
    target, budget = float(base_losses[-1]), float(base_tokens[-1])
    t_star = tokens_to_reach(act_tokens, act_losses, target)
    if math.isnan(t_star):
        return TokenMultiplier(math.nan, False)
    return TokenMultiplier(t_star / budget, True)
