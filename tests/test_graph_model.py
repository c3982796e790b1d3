"""polycom.graph's Polynormer against dense float64 formulas (tests/naive.py), gradcheck, and
PyTorch Geometric's own ``Polynormer`` with the same weights."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("torch_geometric")

from naive import (  # noqa: E402
    naive_gat,
    naive_gcn,
    naive_layer_norm,
    naive_linear_attention,
    naive_softmax_attention,
)
from polycom.errors import UsageError  # noqa: E402
from polycom.graph import Polynormer, PolynormerConfig, linear_global_attention, softmax_attention  # noqa: E402

# float64 throughout: the dense and the O(N) forms sum the same products in a different order, so they
# agree to a few ulps times N; 1e-10 is ~1e5 ulps, far below any formula error (which is O(1)).
TOL = dict(rtol=1e-10, atol=1e-10)


def _graph(n=12, p=0.3, seed=0, symmetric=False):
    """A random simple graph (no self-loops, no duplicate edges), every node with an in-edge."""
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, n, generator=g) < p
    a.fill_diagonal_(False)
    a[torch.arange(n), (torch.arange(n) + 1) % n] = True  # a ring: no isolated node
    if symmetric:
        a = a | a.t()
    return a.nonzero().t().contiguous()  # (2, E): row source, column target


@pytest.mark.parametrize("heads,d", [(1, 4), (3, 5)])
def test_linear_attention_equals_dense_scores(heads, d):
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(17, heads, d, generator=g, dtype=torch.float64) * 2 for _ in range(3))
    torch.testing.assert_close(linear_global_attention(q, k, v), naive_linear_attention(q, k, v), **TOL)
    torch.testing.assert_close(softmax_attention(q, k, v), naive_softmax_attention(q, k, v), **TOL)


def test_linear_attention_gradcheck():
    q, k, v = (torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(linear_global_attention, (q, k, v))


def test_linear_attention_is_permutation_equivariant():
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(9, 2, 3, generator=g, dtype=torch.float64) for _ in range(3))
    perm = torch.randperm(9, generator=g)
    out = linear_global_attention(q, k, v)
    torch.testing.assert_close(linear_global_attention(q[perm], k[perm], v[perm]), out[perm], **TOL)


def _act(module, x):
    """The registry activation itself (tested against tests/naive.py in test_activations.py)."""
    return module(x)


def _naive_local(model, x, edge_index):
    """x_local = sum_l x_l with x_l = (1 - beta) LN(h * y) + beta y, the paper's local update, typed out."""
    c = model.config
    x = x.double()
    if model.input is not None:
        x = x @ model.input.weight.double().t() + model.input.bias.double()
    total = 0
    for i, layer in enumerate(model.local_layers):
        h = _act(model.local_acts[2 * i], x @ layer.h_lin.weight.double().t() + layer.h_lin.bias.double())
        if c.local_conv == "gat":
            conv = naive_gat(x, edge_index, layer.conv.lin.weight, layer.conv.att_src, layer.conv.att_dst, c.heads)
        else:
            conv = naive_gcn(x, edge_index, layer.conv.lin.weight, layer.conv.bias)
        y = _act(model.local_acts[2 * i + 1], conv + x @ layer.skip.weight.double().t() + layer.skip.bias.double())
        beta = c.beta if c.beta is not None else torch.sigmoid(model.local_beta.logit[i].double())
        x = (1 - beta) * naive_layer_norm(h * y, layer.norm.weight, layer.norm.bias) + beta * y
        total = total + x
    return total


def _naive_forward(model, x, edge_index):
    c = model.config
    x_local = _naive_local(model, x, edge_index)
    if not model.global_enabled:
        return x_local @ model.pred_local.weight.double().t() + model.pred_local.bias.double()
    x = naive_layer_norm(x_local, model.global_norm.weight, model.global_norm.bias)
    n = x.shape[0]
    for i, blk in enumerate(model.global_blocks):
        k = (x @ blk.k.weight.double().t()).view(n, c.heads, c.hidden)
        q = k if blk.q is None else (x @ blk.q.weight.double().t()).view(n, c.heads, c.hidden)
        v = (x @ blk.v.weight.double().t()).view(n, c.heads, c.hidden)
        a = naive_linear_attention(q, k, v).reshape(n, -1)
        beta = c.beta if c.beta is not None else torch.sigmoid(model.global_beta.logit[i].double())
        h = x @ blk.h_lin.weight.double().t() + blk.h_lin.bias.double()
        inner = naive_layer_norm(a, blk.norm.weight, blk.norm.bias) * (h + beta)
        x = _act(model.global_acts[i], inner @ blk.out.weight.double().t() + blk.out.bias.double())
    return x @ model.pred_global.weight.double().t() + model.pred_global.bias.double()


