"""``analyze_model(model, input_ids)`` for any nn.Module, ``analyze(path)`` for a run or checkpoint.

    from polycom.analysis import analyze, analyze_model
    result = analyze("runs/tiny")              # writes runs/tiny/analysis/analysis.json and PNGs
    result["similarity"]["consecutive"]        # cos(h_{l-1}, h_l) per block
    analyze_model(hf_model, input_ids)         # the same numbers for a Hugging Face model, in memory

Every number in analysis.json is computed here from ``rank``, ``similarity`` and
``coefficients``; the plots only draw it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import plots
from .coefficients import activation_coefficients, coefficient_trajectory
from .load import checkpoint_step, load_model, resolve_run, validation_inputs
from .rank import matrix_ranks, rank_summary
from .similarity import consecutive_similarity, cosine_similarity_matrix, hidden_states
from ..models.structure import mlp_activations

__all__ = ["analyze_model", "analyze", "default_out_dir"]


def analyze_model(model: nn.Module, input_ids: torch.Tensor | None = None) -> dict:
    """Effective ranks and PolyCom coefficients of ``model``; with ``input_ids`` (B, T), the layer similarity."""
    acts = mlp_activations(model)  # AnalysisError for a model without MLP activations
    rows = matrix_ranks(model)
    result = {"model": type(model).__name__, "mlp_activations": [a.name for a in acts],
              "activation_types": sorted({type(a.module).__name__ for a in acts}),
              "effective_rank": {"matrices": rows, **rank_summary(rows)},
              "coefficients": activation_coefficients(model)}
    if input_ids is not None:
        device = next(model.parameters()).device
        S = cosine_similarity_matrix(hidden_states(model, input_ids.to(device)))
        consecutive = consecutive_similarity(S)
        result["similarity"] = {"tokens": int(input_ids.numel()), "matrix": S.tolist(), "consecutive": consecutive,
                                "mean_consecutive": float(np.mean(consecutive)) if consecutive else math.nan}
    return result


def default_out_dir(path: Path) -> Path:
    """RUN/analysis for a run; for checkpoints/step_N of a run, RUN/analysis-step_N (pruning would delete
    a folder inside the checkpoint); else CKPT/analysis."""
    path = Path(path)
    if path.parent.name == "checkpoints" and (path.parent.parent / "config.yaml").exists():
        return path.parent.parent / f"analysis-{path.name}"
    return path / "analysis"


def analyze(path: str | Path, out: str | Path | None = None, n_sequences: int = 8,
            similarity: bool = True, plot: bool = True) -> dict:
    """Analyse the final checkpoint of a run (or one checkpoint): writes ``analysis.json`` and PNGs to ``out``.

    ``n_sequences`` validation windows feed the layer similarity. A run folder also gets the
    coefficient trajectory over its kept checkpoints (``train.keep_checkpoints`` sets how many).
    """
    run = resolve_run(path)
    final = run.checkpoints[-1]
    model = load_model(final, run.config)
    inputs = validation_inputs(run.config, n_sequences) if similarity else None
    result = {"source": str(path), "checkpoint": str(final), "step": checkpoint_step(final),
              "activation": model.config.activation, **analyze_model(model, inputs)}
    snapshots = []
    for folder in run.checkpoints:  # the same model object, each checkpoint's weights in turn
        snapshots.append((checkpoint_step(folder), activation_coefficients(load_model(folder, run.config, model))))
    result["coefficient_trajectory"] = coefficient_trajectory(snapshots)
    out = Path(out) if out is not None else default_out_dir(Path(path))
    out.mkdir(parents=True, exist_ok=True)
    (out / "analysis.json").write_text(json.dumps(result, indent=1))
    if plot:
        result["figures"] = [str(p) for p in plots.plot_all(result, out)]
    return result
