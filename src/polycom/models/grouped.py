"""Rows grouped by expert and the grouped matmul: the batched core of every MoE expert layout.

The MoE (``moe.py``) sorts its M routed (token, expert) rows by expert, so each expert's rows
are one contiguous group; ``ExpertGroups`` describes the groups with device tensors only
(counts and group ends, never read on the host), and ``grouped_linear`` multiplies every row by
its own expert's matrix. Nothing here depends on the routing's values through a Python value:
every shape is a function of (M, E) alone, so a layer runs without a host synchronisation and
``torch.compile(fullgraph=True)`` traces it whole. The experts of the plain and gated kinds
(``moe.py``) and of the kinds with their own layer (``mlp.py``'s Mu-layer, ``af_kan.py``) all
use it.

Two paths compute the same products (``grouped_linear``):

- ``torch._grouped_mm`` (PyTorch's grouped GEMM: rows of group e times matrix e, group ends
  given as a device tensor) where it runs without reading the group ends on the host:
  bfloat16 on CUDA sm90, and sm100 from torch 2.9 (its fused kernel; on other GPUs it falls back
  to a loop over the groups, which reads them); on CPU (torch >= 2.9; 2.8 has no CPU kernel) bfloat16, and float32
  outside ``torch.compile`` (its shape function, which compile traces, accepts bfloat16 only);
  row lengths that keep 16-byte-aligned strides.
- elsewhere (float64, float32 under compile, odd widths, other devices, torch < 2.9) fixed-size
  tiles: each group is padded to whole tiles of b rows, and one ``torch.bmm`` multiplies every
  tile by its expert's matrix. The tile count T = (M + E (b - 1)) // b bounds
  sum_e ceil(count_e / b) whatever the routing, so the buffer's shape is static. With
  b = ceil(M / 2E) the padding is under E b < M / 2 + E rows (at most ~1.5 times the products)
  and T <= 3E tiles, so the gathered weights are at most 3E expert matrices. The static
  alternatives cost E times the products: a buffer of capacity M per expert, or every row
  times every expert.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["ExpertGroups", "grouped_linear", "StackedExperts", "planned_device"]


@dataclass
class ExpertGroups:
    """The M routed rows sorted by expert; group e is rows [ends[e] - counts[e], ends[e])."""

    expert: torch.Tensor  # (M,) int64, non-decreasing: the expert of each row
    counts: torch.Tensor  # (E,) int64 rows per expert, on the rows' device
    ends: torch.Tensor  # (E,) int32 cumulative counts: the ``offs`` of torch._grouped_mm
    _tiles: dict = field(default_factory=dict, repr=False)  # tile size -> (row position, tile expert)

    @classmethod
    def from_sorted(cls, sorted_expert: torch.Tensor, num_experts: int) -> "ExpertGroups":
        # scatter_add into E slots, not bincount: bincount's output size depends on the values.
        counts = torch.zeros(num_experts, dtype=torch.int64, device=sorted_expert.device)
        counts = counts.scatter_add(0, sorted_expert, torch.ones_like(sorted_expert))
        return cls(sorted_expert, counts, torch.cumsum(counts, 0).to(torch.int32))

    @property
    def num_experts(self) -> int:
        return self.counts.shape[0]

    def tiles(self, block: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(position (M,) of each row in the tiled buffer, expert (T,) of each tile, T).

        Expert e's tiles follow those of experts < e; a tile holds rows of one expert only,
        and the tiles after the last used one hold nothing (their expert is clamped to E - 1)."""
        if block not in self._tiles:
            rows, E = self.expert.shape[0], self.num_experts
            per_expert = (self.counts + block - 1) // block  # (E,) tiles of each expert
            tile_end = torch.cumsum(per_expert, 0)  # (E,)
            first_tile = tile_end - per_expert
            start = (self.ends.to(torch.int64) - self.counts)[self.expert]  # (M,) start of each row's group
            position = first_tile[self.expert] * block + torch.arange(rows, device=self.expert.device) - start
            count = (rows + E * (block - 1)) // block  # >= sum_e ceil(count_e / block) for any routing
            tile = torch.arange(count, device=self.expert.device)
            tile_expert = torch.searchsorted(tile_end, tile, right=True).clamp_(max=E - 1)  # (T,)
            self._tiles[block] = (position, tile_expert, count)
        return self._tiles[block]


