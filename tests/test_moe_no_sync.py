"""The MoE without host synchronisation: equal to the per-expert loop (float64, values and
gradients), both grouped-matmul paths against a float64 product, data-free shapes (meta
tensors), and the whole MoE model under torch.compile(fullgraph=True) with no graph break."""

import pytest
import torch
import torch.nn.functional as F
from naive import naive_gated_poly_norm, naive_poly_norm, naive_poly_relu

from polycom.models import MoE, MoEConfig, build_model, model_config
from polycom.models import grouped
from polycom.models.grouped import ExpertGroups, grouped_linear

E, K, D, H = 5, 2, 8, 12  # expert E - 1 gets no token (see _moe_and_input)


def per_expert_loop(moe, x):
    """The MoE as a loop over experts, written from the definitions (independent of moe.py): softmax
    router, top-k, renormalised weights; expert e's MLP with its own activation on the tokens that
    chose e; weighted sum; the two auxiliary losses, weighted. Float64 except the routing, which the
    MoE defines in float32 (from float64 logits: the same float32 values here and there)."""
    logits = (x @ moe.router.gate.weight.T).float()  # (N, E)
    p = torch.softmax(logits, -1)
    top_p, top_e = torch.topk(p, moe.top_k, dim=-1)  # (N, k)
    top_p = (top_p / top_p.sum(-1, keepdim=True)).double()
    out = torch.zeros_like(x)
    for e in range(moe.num_experts):
        token, slot = (top_e == e).nonzero(as_tuple=True)
        if token.numel() == 0:
            continue
        xe = x[token]
        up = xe @ moe.up_proj[e].T
        acts = list(moe.act.experts) if hasattr(moe.act, "experts") else [moe.act] * moe.num_experts
        a = acts[e]
        if moe.gated:
            gate = xe @ moe.gate_proj[e].T
            hid = naive_gated_poly_norm(gate, up, a.weight, a.bias) if hasattr(a, "weight") else F.silu(gate) * up
        elif type(a).__name__ == "PolyReLU":
            hid = naive_poly_relu(up, a.weight, a.bias)
        else:
            hid = naive_poly_norm(up, a.weight, a.bias) if hasattr(a, "weight") else F.gelu(up)
        out = out.index_add(0, token, top_p[token, slot, None] * (hid @ moe.down_proj[e].T))
    f = torch.stack([(top_e == e).sum() for e in range(moe.num_experts)]).float() / top_e.numel()
    load_balance = moe.num_experts * (f * p.mean(0)).sum()
    z = torch.logsumexp(logits, -1).pow(2).mean()
    return out, moe.cfg.aux_loss_weight * load_balance + moe.cfg.z_loss_weight * z


def _moe_and_input(act, coefficients):
    torch.manual_seed(0)
    moe = MoE(D, H, act, MoEConfig(num_experts=E, top_k=K, coefficients=coefficients)).double()
    with torch.no_grad():
        # The same routing for every activation: x[:, 0] = 3 below, read by expert E - 1's score only,
        # puts it 30 below the others (|score| < 10 there): no token chooses it.
        g = torch.Generator().manual_seed(0)
        w = torch.randn(E, D, generator=g)
        w[:, 0], w[E - 1] = 0.0, 0.0
        w[E - 1, 0] = -10.0
        moe.router.gate.weight.copy_(w)
        for i, a in enumerate(list(moe.act.experts) if coefficients == "per_expert" else [moe.act]):
            if hasattr(a, "weight"):  # distinct, non-default coefficients so an expert mix-up shows
                a.weight.copy_(torch.tensor([0.2, -0.4, 0.7]) * (1 + i))
                a.bias.fill_(0.05 * (i + 1))
    x = torch.randn(23, D, dtype=torch.float64, generator=g)
    x[:, 0] = 3.0
    return moe, x


@pytest.mark.parametrize("act, coefficients", [("polynorm", "per_layer"), ("polynorm", "per_expert"),
                                               ("gated_polynorm", "per_expert"), ("swiglu", "per_layer"),
                                               ("gelu", "per_expert"), ("polyrelu", "per_expert")])