CASES = [
    dict(local_conv="gat", heads=2, activation="none", beta=None),
    dict(local_conv="gat", heads=1, activation="relu", beta=0.3, qk_shared=False),
    dict(local_conv="gcn", heads=2, activation="gelu", beta=None, input_projection=False),
    dict(local_conv="gat", heads=2, activation="polynorm", beta=0.9),
]


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(in_channels=5, out_channels=3, hidden=4, local_layers=2, global_layers=2) | kw
    model = Polynormer(PolynormerConfig(**cfg)).double().eval()
    with torch.no_grad():  # non-trivial norms and betas, so a swapped weight or bias shows
        for name, p in model.named_parameters():
            if "norm" in name or "logit" in name:
                p.add_(0.3 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['local_conv']}-{c['activation']}-h{c['heads']}")
@pytest.mark.parametrize("phase", ["local", "global"])
def test_forward_equals_naive(case, phase):
    model = _model(**case)
    model.use_global(phase == "global")
    x = torch.randn(12, 5, dtype=torch.float64)
    edges = _graph(symmetric=case["local_conv"] == "gcn")
    torch.testing.assert_close(model(x, edges), _naive_forward(model, x, edges), **TOL)


@pytest.mark.parametrize("conv", ["gat", "gcn"])
def test_gradcheck_both_phases(conv):
    model = _model(local_conv=conv, heads=2, activation="none", beta=None)
    x = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
    edges = _graph(n=8, symmetric=True)
    # fast_mode: random projections of the Jacobian, a few passes instead of one per output (the full
    # check takes ~15 s of a shared CPU core here); the full one runs on the attention itself below.
    for phase in (False, True):
        model.use_global(phase)
        assert torch.autograd.gradcheck(lambda x: model(x, edges), (x,), fast_mode=True)
    if conv == "gcn":
        return  # the weights' check below is conv-independent apart from the conv's own (PyG-tested) weights
    # and with respect to every weight, learnable beta included (the global phase reaches all of them)
    params = dict(model.named_parameters())
    names = sorted(params)

    def f(*tensors):
        return torch.func.functional_call(model, dict(zip(names, tensors)), (x.detach(), edges))

    assert torch.autograd.gradcheck(f, tuple(params[n].detach().requires_grad_() for n in names), fast_mode=True)


def test_equivariant_under_node_permutation():
    model = _model(local_conv="gat", heads=2, activation="relu", beta=None)
    model.use_global()
    x, edges = torch.randn(12, 5, dtype=torch.float64), _graph()
    perm = torch.randperm(12)
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(12)
    torch.testing.assert_close(model(x[perm], inverse[edges]), model(x, edges)[perm], **TOL)


def test_activation_free_model_is_a_polynomial_of_the_features_up_to_layer_norm():
    """With act = none and beta = 1 every LN(h * y) term drops out: x_local is then linear in x
    (the skip and conv maps only), so doubling the features doubles the GCN model's local output
    minus its bias path. A check that 'none' really applies no nonlinearity anywhere."""
    model = _model(local_conv="gcn", heads=1, activation="none", beta=1.0, input_projection=False)
    x, edges = torch.randn(12, 5, dtype=torch.float64), _graph(symmetric=True)
    zero = model.local_forward(torch.zeros_like(x), edges)
    one, two = model.local_forward(x, edges) - zero, model.local_forward(2 * x, edges) - zero
    torch.testing.assert_close(two, 2 * one, **TOL)
    relu = _model(local_conv="gcn", heads=1, activation="relu", beta=1.0, input_projection=False)
    r0 = relu.local_forward(torch.zeros_like(x), edges)
    assert not torch.allclose(relu.local_forward(2 * x, edges) - r0, 2 * (relu.local_forward(x, edges) - r0))


def test_learnable_beta_starts_at_half_and_learns():
    model = _model(beta=None)
    model.use_global()
    assert model.local_beta.logit.shape == (2, 4) and model.global_beta.logit.shape == (2, 4)
    torch.manual_seed(0)
    fresh = Polynormer(PolynormerConfig(5, 3, hidden=4, local_layers=2))
    assert torch.all(torch.sigmoid(fresh.local_beta.logit) == 0.5)
    model(torch.randn(12, 5, dtype=torch.float64), _graph()).sum().backward()
    assert model.local_beta.logit.grad.abs().sum() > 0 and model.global_beta.logit.grad.abs().sum() > 0
    fixed = _model(beta=0.5)
    assert not any("logit" in n for n, _ in fixed.named_parameters())


