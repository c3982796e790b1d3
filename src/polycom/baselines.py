"""Baseline activations; they live in ``polycom.activations.baselines`` (this name is kept for old imports)."""

from .activations.baselines import GEGLU, ReLU2, SwiGLU

__all__ = ["ReLU2", "SwiGLU", "GEGLU"]
