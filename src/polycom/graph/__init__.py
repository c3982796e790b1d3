"""Polynormer on graphs: the model, offline node-classification data and the activation comparison.

Needs PyTorch Geometric (``pip install "polycom[graph]"``); ``import polycom`` does not import it.
See docs/graph.md.
"""

from __future__ import annotations

try:
    import torch_geometric  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError('polycom.graph needs PyTorch Geometric: pip install "polycom[graph]"') from e

from .attention import linear_global_attention, softmax_attention
from .model import Polynormer, PolynormerConfig, graph_activation

__all__ = ["Polynormer", "PolynormerConfig", "graph_activation", "linear_global_attention", "softmax_attention"]
