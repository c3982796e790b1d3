"""The learned PolyCom coefficients a_0..a_r of every MLP (and every expert), and their trajectory.

Reported in the paper's order, ``[a_0, a_1, ..., a_r]`` (Zhuo et al. 2025, Eq. 2-3:
a_0 + sum_i a_i rho(x)^i or a_0 + sum_i a_i rho(x^i)); the modules store them in
the official checkpoint layout, ``bias`` = a_0 and ``weight[0]`` = a_r, so
``a_i = weight[r - i]``. Init: a_i = 1/r, a_0 = 0; how far training moves them
from there says which powers the model uses.
"""

from __future__ import annotations

import re

from torch import nn

from ..activations import GatedPolyNorm, PolyCom
from ..models.structure import layer_of, mlp_activations

__all__ = ["activation_coefficients", "coefficient_trajectory"]

_EXPERT = re.compile(r"(?:^|\.)experts\.(\d+)$")


def _paper_order(module: nn.Module) -> list[float]:
    w = module.weight.detach().float().cpu().tolist()  # [a_r, ..., a_1]
    return [float(module.bias.detach().float().cpu()[0])] + w[::-1]


def activation_coefficients(model: nn.Module) -> list[dict]:
    """One row per PolyCom module inside an MLP activation: name, layer, expert, kind, order, [a_0..a_r].
    Empty for fixed activations (GELU, SwiGLU...); ``AnalysisError`` if the model has no MLP activation."""
    rows = []
    for act in mlp_activations(model):
        for sub, m in act.module.named_modules():
            if isinstance(m, (PolyCom, GatedPolyNorm)):
                e = _EXPERT.search(sub)
                rows.append({"name": f"{act.name}.{sub}" if sub else act.name, "layer": layer_of(act.name),
                             "expert": int(e.group(1)) if e else None, "activation": type(m).__name__,
                             "order": m.order, "a": _paper_order(m)})
    return rows


def coefficient_trajectory(snapshots: list[tuple[int, list[dict]]]) -> dict:
    """From [(step, activation_coefficients rows), ...] to {"steps": [...], "a": {name: [[a_0..a_r] per step]}}."""
    snapshots = sorted(snapshots, key=lambda s: s[0])
    names = [r["name"] for r in snapshots[0][1]] if snapshots else []
    by_step = [{r["name"]: r["a"] for r in rows} for _, rows in snapshots]
    return {"steps": [s for s, _ in snapshots], "a": {n: [rows[n] for rows in by_step] for n in names}}
