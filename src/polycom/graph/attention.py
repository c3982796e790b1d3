"""Polynormer's global attention, O(N) in nodes, and the full softmax attention it replaces.

Deng, Yue, Zhang, "Polynormer: Polynomial-Expressive Graph Transformer in Linear Time",
ICLR 2024 (arXiv 2403.01232), the equivariant global attention of Sec. 3: the attention
scores are a kernel of sigmoid queries and keys, s(i, j) = sigma(q_i) . sigma(k_j) >= 0, so
the attention output of node i,

    a_i = sum_j s(i, j) v_j / sum_j s(i, j)
        = sigma(q_i)^T (sigma(K)^T V) / sigma(q_i)^T (sigma(K)^T 1),

is computed right to left: sigma(K)^T V is one (d x d) matrix per head, built in O(N d^2),
and every node reads it in O(d^2). The N x N score matrix is never formed. The softmax
attention softmax(Q K^T / sqrt(d)) V of a standard graph transformer is kept here as the
quadratic reference of ``benchmarks/bench_graph_attention.py``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["linear_global_attention", "softmax_attention"]


def linear_global_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """a_i = sigma(q_i)^T (sigma(K)^T V) / (sigma(q_i)^T (sigma(K)^T 1) + eps), per head.

    ``q``, ``k``, ``v``: (N, heads, d) pre-sigmoid queries and keys and values; returns
    (N, heads, d). ``eps`` guards the denominator, which is positive for any finite input
    (a sum of N products of sigmoids); it is the same 1e-6 as PyTorch Geometric's
    ``PolynormerAttention``.
    """
    sq, sk = torch.sigmoid(q), torch.sigmoid(k)
    kv = torch.einsum("nhd,nhe->hde", sk, v)  # (heads, d, d): sum_j sigma(k_j) v_j^T
    numerator = torch.einsum("nhd,hde->nhe", sq, kv)  # (N, heads, d)
    denominator = torch.einsum("nhd,hd->nh", sq, sk.sum(0)).unsqueeze(-1)  # (N, heads, 1)
    return numerator / (denominator + eps)


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d)) V per head, the N x N score matrix formed: O(N^2) time and memory.

    Same shapes as ``linear_global_attention``."""
    scores = torch.einsum("nhd,mhd->hnm", q, k) / math.sqrt(q.shape[-1])  # (heads, N, N)
    return torch.einsum("hnm,mhd->nhd", scores.softmax(-1), v)