def test_equals_the_per_expert_loop_float64(act, coefficients):
    moe, x = _moe_and_input(act, coefficients)
    x = x.requires_grad_(True)
    y, aux = moe(x)
    counts = moe.last_stats["tokens_per_expert"]
    assert counts[E - 1] == 0 and (counts[: E - 1] > 0).all() and counts.sum() == x.shape[0] * K
    g = torch.randn_like(y)
    params = dict(moe.named_parameters())
    got = torch.autograd.grad((y * g).sum() + aux, [x, *params.values()], allow_unused=True)
    y_want, aux_want = per_expert_loop(moe, x)
    want = torch.autograd.grad((y_want * g).sum() + aux_want, [x, *params.values()], allow_unused=True)
    # Float64 but the float32 routing, which is the same float32 arithmetic on the same values in both:
    # the two differ in the order of float64 sums (grouped products, index_add) -> ~1e-15 relative;
    # 1e-12 leaves room for the PolyNorm powers' rounding and fails at any real error.
    tol = dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y, y_want, **tol)
    torch.testing.assert_close(aux, aux_want, **tol)
    for name, a, b in zip(["x", *params], got, want):
        a = torch.zeros_like(params[name]) if a is None else a  # unused: the loop must give zero too
        b = torch.zeros_like(a) if b is None else b
        torch.testing.assert_close(a, b, **tol, msg=name)
    assert got[1 + list(params).index("down_proj")][E - 1].abs().sum() == 0  # the empty expert
    assert got[1 + list(params).index("router.gate.weight")].abs().sum() > 0  # the router learns


def _groups(counts):
    expert = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    return ExpertGroups.from_sorted(expert, len(counts))


@pytest.mark.parametrize("dtype, grouped_mm", [(torch.float64, False), (torch.float32, False), (torch.float32, True),
                                               (torch.bfloat16, False), (torch.bfloat16, True)])
@pytest.mark.parametrize("counts", [[7, 0, 3, 1], [0, 0, 11, 0], [2, 3, 3, 3]])
def test_grouped_linear_both_paths_against_float64(counts, dtype, grouped_mm, monkeypatch):
    has_cpu_grouped_mm = hasattr(torch, "_grouped_mm") and grouped._TORCH_2_9
    if grouped_mm and not has_cpu_grouped_mm:
        pytest.skip("torch._grouped_mm has no CPU kernel in this torch (< 2.9)")
    groups = _groups(counts)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(sum(counts), 16, generator=g).to(dtype).requires_grad_(True)
    w = torch.randn(len(counts), 24, 16, generator=g).to(dtype).requires_grad_(True)
    assert grouped._grouped_mm_runs(x, w) == (has_cpu_grouped_mm and dtype != torch.float64)  # CPU, aligned widths
    if not grouped_mm:
        monkeypatch.setattr(grouped, "_grouped_mm_runs", lambda *a: False)
    y = grouped_linear(x, w, groups)
    dy = torch.randn(y.shape, generator=g).to(dtype)
    gx, gw = torch.autograd.grad(y, [x, w], dy)
    x64, w64 = x.detach().double().requires_grad_(True), w.detach().double().requires_grad_(True)
    want = torch.cat([x64[i : i + 1] @ w64[e].T for i, e in enumerate(groups.expert.tolist())])
    gx_want, gw_want = torch.autograd.grad(want, [x64, w64], dy.double())
    # Sums of 16 (24 for dx, <= 11 rows for dw) products of N(0, 1) values: float64 ~1e-15; float32
    # ~1e-6 absolute; bfloat16 inputs are exact in float64, one bf16 rounding of the output (2^-8
    # relative) of values up to ~15 -> 0.06 absolute.
    tol = {torch.float64: 1e-12, torch.float32: 2e-5, torch.bfloat16: 0.1}[dtype]
    for got, ref in ((y, want), (gx, gx_want), (gw, gw_want)):
        assert got.dtype == dtype
        torch.testing.assert_close(got.double(), ref, rtol=tol, atol=tol)
    assert (gw[torch.tensor(counts) == 0] == 0).all()  # an empty expert gets exactly zero


@pytest.mark.parametrize("grouped_mm", [False, True])
def test_grouped_linear_takes_an_expanded_gradient(grouped_mm, monkeypatch):
    """y.sum() sends back a stride-0 gradient, which torch._grouped_mm's own backward refuses."""
    if grouped_mm and not (hasattr(torch, "_grouped_mm") and grouped._TORCH_2_9):
        pytest.skip("torch._grouped_mm has no CPU kernel in this torch (< 2.9)")
    monkeypatch.setattr(grouped, "_grouped_mm_runs", lambda *a: grouped_mm)
    groups = _groups([3, 0, 5])
    x, w = torch.randn(8, 16, requires_grad=True), torch.randn(3, 8, 16, requires_grad=True)
    y = grouped_linear(x, w, groups)
    got = torch.autograd.grad(y.sum(), [x, w], retain_graph=True)
    want = torch.autograd.grad(y, [x, w], torch.ones(y.shape))  # the same gradient, stored densely
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # the same kernels on the same values


