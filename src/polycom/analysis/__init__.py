"""Inside a trained model: effective rank of the weights, layer-to-layer similarity, PolyCom coefficients.

    from polycom.analysis import analyze, analyze_model, effective_rank
    analyze("runs/tiny")                 # `polycom analyze runs/tiny`: analysis.json + PNGs
    analyze_model(model, input_ids)      # any polycom or Hugging Face model, in memory

What each number means and which paper it comes from: docs/analysis.md.
"""

from ..extras import require

require("lab", "polycom.analysis")  # one line naming the extra, before a bare ModuleNotFoundError

from .coefficients import activation_coefficients, coefficient_trajectory
from .rank import effective_rank, matrix_ranks, rank_summary
from .report import analyze, analyze_model
from .similarity import consecutive_similarity, cosine_similarity_matrix, hidden_states
from ..models.structure import AnalysisError, mlp_activations, weight_matrices

__all__ = ["analyze", "analyze_model", "effective_rank", "matrix_ranks", "rank_summary", "hidden_states",
           "cosine_similarity_matrix", "consecutive_similarity", "activation_coefficients",
           "coefficient_trajectory", "AnalysisError", "mlp_activations", "weight_matrices"]
