"""Cosine similarity between the hidden states of the layers, on real tokens.

h_0 is the input of the first block (the embeddings), h_l the output of block l
(the residual stream, before the final norm). For two layers i, j:

    S_ij = mean over tokens t of  <h_i(t), h_j(t)> / (|h_i(t)| |h_j(t)|)

S is symmetric with ones on the diagonal; S_{l-1,l} (consecutive layers) near 1
means block l barely changed the representation. Zhuo et al. (2025, Section 5)
report lower layer-to-layer similarity for PolyCom models. Cosine ignores scale,
so a final norm without a direction change would not change S.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.structure import find_blocks

__all__ = ["hidden_states", "cosine_similarity_matrix", "consecutive_similarity"]


def _tensor(out) -> torch.Tensor:
    """A block's hidden state: polycom blocks return (x, aux), HF ones (x, ...) or x."""
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def hidden_states(model: nn.Module, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """[h_0, h_1, ..., h_L] for ``input_ids`` (B, T), each (B, T, d) in float32, from hooks on the blocks."""
    blocks = find_blocks(model)
    states: list[torch.Tensor] = []
    handles = [blocks[0].register_forward_pre_hook(
        lambda _m, args, kwargs: states.append(_tensor(args or tuple(kwargs.values())).float()), with_kwargs=True)]
    handles += [b.register_forward_hook(lambda _m, _a, out: states.append(_tensor(out).float())) for b in blocks]
    was_training = model.training
    model.eval()
    try:
        model(input_ids)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return states


def cosine_similarity_matrix(states: list[torch.Tensor]) -> torch.Tensor:
    """S (L+1, L+1) in float64: S_ij = mean over tokens of cos(h_i, h_j); states (..., d) of equal shape."""
    flat = torch.stack([s.reshape(-1, s.shape[-1]).double() for s in states])  # (L+1, N, d)
    unit = flat / flat.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    return torch.einsum("ind,jnd->ijn", unit, unit).mean(-1)  # (L+1, L+1)


def consecutive_similarity(matrix: torch.Tensor) -> list[float]:
    """[S_01, S_12, ..., S_{L-1,L}]: how much each block keeps of its input's direction."""
    return torch.diagonal(matrix, offset=1).tolist()
