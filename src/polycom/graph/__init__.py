"""Polynormer on graphs: the model, offline node-classification data and the activation comparison.

Needs PyTorch Geometric (``pip install "polycom[graph]"``); ``import polycom`` does not import it.
See docs/graph.md.
"""

from __future__ import annotations

from ..extras import require

require("graph", "polycom.graph")  # one line naming the extra, before a bare ModuleNotFoundError

from .attention import linear_global_attention, softmax_attention
from .model import Polynormer, PolynormerConfig, graph_activation

__all__ = ["Polynormer", "PolynormerConfig", "graph_activation", "linear_global_attention", "softmax_attention"]
