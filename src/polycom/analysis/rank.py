"""Effective rank of the weight matrices (Roy & Vetterli 2007), grouped by layer and kind.

    erank(W) = exp(H(p)),  p_k = sigma_k / sum_j sigma_j,  H(p) = -sum_k p_k log p_k

with sigma_k the singular values of W (0 log 0 = 0). It runs from 1 (rank one) to
min(out, in) (all singular values equal), and counts how many directions a matrix
really uses. Zhuo et al. (2025, Section 5) report higher effective rank for PolyCom
models' weights than for SwiGLU/ReLU ones.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from torch import nn

from ..models.structure import Matrix, weight_matrices

__all__ = ["effective_rank", "matrix_ranks", "rank_summary"]


def effective_rank(matrix: torch.Tensor) -> float:
    """exp of the Shannon entropy of the normalised singular values (float64 SVD)."""
    if matrix.ndim != 2:
        raise ValueError(f"effective_rank expects a 2-d matrix, got shape {tuple(matrix.shape)}")
    sigma = torch.linalg.svdvals(matrix.detach().to("cpu", torch.float64))
    total = sigma.sum()
    if total <= 0:
        return 0.0  # the zero matrix has no direction at all
    p = sigma / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def matrix_ranks(model: nn.Module) -> list[dict]:
    """One row per matrix: name, layer, kind, expert, shape, effective rank, and its ceiling min(out, in)."""
    return [_row(m) for m in weight_matrices(model)]


def _row(m: Matrix) -> dict:
    return {"name": m.name, "layer": m.layer, "kind": m.kind, "expert": m.expert, "shape": list(m.weight.shape),
            "effective_rank": effective_rank(m.weight), "max_rank": min(m.weight.shape)}


def rank_summary(rows: list[dict]) -> dict:
    """Means of the rows grouped by layer and kind (experts: "up/expert" etc., averaged over experts),
    by kind over layers, and the mean ratio effective_rank / max_rank (comparable across widths)."""
    by_layer: dict = defaultdict(lambda: defaultdict(list))
    by_kind: dict = defaultdict(list)
    for r in rows:
        kind = r["kind"] + ("/expert" if r["expert"] is not None else "")
        by_layer[str(r["layer"])][kind].append(r["effective_rank"])
        by_kind[kind].append(r["effective_rank"])
    ratio = [r["effective_rank"] / r["max_rank"] for r in rows if r["max_rank"]]
    return {"by_layer": {layer: {k: float(np.mean(v)) for k, v in kinds.items()} for layer, kinds in by_layer.items()},
            "by_kind": {k: float(np.mean(v)) for k, v in by_kind.items()},
            "mean_ratio": float(np.mean(ratio)) if ratio else float("nan")}
