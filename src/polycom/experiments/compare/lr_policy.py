"""How ``polycom compare`` gives every activation its own learning rate.

A comparison at one shared LR measures the LR as much as the activation: an activation
whose best LR is 2x the shared one loses by the shape of the LR curve, not by its
quality. So each activation (at each model size, in scaling mode) is trained at every LR
of a geometric grid, on the full schedule of the comparison's runs, with the tuning seed,
and the LR with the lowest final validation loss is used for all of its seeds.

- **The grid follows the optimum.** A best LR at the grid's edge says the optimum may lie
  beyond it, so the grid is extended by one step (the initial grid's ratio) past that edge,
  and the new point trained, until the best is interior or ``lr_grid_extensions`` steps were
  added on that side (then the report says the optimum may lie outside).
- **Sensitivity**: the mean extra loss at the best LR's grid neighbours (one grid step
  away), so a reader sees how much a mistuned LR would have cost.
- **Sizes between tuned sizes** (scaling mode, ``lr_tune_sizes: ends``): the LR is
  interpolated linearly in (log non-embedding parameters, log LR) between the smallest
  and the largest size, each tuned on its own full schedule.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

__all__ = ["choose_lr", "choose_lrs", "grid_ratio", "next_grid_point", "interpolate_lrs"]


def grid_ratio(grid: list[float]) -> float:
    """The geometric step of a grid: (max / min) ** (1 / (n - 1))."""
    lo, hi = min(grid), max(grid)
    return (hi / lo) ** (1.0 / (len(grid) - 1))


def choose_lr(lrs: list[float], losses: list[float], tie_tolerance: float = 0.0) -> dict:
    """The LR of one (activation, size) from its grid runs: the smallest LR whose final validation
    loss is within ``tie_tolerance`` of the lowest (the one-standard-error rule of model selection,
    Breiman et al. 1984: among settings one run cannot tell apart, the conservative one). Smaller,
    because the loss rises gently below the optimum and steeply and erratically above it, where
    one seed's good run at the edge of stability is the next seed's loss spike. ``at_edge`` is
    "low" or "high" when the chosen LR is the grid's smallest or largest (a diverged neighbour
    beyond it makes it interior: the optimum is bracketed); ``lowest_loss_lr`` is the plain argmin."""
    order = sorted(range(len(lrs)), key=lambda i: lrs[i])
    grid = [float(lrs[i]) for i in order]
    values = [float(losses[i]) for i in order]
    finite = [i for i, v in enumerate(values) if math.isfinite(v)]
    if not finite:
        return {"grid": grid, "val_loss": values, "best_lr": None, "lowest_loss_lr": None, "at_edge": None,
                "sensitivity": math.nan}
    lowest = min(finite, key=lambda i: values[i])
    chosen = min(i for i in finite if values[i] <= values[lowest] + tie_tolerance)
    extra = [values[j] - values[chosen] for j in (chosen - 1, chosen + 1)
             if 0 <= j < len(values) and math.isfinite(values[j])]
    edge = "low" if chosen == 0 else ("high" if chosen == len(grid) - 1 else None)
    return {"grid": grid, "val_loss": values, "best_lr": grid[chosen], "lowest_loss_lr": grid[lowest],
            "at_edge": edge,
            # No finite neighbour (both diverged): a factor of the grid step costs everything.
            "sensitivity": float(np.mean(extra)) if extra else math.inf}


def choose_lrs(lr_records, tie_tolerance: float = 0.0) -> dict[tuple[str, str], dict]:
    """``choose_lr`` for every (activation, size) of the LR phase's records (a failed run's loss is nan)."""
    groups = defaultdict(list)
    for r in lr_records:
        groups[(r.activation, r.size)].append(r)
    return {key: choose_lr([r.lr for r in recs], [r.val_loss if r.ok else math.nan for r in recs], tie_tolerance)
            for key, recs in groups.items()}


def next_grid_point(choice: dict, initial_grid: list[float], max_extensions: int) -> float | None:
    """The LR to train next for one (activation, size), or None when its best is interior, when
    every run failed, or when ``max_extensions`` steps were already added past that edge."""
    edge = choice["at_edge"]
    if edge is None or choice["best_lr"] is None:
        return None
    ratio = grid_ratio(initial_grid)
    lo, hi = min(initial_grid), max(initial_grid)
    # Points outside the initial grid on that side; a relative tolerance absorbs float round-off.
    added = [lr for lr in choice["grid"] if (lr < lo * (1 - 1e-9) if edge == "low" else lr > hi * (1 + 1e-9))]
    if len(added) >= max_extensions:
        return None
    return choice["best_lr"] / ratio if edge == "low" else choice["best_lr"] * ratio


def interpolate_lrs(params: dict[str, float], tuned: dict[str, float]) -> dict[str, float]:
    """LR per size, linear in (log parameters, log LR) through the tuned sizes; a size outside the
    tuned range takes the nearest tuned size's LR (no extrapolation). ``params``: size -> non-embedding
    parameters for every size; ``tuned``: size -> best LR for the tuned ones (at least one)."""
    if not tuned:
        raise ValueError("interpolate_lrs: no tuned size")
    points = sorted((math.log(params[s]), math.log(lr)) for s, lr in tuned.items())
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return {s: float(math.exp(np.interp(math.log(n), xs, ys))) for s, n in params.items()}
