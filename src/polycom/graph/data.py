"""Node-classification graphs, offline: the contextual stochastic block model (the embedded default),
Zachary's karate club (the real graph networkx ships), and PyTorch Geometric's file formats read from
local folders (Planetoid, the heterophilous graphs, OGB node property prediction).

Every graph comes back as a ``torch_geometric.data.Data`` with ``x`` (N, F) float, ``edge_index``
(2, E) long, ``y`` (N,) long, ``num_classes``, and boolean ``train_mask``/``val_mask``/``test_mask``
(N,) for the split of the requested seed, then passes ``check_graph`` (one-line errors that name the
argument). The split depends only on the seed, so seed k of every activation trains on the same nodes.

Sources (``--data``):
    csbm[:key=value,...]   n, classes, features, degree, homophily, signal (``csbm_graph``)
    karate                 Zachary (1977): 34 members, the two factions after the split; one-hot node features
    planetoid:PATH         PATH/raw/ind.NAME.{x,tx,allx,y,ty,ally,graph,test.index}, NAME = PATH's folder name
                           (cora, citeseer, pubmed); the public split
    heterophilous:PATH     PATH/raw/NAME.npz (roman_empire, amazon_ratings, ...); split = seed mod 10
    ogb:PATH               OGB's raw layout: PATH/raw/{edge,node-feat,node-label}.csv.gz and
                           PATH/split/*/{train,valid,test}.csv.gz
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.utils import to_undirected

from ..errors import UsageError

__all__ = ["csbm_graph", "karate_graph", "load_graph", "check_graph", "random_split", "edge_homophily",
           "CSBM_DEFAULTS"]

CSBM_DEFAULTS = dict(n=400, classes=3, features=16, degree=8.0, homophily=0.3, signal=0.5)


def csbm_graph(n: int = 400, classes: int = 3, features: int = 16, degree: float = 8.0, homophily: float = 0.3,
               signal: float = 0.5, seed: int = 0) -> Data:
    """A contextual stochastic block model (Deshpande et al. 2018), the Polynormer ablations' kind of synthetic graph.

    Labels y_i uniform over ``classes`` (balanced, shuffled); features x_i = mu_{y_i} + e_i with class means
    mu_c ~ N(0, signal^2 / features * I) and noise e_i ~ N(0, I / features), so signal is the ratio of class
    separation to noise per node. Each unordered pair {i, j} is an edge with probability p_in if y_i = y_j,
    else p_out, chosen so that a node has ``degree`` neighbours on average and a share ``homophily`` of
    them in its own class:
        p_in = homophily * degree / (n / C),   p_out = (1 - homophily) * degree / (n - n / C).
    homophily = 1 / C is a graph that ignores the labels; 0 joins only different classes.
    """
    for name, value in dict(n=n, classes=classes, features=features).items():
        if not isinstance(value, int) or value < 1:
            raise UsageError(f"{name}: expected a positive integer, got {value!r}")
    if not 0.0 <= homophily <= 1.0:
        raise UsageError(f"homophily: expected a share in [0, 1], got {homophily!r}")
    per_class = n / classes
    p_in, p_out = homophily * degree / per_class, (1 - homophily) * degree / (n - per_class)
    if not (0 <= p_in <= 1 and 0 <= p_out <= 1):
        raise UsageError(f"degree: {degree} is too large for n={n}, classes={classes}, homophily={homophily}")
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    y = y[torch.randperm(n, generator=g)]
    means = torch.randn(classes, features, generator=g) * signal / math.sqrt(features)
    x = means[y] + torch.randn(n, features, generator=g) / math.sqrt(features)
    prob = torch.where(y[:, None] == y[None, :], p_in, p_out)  # (n, n)
    upper = torch.triu(torch.rand(n, n, generator=g) < prob, diagonal=1)
    edges = upper.nonzero().t()
    # A node left without an edge (probability ~e^-degree each) gets one, to a node of its own class
    # with probability ``homophily``, so that every generated graph passes ``check_graph``.
    degree = torch.bincount(edges.reshape(-1), minlength=n)
    extra = []
    for i in (degree == 0).nonzero().view(-1).tolist():
        same = bool(torch.rand(1, generator=g) < homophily) or classes == 1
        pool = ((y == y[i]) if same else (y != y[i])).nonzero().view(-1)
        pool = pool[pool != i]
        extra.append((i, int(pool[torch.randint(len(pool), (1,), generator=g)])))
    if extra:
        edges = torch.cat([edges, torch.tensor(extra).t()], dim=1)
    edge_index = to_undirected(edges, num_nodes=n)
    return Data(x=x, edge_index=edge_index, y=y, num_classes=classes)


def karate_graph() -> Data:
    """Zachary's karate club from networkx (BSD-3; a dependency of torch): 34 nodes, 78 edges, the label
    the faction each member joined ('Mr. Hi' 0, 'Officer' 1); features one-hot node ids, as usual."""
    import networkx as nx

    g = nx.karate_club_graph()
    y = torch.tensor([0 if g.nodes[i]["club"] == "Mr. Hi" else 1 for i in g.nodes])
    edges = torch.tensor(list(g.edges), dtype=torch.long).t()
    return Data(x=torch.eye(len(y)), edge_index=to_undirected(edges, num_nodes=len(y)), y=y, num_classes=2)


def random_split(y: torch.Tensor, seed: int, train: float = 0.5, val: float = 0.25) -> tuple[torch.Tensor, ...]:
    """Stratified masks: per class, a ``train`` share for training, ``val`` for validation, the rest test
    (at least one node of each class in each part where the class has three or more)."""
    g = torch.Generator().manual_seed(10_000 + seed)
    masks = [torch.zeros_like(y, dtype=torch.bool) for _ in range(3)]
    for c in y.unique().tolist():
        idx = (y == c).nonzero().view(-1)
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_train = max(1, round(train * len(idx)))
        n_val = max(1, round(val * len(idx))) if len(idx) - n_train >= 2 else 0
        masks[0][idx[:n_train]] = True
        masks[1][idx[n_train:n_train + n_val]] = True
        masks[2][idx[n_train + n_val:]] = True
    return tuple(masks)


def edge_homophily(data: Data) -> float:
    """Share of edges whose two ends have the same label."""
    src, dst = data.edge_index
    return float((data.y[src] == data.y[dst]).float().mean())


def check_graph(data: Data, allow_isolated: bool = False) -> Data:
    """One-line errors, naming the argument, for what would train silently on a wrong graph."""
    n = data.x.shape[0] if data.x is not None else 0
    if n == 0 or data.x.dim() != 2:
        raise UsageError(f"x: expected node features of shape (N, F) with N > 0, got {tuple(data.x.shape)}")
    bad = ~torch.isfinite(data.x)
    if bad.any():
        node = int(bad.any(1).nonzero()[0])
        raise UsageError(f"x: {int(bad.sum())} feature values are NaN or infinite (first at node {node})")
    ei = data.edge_index
    if ei is None or ei.numel() == 0:
        raise UsageError("edge_index: the graph has no edges")
    if ei.dim() != 2 or ei.shape[0] != 2 or int(ei.min()) < 0 or int(ei.max()) >= n:
        raise UsageError(f"edge_index: expected (2, E) node ids in [0, {n}), got shape {tuple(ei.shape)} "
                         f"with ids in [{int(ei.min())}, {int(ei.max())}]")
    if not allow_isolated:
        degree = torch.bincount(ei.reshape(-1), minlength=n)
        if (degree == 0).any():
            iso = (degree == 0).nonzero().view(-1)
            raise UsageError(f"edge_index: {len(iso)} isolated nodes (no edge), e.g. node {int(iso[0])}; "
                             "the local attention cannot reach them (pass allow_isolated=True to train anyway)")
    y, classes = data.y, int(data.num_classes)
    if y.shape != (n,) or int(y.min()) < 0 or int(y.max()) >= classes:
        raise UsageError(f"y: expected {n} labels in [0, {classes}), got shape {tuple(y.shape)} "
                         f"with labels in [{int(y.min())}, {int(y.max())}]")
    for part in ("train_mask", "val_mask", "test_mask"):
        mask = getattr(data, part, None)
        if mask is None or mask.shape != (n,) or mask.dtype != torch.bool:
            raise UsageError(f"{part}: expected a boolean mask of {n} nodes")
        present = torch.bincount(y[mask], minlength=classes)
        if part == "train_mask" and (present == 0).any():
            raise UsageError(f"{part}: class {int((present == 0).nonzero()[0])} has no node in the training split")
        if not mask.any():
            raise UsageError(f"{part}: the split is empty")
    return data


def _with_split(data: Data, seed: int) -> Data:
    data.train_mask, data.val_mask, data.test_mask = random_split(data.y, seed)
    return data


def _csbm_args(spec: str) -> dict:
    args = dict(CSBM_DEFAULTS)
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        if key not in CSBM_DEFAULTS:
            raise UsageError(f"data: unknown CSBM key {key!r} (keys: {', '.join(CSBM_DEFAULTS)})")
        args[key] = type(CSBM_DEFAULTS[key])(value)
    return args


def load_graph(source: str, seed: int = 0) -> Data:
    """The graph and seed ``seed``'s split for a ``--data`` source (module docstring). The CSBM graph is
    drawn once (graph seed 0) for every seed, so seeds vary the split and the weights, not the graph."""
    kind, _, rest = source.partition(":")
    if kind == "csbm":
        data = _with_split(csbm_graph(**_csbm_args(rest), seed=0), seed)
    elif kind == "karate":
        data = _with_split(karate_graph(), seed)
    elif kind in ("planetoid", "heterophilous", "ogb"):
        path = Path(rest).expanduser()
        if not rest or not (path / ("split" if kind == "ogb" else "raw")).is_dir():
            raise UsageError(f"data: {kind}:PATH needs a folder with raw/{' and split/' if kind == 'ogb' else ''} "
                             f"in PyTorch Geometric's {kind} layout, got {rest!r}")
        data = {"planetoid": _planetoid, "heterophilous": _heterophilous, "ogb": _ogb}[kind](path, seed)
    else:
        raise UsageError(f"data: expected csbm[:k=v,...], karate, planetoid:PATH, heterophilous:PATH or ogb:PATH, "
                         f"got {source!r}")
    return check_graph(data, allow_isolated=kind in ("planetoid", "ogb"))


def _planetoid(path: Path, seed: int) -> Data:
    from torch_geometric.datasets import Planetoid

    ds = Planetoid(str(path.parent), path.name)
    data = ds[0]
    data.num_classes = ds.num_classes
    return data


def _heterophilous(path: Path, seed: int) -> Data:
    from torch_geometric.datasets import HeterophilousGraphDataset

    ds = HeterophilousGraphDataset(str(path.parent), path.name)
    data = ds[0]
    split = seed % data.train_mask.shape[1]
    data.train_mask, data.val_mask, data.test_mask = (m[:, split] for m in (data.train_mask, data.val_mask,
                                                                              data.test_mask))
    data.num_classes = ds.num_classes
    return data


def _csv_gz(path: Path, dtype) -> np.ndarray:
    with gzip.open(path, "rt") as f:
        return np.loadtxt(f, delimiter=",", dtype=dtype, ndmin=2)


def _ogb(path: Path, seed: int) -> Data:
    """OGB node property prediction's raw files (the layout ``ogb.nodeproppred`` reads), made undirected."""
    raw = path / "raw"
    x = torch.from_numpy(_csv_gz(raw / "node-feat.csv.gz", np.float32))
    y = torch.from_numpy(_csv_gz(raw / "node-label.csv.gz", np.float64)).view(-1)
    if torch.isnan(y).any():
        raise UsageError("y: node-label.csv.gz has unlabelled (NaN) nodes; only fully labelled graphs are supported")
    y = y.long()
    edges = torch.from_numpy(_csv_gz(raw / "edge.csv.gz", np.int64)).t()
    splits = sorted(p for p in (path / "split").iterdir() if p.is_dir())
    if len(splits) != 1:
        raise UsageError(f"data: {path / 'split'} should hold one split folder (OGB's layout), found "
                         f"{[p.name for p in splits]}")
    split = splits[0]
    masks = []
    for part in ("train", "valid", "test"):
        mask = torch.zeros(len(y), dtype=torch.bool)
        mask[torch.from_numpy(_csv_gz(split / f"{part}.csv.gz", np.int64)).view(-1)] = True
        masks.append(mask)
    return Data(x=x, edge_index=to_undirected(edges, num_nodes=len(y)), y=y, num_classes=int(y.max()) + 1,
                train_mask=masks[0], val_mask=masks[1], test_mask=masks[2])
