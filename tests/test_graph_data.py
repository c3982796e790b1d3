"""polycom.graph.data: the CSBM generator, the karate club, loaders of PyG's file formats read from files
these tests write, and the one-line errors on bad graphs."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch

pytest.importorskip("torch_geometric")

from polycom.errors import UsageError  # noqa: E402
from polycom.graph.data import check_graph, csbm_graph, edge_homophily, karate_graph, load_graph  # noqa: E402


@pytest.mark.parametrize("h", [0.1, 0.5, 0.9])
def test_csbm_homophily_and_degree_follow_the_knobs(h):
    data = csbm_graph(n=600, classes=3, degree=8.0, homophily=h, seed=1)
    # ~2400 undirected edges: the share's binomial sd is ~0.01, so 0.05 is a 5-sigma bound
    assert abs(edge_homophily(data) - h) < 0.05
    assert abs(data.edge_index.shape[1] / 600 - 8.0) < 0.6  # mean degree 8, sd of the mean ~0.1
    assert torch.equal(torch.bincount(data.y), torch.full((3,), 200))


def test_csbm_features_carry_the_class_signal():
    """Nearest class mean, means fitted on half the nodes and scored on the other half."""
    strong, none = csbm_graph(n=600, signal=3.0, seed=2), csbm_graph(n=600, signal=0.0, seed=2)

    def held_out_accuracy(d):
        fit, score = torch.arange(600) < 300, torch.arange(600) >= 300
        means = torch.stack([d.x[fit & (d.y == c)].mean(0) for c in range(3)])
        return float((torch.cdist(d.x[score], means).argmin(1) == d.y[score]).float().mean())
    assert held_out_accuracy(strong) > 0.8
    assert held_out_accuracy(none) < 0.45  # chance 1/3; 300 scored nodes: sd 0.027, so 0.45 is 4 sd


def test_split_depends_on_the_seed_only_and_is_stratified():
    a, b, c = load_graph("csbm:n=120", seed=0), load_graph("csbm:n=120", seed=0), load_graph("csbm:n=120", seed=1)
    assert torch.equal(a.train_mask, b.train_mask) and not torch.equal(a.train_mask, c.train_mask)
    assert torch.equal(a.x, c.x)  # one graph, seeds vary the split
    assert not (a.train_mask & a.val_mask).any() and not (a.train_mask & a.test_mask).any()
    assert bool((a.train_mask | a.val_mask | a.test_mask).all())
    assert torch.bincount(a.y[a.train_mask]).tolist() == [20, 20, 20]


def test_karate_club():
    data = load_graph("karate", seed=0)
    assert data.num_nodes == 34 and data.edge_index.shape[1] == 2 * 78 and data.num_classes == 2
    assert torch.bincount(data.y).tolist() == [17, 17]  # networkx's 'club': Mr. Hi 17, Officer 17
    assert int(data.y[0]) == 0 and int(data.y[33]) == 1  # the instructor and the administrator
    assert torch.equal(karate_graph().y, data.y)


def _ring_graph(n=40, classes=4, seed=0):
    g = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = g.normal(size=(n, 6)).astype(np.float32)
    edges = np.stack([np.arange(n), (np.arange(n) + 1) % n], 1)
    extra = g.integers(0, n, size=(30, 2))
    edges = np.concatenate([edges, extra[extra[:, 0] != extra[:, 1]]])
    return x, y, edges


def _as_set(edge_index):
    return {tuple(e) for e in edge_index.t().tolist()}


def _undirected(edges):
    return {(int(a), int(b)) for a, b in edges} | {(int(b), int(a)) for a, b in edges}


def test_planetoid_from_local_files(tmp_path):
    import scipy.sparse as sp

    n_train, n_val_pad, n_test, classes = 20, 500, 30, 3  # PyG's reader takes 500 validation nodes after train
    n = n_train + n_val_pad + n_test
    g = np.random.default_rng(0)
    x = g.random((n, 5)).astype(np.float32)
    y = np.eye(classes)[np.arange(n) % classes]
    test_index = np.arange(n_train + n_val_pad, n)[::-1]  # reversed: the reader must reorder them
    raw = tmp_path / "cora" / "raw"
    raw.mkdir(parents=True)
    graph = {i: [(i + 1) % n, (i - 1) % n] for i in range(n)}
    objects = {"x": sp.csr_matrix(x[:n_train]), "y": y[:n_train], "allx": sp.csr_matrix(x[:n_train + n_val_pad]),
               "ally": y[:n_train + n_val_pad], "tx": sp.csr_matrix(x[test_index]), "ty": y[test_index],
               "graph": graph}
    for name, obj in objects.items():
        with open(raw / f"ind.cora.{name}", "wb") as f:
            pickle.dump(obj, f)
    (raw / "ind.cora.test.index").write_text("\n".join(map(str, test_index)) + "\n")
    data = load_graph(f"planetoid:{tmp_path / 'cora'}")
    torch.testing.assert_close(data.x, torch.from_numpy(x), rtol=0, atol=0)
    assert data.y.tolist() == (np.arange(n) % classes).tolist()
    assert _as_set(data.edge_index) == _undirected([(i, (i + 1) % n) for i in range(n)])
    assert int(data.train_mask.sum()) == n_train and int(data.test_mask.sum()) == n_test


def test_heterophilous_npz_from_local_files(tmp_path):
    x, y, edges = _ring_graph()
    n = len(y)
    g = np.random.default_rng(1)
    order = np.stack([g.permutation(n) for _ in range(10)])  # (10 splits, N)
    masks = {part: np.stack([np.isin(np.arange(n), o[sl]) for o in order])
             for part, sl in (("train", slice(0, 20)), ("val", slice(20, 30)), ("test", slice(30, n)))}
    raw = tmp_path / "roman_empire" / "raw"
    raw.mkdir(parents=True)
    np.savez(raw / "roman_empire.npz", node_features=x, node_labels=y, edges=edges,
             train_masks=masks["train"], val_masks=masks["val"], test_masks=masks["test"])
    for seed in (0, 3, 13):
        data = load_graph(f"heterophilous:{tmp_path / 'roman_empire'}", seed=seed)
        assert data.train_mask.tolist() == masks["train"][seed % 10].tolist()
    torch.testing.assert_close(data.x, torch.from_numpy(x), rtol=0, atol=0)
    assert data.y.tolist() == y.tolist() and data.num_classes == 4
    assert _as_set(data.edge_index) == _undirected(edges)


def _write_csv_gz(path, array, fmt):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        np.savetxt(f, array, delimiter=",", fmt=fmt)


def test_ogb_raw_layout_from_local_files(tmp_path):
    x, y, edges = _ring_graph(n=30, classes=3)
    root = tmp_path / "ogbn_tiny"
    _write_csv_gz(root / "raw" / "node-feat.csv.gz", x, "%.8g")
    _write_csv_gz(root / "raw" / "node-label.csv.gz", y[:, None], "%d")
    _write_csv_gz(root / "raw" / "edge.csv.gz", edges, "%d")
    for part, idx in (("train", np.arange(0, 15)), ("valid", np.arange(15, 21)), ("test", np.arange(21, 30))):
        _write_csv_gz(root / "split" / "random" / f"{part}.csv.gz", idx[:, None], "%d")
    data = load_graph(f"ogb:{root}")
    torch.testing.assert_close(data.x, torch.from_numpy(x))
    assert data.y.tolist() == y.tolist() and data.num_classes == 3
    assert _as_set(data.edge_index) == _undirected(edges)
    assert data.val_mask.nonzero().view(-1).tolist() == list(range(15, 21))


def _good():
    data = load_graph("csbm:n=60", seed=0)
    return data.clone()


@pytest.mark.parametrize("break_it,argument", [
    (lambda d: setattr(d, "edge_index", torch.empty(2, 0, dtype=torch.long)), "edge_index"),
    (lambda d: setattr(d, "edge_index", d.edge_index[:, (d.edge_index != 0).all(0)]), "edge_index"),  # node 0 isolated
    (lambda d: d.y.__setitem__(3, 7), "y"),
    (lambda d: d.y.__setitem__(3, -1), "y"),
    (lambda d: d.x.__setitem__((5, 2), float("nan")), "x"),
    (lambda d: setattr(d, "train_mask", d.train_mask & (d.y != 1)), "train_mask"),
    (lambda d: setattr(d, "test_mask", torch.zeros_like(d.test_mask)), "test_mask"),
])
def test_bad_graphs_get_one_line_errors_naming_the_argument(break_it, argument):
    data = _good()
    check_graph(data)
    break_it(data)
    with pytest.raises(UsageError, match=f"^{argument}: ") as e:
        check_graph(data)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("source,message", [("cs bm", "^data: expected"), ("csbm:homophily=2", "^homophily:"),
                                            ("csbm:colour=1", "^data: unknown CSBM key"),
                                            ("planetoid:/nonexistent/cora", "^data: planetoid:PATH")])
def test_bad_sources(source, message):
    with pytest.raises(UsageError, match=message):
        load_graph(source)


def test_sparse_csbm_gives_isolated_nodes_an_edge():
    """At mean degree 1 about e^-1 of the nodes would draw no edge; each gets one, so the graph passes."""
    data = load_graph("csbm:n=200,degree=1.0", seed=0)
    assert int(torch.bincount(data.edge_index.reshape(-1), minlength=200).min()) >= 1
    assert data.edge_index.shape[1] < 2 * 200 * 1.0  # ~200 drawn + ~70 added, far from a dense graph