def test_same_seed_same_shared_weights_across_activations():
    shared = {}
    for act in ("none", "relu", "polynorm", "hermite"):
        torch.manual_seed(7)
        model = Polynormer(PolynormerConfig(5, 3, hidden=4, local_layers=2, activation=act))
        shared[act] = {n: p for n, p in model.named_parameters() if "acts" not in n}
    base = shared["none"]
    for act, params in shared.items():
        assert params.keys() == base.keys()
        for n in base:
            assert torch.equal(params[n], base[n]), (act, n)


@pytest.mark.parametrize("field,value", [("hidden", 0), ("local_conv", "sage"), ("beta", 1.5), ("dropout", 1.0),
                                         ("activation", "swiglu"), ("activation", "nope"), ("global_layers", -1)])
def test_config_errors_name_the_field(field, value):
    with pytest.raises(UsageError, match=f"^{field}:"):
        PolynormerConfig(**{"in_channels": 5, "out_channels": 3, field: value})


# --- PyTorch Geometric's Polynormer, same weights -------------------------------------------------

def _pyg_pair(local_conv, global_layers=2):
    from torch_geometric.nn.models import Polynormer as PygPolynormer

    torch.manual_seed(3)
    ours = Polynormer(PolynormerConfig(5, 3, hidden=4, heads=1, local_layers=2, global_layers=global_layers,
                                       local_conv=local_conv, activation="relu", beta=0.9, batch_norm=True,
                                       input_projection=False, qk_shared=True)).double()
    pyg = PygPolynormer(5, 4, 3, local_layers=2, global_layers=global_layers, heads=1, beta=0.9, qk_shared=True,
                        post_bn=True, local_attn=local_conv == "gat").double()
    with torch.no_grad():
        for p in ours.parameters():  # norms away from their identity init, so a swapped norm shows
            p.copy_(torch.randn_like(p) * 0.5)
        for i, layer in enumerate(ours.local_layers):
            for mine, theirs in [(layer.h_lin, pyg.h_lins[i]), (layer.conv, pyg.local_convs[i]),
                                 (layer.skip, pyg.lins[i]), (layer.norm, pyg.lns[i]),
                                 (layer.batch_norm, pyg.post_bns[i])]:
                theirs.load_state_dict(mine.state_dict())
        pyg.ln.load_state_dict(ours.global_norm.state_dict())
        for blk, attn in zip(ours.global_blocks, pyg.global_attn):
            for mine, theirs in [(blk.h_lin, attn.h_lins), (blk.k, attn.k), (blk.v, attn.v), (blk.norm, attn.lns),
                                 (blk.out, attn.lin_out)]:
                theirs.load_state_dict(mine.state_dict())
        pyg.pred_local.load_state_dict(ours.pred_local.state_dict())
        pyg.pred_global.load_state_dict(ours.pred_global.state_dict())
    return ours.eval(), pyg.eval()


@pytest.mark.parametrize("local_conv", ["gat", "gcn"])
def test_local_phase_equals_pytorch_geometric(local_conv):
    ours, pyg = _pyg_pair(local_conv)
    for bn in [ours.local_layers[0].batch_norm, pyg.post_bns[0]]:  # running stats away from (0, 1)
        bn.running_mean.fill_(0.2), bn.running_var.fill_(1.7)
    pyg.post_bns[1].load_state_dict(ours.local_layers[1].batch_norm.state_dict())
    x, edges = torch.randn(12, 5, dtype=torch.float64), _graph(symmetric=True)
    batch = torch.zeros(12, dtype=torch.long)
    torch.testing.assert_close(ours(x, edges).log_softmax(-1), pyg(x, edges, batch), **TOL)


def test_global_phase_equals_pytorch_geometric_on_one_graph():
    """PyG 2.8.1's global phase runs (docs/graph.md); on one graph, one head, it is our global block."""
    ours, pyg = _pyg_pair("gat")
    ours.use_global()
    pyg._global = True
    x, edges = torch.randn(12, 5, dtype=torch.float64), _graph()
    batch = torch.zeros(12, dtype=torch.long)
    torch.testing.assert_close(ours(x, edges).log_softmax(-1), pyg(x, edges, batch), **TOL)