def _tile_rows(rows: int, num_experts: int) -> int:
    """b = ceil(M / 2E): padding under E b = M / 2 rows, at most 3E + 1 tiles (see the module docstring)."""
    return max(1, -(-rows // (2 * num_experts)))


# Memory planning (train/memory_plan.py) traces the model on meta, where a tensor cannot tell which
# path the planned machine takes; the two save different tensors for backward (the tiles and the
# gathered expert matrices, or x alone), so the planner names the device.
_PLANNED_DEVICE: contextvars.ContextVar[str | None] = contextvars.ContextVar("planned_device", default=None)


@contextlib.contextmanager
def planned_device(device_type: str):
    """Within: meta tensors take the path ``grouped_linear`` takes on ``device_type`` ("cpu" or
    "cuda", the latter assumed a GPU with the fused grouped GEMM: Hopper or newer)."""
    token = _PLANNED_DEVICE.set(device_type)
    try:
        yield
    finally:
        _PLANNED_DEVICE.reset(token)


def _grouped_mm_runs(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``torch._grouped_mm`` takes these operands with no host sync (see the module docstring)."""
    if not hasattr(torch, "_grouped_mm") or x.dtype != weight.dtype or x.shape[0] == 0:
        return False
    if any(n * x.element_size() % 16 for n in weight.shape[1:]):  # its row strides must be 16-byte multiples
        return False
    device = x.device.type
    if device == "meta":  # a constant under compile: the context variable is read only while planning
        device = _PLANNED_DEVICE.get() or "meta"
    if device == "cpu":
        cpu_dtype = x.dtype == torch.bfloat16 or (x.dtype == torch.float32 and not torch.compiler.is_compiling())
        return _TORCH_2_9 and cpu_dtype
    return device == "cuda" and x.dtype == torch.bfloat16 and (x.is_meta or _cuda_fused_grouped_mm(x.device.index))


_TORCH_2_9 = torch.torch_version.TorchVersion(torch.__version__) >= (2, 9)


def _cuda_fused_grouped_mm(index: int | None) -> bool:
    major = torch.cuda.get_device_capability(index)[0]
    return major == 9 or (major == 10 and _TORCH_2_9)  # its fused kernel: Hopper, Blackwell from torch 2.9


# A constant of the device: Dynamo calls it once and keeps the answer (no query in the graph). The
# mark torch.compiler.assume_constant_result sets, set without it: that decorator imports Dynamo.
_cuda_fused_grouped_mm._dynamo_marked_constant = True


class _GroupedMM(torch.autograd.Function):
    """``torch._grouped_mm`` of x (M, in) and each group's ``weight[e].T``, with a backward that takes a
    gradient of any layout: torch's own backward passes it on as given, and its kernel refuses an
    expanded one (``y.sum()``: stride 0). Backward, group e: dx_e = g_e W_e, dW_e = g_e^T x_e."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight, ends)
        if x.is_meta:  # planning (planned_device): torch's meta function takes bf16 only, the CPU kernel fp32 too
            return x.new_empty(x.shape[0], weight.shape[1])
        return torch._grouped_mm(x, weight.transpose(1, 2), offs=ends)  # (M, out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, ends = ctx.saved_tensors
        grad = grad.contiguous()  # (M, out)
        dx = torch._grouped_mm(grad, weight, offs=ends) if ctx.needs_input_grad[0] else None  # (M, in)
        # 2-D x 2-D: the groups split the contraction over rows; an empty group gives zeros.
        dw = torch._grouped_mm(grad.t(), x, offs=ends) if ctx.needs_input_grad[1] else None  # (E, out, in)
        return dx, dw, None


def grouped_linear(x: torch.Tensor, weight: torch.Tensor, groups: ExpertGroups) -> torch.Tensor:
    """Row i of x times expert ``groups.expert[i]``'s matrix: x (M, in), weight (E, out, in) -> (M, out)."""
    device = x.device.type
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        # _grouped_mm is outside autocast's op lists: cast as autocast casts bmm (float64 is left alone).
        dtype = torch.get_autocast_dtype(device)
        x, weight = (t if t.dtype == torch.float64 else t.to(dtype) for t in (x, weight))
    if _grouped_mm_runs(x, weight):
        return _GroupedMM.apply(x.contiguous(), weight, groups.ends)  # (M, out)
    E, _, n_in = weight.shape
    block = _tile_rows(x.shape[0], E)
    position, tile_expert, count = groups.tiles(block)
    tiled = x.new_zeros(count * block, n_in).index_copy(0, position, x).view(count, block, n_in)  # (T, b, in)
    out = torch.bmm(tiled, weight[tile_expert].transpose(1, 2))  # (T, b, out)
    return out.flatten(0, 1).index_select(0, position)  # (M, out)


class StackedExperts(nn.Module):
    """Base of the MoE experts of an MLP kind with its own layer (``MLPKind.build_experts``).

    A subclass holds each expert matrix stacked as one (E, out, in) parameter in
    ``nn.Linear`` layout (expert e's matrix is ``param[e]``, made by ``stacked``) and each
    per-expert vector as one flat (E * n,) parameter (``stacked_vector``; flat so that the
    optimizer's rule "ndim >= 2: weight decay" leaves gains and biases undecayed, as
    in the dense layer), and implements ``forward(xs, groups) -> (M, d_model)`` with
    ``grouped_linear``: row i of xs goes through expert ``groups.expert[i]`` only.
    Parameters made otherwise are shared by the experts.
    """

    OUT_WEIGHTS: tuple[str, ...] = ("down_proj",)  # matrices writing to the residual stream

    def __init__(self, num_experts: int):
        super().__init__()
        self.num_experts = num_experts
        self._per_expert: set[str] = set()

    def stacked(self, name: str, out_features: int, in_features: int) -> None:
        """Register ``name``: an (E, out, in) expert matrix, N(0, 0.02^2) until the model's init replaces it."""
        self._per_expert.add(name)
        self.register_parameter(name, nn.Parameter(
            torch.empty(self.num_experts, out_features, in_features).normal_(std=0.02)))

    def stacked_vector(self, name: str, size: int, fill: float) -> None:
        """Register ``name``: E vectors of ``size`` held flat (E * size,), every entry ``fill``."""
        self._per_expert.add(name)
        self.register_parameter(name, nn.Parameter(torch.full((self.num_experts * size,), float(fill))))

    def per_row(self, name: str, groups: ExpertGroups) -> torch.Tensor:
        """Each routed row's expert's vector ``name``: (M, size)."""
        return getattr(self, name).view(self.num_experts, -1)[groups.expert]

    def stacked_weights(self):
        """(name, parameter, is_output) of every stacked matrix, for the model's initialisation."""
        for name, p in self.named_parameters(recurse=False):
            if name in self._per_expert and p.dim() == 3:
                yield name, p, name in self.OUT_WEIGHTS

    def active_params(self, top_k: int) -> int:
        """Parameters one token touches: top_k experts' tensors and every shared one."""
        return sum(top_k * p.numel() // self.num_experts if name in self._per_expert else p.numel()
                   for name, p in self.named_parameters())
