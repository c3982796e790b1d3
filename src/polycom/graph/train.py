"""Full-batch node classification: Polynormer with the paper's two-phase schedule, or a GCN/GAT baseline.

Polynormer (Deng, Yue, Zhang, ICLR 2024, Sec. 4 "training"): the local module is trained alone for
``local_epochs`` (local warm-up, its own head), then the global blocks are switched on and the whole
model trains ``global_epochs`` more from the warmed-up local weights. The baselines (PyTorch
Geometric's 2-layer ``GCN`` and ``GAT``) train ``local_epochs + global_epochs`` epochs.

Model selection is the graph literature's (and the paper's): the reported test accuracy is the one
at the epoch of best validation accuracy (the first such epoch on ties). Seed k fixes the split
(``data.load_graph``), the initial shared weights (``Polynormer``'s construction order) and the
dropout masks (same calls in the same order for every activation), so runs of one seed are paired.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from .data import load_graph
from .model import Polynormer, PolynormerConfig, graph_activation

__all__ = ["GraphTrainConfig", "GraphRunResult", "train_node_classifier", "BASELINE_MODELS", "build_model"]

BASELINE_MODELS = ("gcn", "gat")


@dataclass(frozen=True)
class GraphTrainConfig:
    data: str = "csbm"
    model: str = "polynormer"  # or a baseline: gcn, gat
    activation: str = "relu"  # Polynormer's registry key or "none"; the baselines use relu
    seed: int = 0
    local_epochs: int = 60
    global_epochs: int = 60
    lr: float = 0.005
    weight_decay: float = 5e-4
    hidden: int = 32
    heads: int = 1
    local_layers: int = 2
    global_layers: int = 1
    local_conv: str = "gat"
    beta: float | None = None
    dropout: float = 0.3
    in_dropout: float = 0.1
    global_dropout: float = 0.3
    threads: int | None = None  # torch.set_num_threads for the run (None: leave as is)

    def __post_init__(self):
        if self.model != "polynormer" and self.model not in BASELINE_MODELS:
            raise UsageError(f"model: expected polynormer or one of {', '.join(BASELINE_MODELS)}, got {self.model!r}")
        for name in ("local_epochs", "global_epochs"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise UsageError(f"{name}: expected an integer >= 0, got {getattr(self, name)!r}")
        if self.local_epochs + self.global_epochs == 0:
            raise UsageError("local_epochs: local_epochs + global_epochs must be positive")
        if self.model == "polynormer":
            graph_activation(self.activation)  # an unknown or gated key fails here, naming the field
        if not self.lr > 0:
            raise UsageError(f"lr: expected a positive float, got {self.lr!r}")

    @property
    def label(self) -> str:
        """The comparison's name for this run's arm: the activation for Polynormer, else the baseline model."""
        return self.activation if self.model == "polynormer" else self.model


@dataclass
class GraphRunResult:
    config: dict
    test_acc: float  # at the best-validation epoch
    val_acc: float  # the best validation accuracy
    best_epoch: int
    final_test_acc: float  # at the last epoch, for reference
    num_params: int
    seconds: float
    val_curve: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    ok: bool = True
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def build_model(cfg: GraphTrainConfig, in_channels: int, classes: int) -> nn.Module:
    torch.manual_seed(cfg.seed)
    if cfg.model == "polynormer":
        return Polynormer(PolynormerConfig(
            in_channels, classes, hidden=cfg.hidden, heads=cfg.heads, local_layers=cfg.local_layers,
            global_layers=cfg.global_layers, local_conv=cfg.local_conv, activation=cfg.activation, beta=cfg.beta,
            in_dropout=cfg.in_dropout, dropout=cfg.dropout, global_dropout=cfg.global_dropout))
    from torch_geometric.nn.models import GAT, GCN

    cls = GCN if cfg.model == "gcn" else GAT
    return cls(in_channels, cfg.hidden * cfg.heads, num_layers=2, out_channels=classes, dropout=cfg.dropout)


def _accuracy(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> float:
    return float((logits[mask].argmax(-1) == y[mask]).float().mean())


def train_node_classifier(cfg: GraphTrainConfig, data=None) -> GraphRunResult:
    """Train one run; ``data`` (the loaded graph of ``cfg.seed``) may be passed to skip loading it again."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    data = data if data is not None else load_graph(cfg.data, cfg.seed)
    model = build_model(cfg, data.x.shape[1], int(data.num_classes))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    torch.manual_seed(cfg.seed)  # the dropout masks of seed k, the same for every activation
    start, best, curve, losses = time.perf_counter(), (-1.0, 0.0, -1), [], []
    test_acc = float("nan")
    for epoch in range(cfg.local_epochs + cfg.global_epochs):
        if isinstance(model, Polynormer) and epoch == cfg.local_epochs and cfg.global_layers > 0:
            model.use_global(True)
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(data.x, data.edge_index)[data.train_mask], data.y[data.train_mask])
        if not torch.isfinite(loss):
            return GraphRunResult(asdict(cfg), float("nan"), float("nan"), epoch, float("nan"), _params(model),
                                  time.perf_counter() - start, curve, losses, ok=False,
                                  error=f"non-finite training loss at epoch {epoch}")
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        model.eval()
        with torch.no_grad():
            logits = model(data.x, data.edge_index)
        val_acc, test_acc = _accuracy(logits, data.y, data.val_mask), _accuracy(logits, data.y, data.test_mask)
        curve.append(val_acc)
        if val_acc > best[0]:
            best = (val_acc, test_acc, epoch)
    return GraphRunResult(asdict(cfg), test_acc=best[1], val_acc=best[0], best_epoch=best[2], final_test_acc=test_acc,
                          num_params=_params(model), seconds=time.perf_counter() - start, val_curve=curve,
                          train_loss=losses)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