def test_tiles_bound_holds_for_the_worst_routing():
    """All rows on one expert, or spread to leave a partial tile on every expert: the static tile count
    is enough (every row gets a tile of its own expert, no two rows share a slot)."""
    for counts in ([40, 0, 0, 0], [11, 11, 11, 7], [1, 1, 1, 37]):
        groups = _groups(counts)
        block = grouped._tile_rows(sum(counts), len(counts))
        position, tile_expert, count = groups.tiles(block)
        assert position.unique().numel() == sum(counts) and int(position.max()) < count * block
        assert torch.equal(tile_expert[position // block], groups.expert)


@pytest.mark.parametrize("act, coefficients", [("polynorm", "per_expert"), ("gelu", "per_expert"), ("polyrelu", "per_expert"),
                                               ("swiglu", "per_layer"), ("mu_layer", "per_layer")])
def test_forward_and_backward_need_no_values(act, coefficients):
    """On meta tensors (shapes, no data) any read of a routed value (.item(), .tolist(), a
    data-dependent size) raises: the layer runs forward and backward without one."""
    with torch.device("meta"):
        moe = MoE(D, H, act, MoEConfig(num_experts=E, top_k=K, coefficients=coefficients))
        x = torch.randn(3, 7, D, requires_grad=True)
        y, aux = moe(x)
        (y.sum() + aux).backward()
    assert y.shape == x.shape and x.grad.shape == x.shape
    assert all(p.grad is not None and p.grad.shape == p.shape for p in moe.parameters())


def test_model_compiles_whole_forward_and_backward():
    """torch.compile(fullgraph=True) of the MoE model's loss: Dynamo finds no graph break (explain), the
    per-expert PolyNorm is in the graph as its fused op (the closed-form autograd Function, not the
    reference formula), and the compiled forward and its AOT-autograd backward equal eager. aot_eager:
    the graphs Inductor would receive, without its C++ code generation (minutes on this CPU). One
    model, one compile: per-expert coefficients, the layout with the grouped op."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = build_model(model_config("debug-moe", activation="polynorm", n_layers=1,
                                     moe={"coefficients": "per_expert"}))
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(3))

    def loss_of(ids):
        return model(ids, targets=ids).loss

    explained = torch._dynamo.explain(loss_of)(ids)
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons
    fused = [n.meta.get("stack_trace", "") for n in explained.graphs[0].graph.nodes
             if n.op == "call_function" and "autograd_function_apply" in str(n.target)]
    assert any("grouped_poly_norm(" in trace for trace in fused), "the grouped op left its fast path"
    want = loss_of(ids)
    want_grads = torch.autograd.grad(want, list(model.parameters()))
    torch._dynamo.reset()
    got = torch.compile(loss_of, fullgraph=True, backend="aot_eager")(ids)
    assert "CompiledFunction" in type(got.grad_fn).__name__  # backward runs the AOT-traced graph
    got_grads = torch.autograd.grad(got, list(model.parameters()))
    # float32; eager runs _grouped_mm and the compiled graph the tiles (module docstring of grouped.py):
    # the same products summed in another order, a few float32 ulps of O(1) values.
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for (name, _), a, b in zip(model.named_parameters(), got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)
    torch._dynamo.reset()


def test_state_dict_layout_unchanged():
    """Checkpoints written before load: the keys and shapes of a MoE block's state dict."""
    model = build_model(model_config("debug-moe", activation="polynorm", moe={"coefficients": "per_expert"}))
    state = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("layers.0.mlp.")}
    assert state == {"layers.0.mlp.router.gate.weight": (4, 64), "layers.0.mlp.up_proj": (4, 96, 64),
                     "layers.0.mlp.down_proj": (4, 64, 96),
                     **{f"layers.0.mlp.act.experts.{e}.weight": (3,) for e in range(4)},
                     **{f"layers.0.mlp.act.experts.{e}.bias": (1,) for e in range(4)}}
