"""MoE block: routing, grouped matmul and per-token PolyNorm against a naive
per-token loop, aux losses against hand computations, dense equivalence."""

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from naive import naive_poly_norm

import polycom
from polycom.models import MLP, MoE, MoEConfig, build_model, model_config
from polycom.models.moe import ExpertGroups, grouped_linear


@pytest.fixture(autouse=True)
def _fresh_compile_cache():
    """polycom.ops' default CPU path compiles per input shape (dynamic=False) and fails hard
    after 8 shapes per process; resetting dynamo keeps these tests independent of order."""
    yield
    torch._dynamo.reset()


def eager(act):
    """Pin the closed-form eager path: these tests are about routing and layout, and the
    default CPU path ("compiled", dynamic=False) recompiles for every new row count."""
    params = inspect.signature(polycom.activation_info(act).factory).parameters
    return {"implementation": "eager"} if "implementation" in params else {}


def make_moe(act="polynorm", E=4, k=2, d=8, h=12, seed=0, **cfg):
    torch.manual_seed(seed)
    moe = MoE(d, h, act, MoEConfig(num_experts=E, top_k=k, **cfg), eager(act))
    with torch.no_grad():  # distinct, non-default coefficients so mix-ups show
        for i, a in enumerate(_act_modules(moe)):
            if hasattr(a, "weight"):
                a.weight.copy_(torch.tensor([0.2, -0.4, 0.7]) * (1 + i))
                a.bias.fill_(0.05 * (i + 1))
    return moe


def _act_modules(moe):
    return list(moe.act.experts) if hasattr(moe.act, "experts") else [moe.act]


def naive_expert(moe, e, x):
    """One token x (d,) through expert e, float64, from the definitions."""
    x = x.double()
    up = moe.up_proj[e].double() @ x
    a = moe.act.experts[e] if hasattr(moe.act, "experts") else moe.act
    if moe.gated:  # swiglu
        g = moe.gate_proj[e].double() @ x
        hid = F.silu(g) * up
    elif isinstance(a, polycom.PolyNorm):
        hid = naive_poly_norm(up[None], a.weight, a.bias)[0]  # RMS over this token's expert vector
    else:
        hid = F.gelu(up)
    return moe.down_proj[e].double() @ hid


def naive_moe(moe, x):
    """Per-token loop: softmax over experts, top-k, renormalise, weighted sum of experts."""
    out = torch.zeros(x.shape[0], x.shape[1], dtype=torch.float64)
    for t in range(x.shape[0]):
        logits = moe.router.gate.weight.double() @ x[t].double()
        p = torch.softmax(logits, -1)
        top = sorted(range(len(p)), key=lambda e: -p[e].item())[: moe.top_k]
        norm = sum(p[e] for e in top)
        for e in top:
            out[t] += p[e] / norm * naive_expert(moe, e, x[t])
    return out


@pytest.mark.parametrize("act, coefficients", [("polynorm", "per_layer"), ("polynorm", "per_expert"),
                                               ("swiglu", "per_layer"), ("gelu", "per_expert")])
def test_moe_matches_per_token_loop(act, coefficients):
    moe = make_moe(act, E=4, k=2, coefficients=coefficients)
    x = torch.randn(13, 8)
    y, _ = moe(x)
    torch.testing.assert_close(y.double(), naive_moe(moe, x), rtol=1e-4, atol=1e-5)


def test_each_token_goes_to_exactly_k_experts():
    moe = make_moe(E=6, k=3)
    x = torch.randn(2, 10, 8)
    _, _, _, top_idx = moe.router(x.reshape(-1, 8))
    assert top_idx.shape == (20, 3)
    assert all(len(set(row.tolist())) == 3 for row in top_idx)  # distinct experts
    moe(x)
    assert moe.last_stats["tokens_per_expert"].sum().item() == 20 * 3
    # Each token's output depends on exactly its k experts: zeroing another expert changes nothing.
    y, _ = moe(x)
    t0 = set(top_idx[0].tolist())
    other = next(e for e in range(6) if e not in t0)
    with torch.no_grad():
        moe.down_proj[other].zero_()
    y2, _ = moe(x)
    torch.testing.assert_close(y2[0, 0], y[0, 0])


def test_polynorm_rows_independent_of_layout():
    """A token's output must not depend on which other tokens share the batch or its order."""
    moe = make_moe(E=4, k=2, coefficients="per_expert")
    x = torch.randn(24, 8)
    y, _ = moe(x)
    perm = torch.randperm(24)
    yp, _ = moe(x[perm])
    torch.testing.assert_close(yp, y[perm], rtol=1e-5, atol=1e-6)
    single = torch.cat([moe(x[i : i + 1])[0] for i in range(24)])
    torch.testing.assert_close(single, y, rtol=1e-5, atol=1e-6)


def test_grouped_linear_matches_loop():
    torch.manual_seed(0)
    w = torch.randn(3, 5, 4)
    expert = torch.tensor([0, 0, 0, 2, 2])  # expert 1 gets no rows
    groups = ExpertGroups.from_sorted(expert, 3)
    assert groups.counts.tolist() == [3, 0, 2] and groups.ends.tolist() == [3, 3, 5]
    x = torch.randn(5, 4)
    want = torch.stack([w[e] @ x[i] for i, e in enumerate(expert.tolist())])
    torch.testing.assert_close(grouped_linear(x, w, groups), want)


def test_aux_losses_hand_computed():
    """E = 2, k = 1, router = identity on x in R^2, three tokens."""
    moe = MoE(2, 4, "gelu", MoEConfig(num_experts=2, top_k=1, aux_loss_weight=0.01, z_loss_weight=0.001))
    with torch.no_grad():
        moe.router.gate.weight.copy_(torch.eye(2))
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])  # logits = x; routed to 0, 1, 0
    e = math.e
    p0 = [e / (e + 1), 1 / (1 + e**2), e**3 / (e**3 + 1)]  # prob of expert 0 per token
    P0 = sum(p0) / 3
    f0, f1 = 2 / 3, 1 / 3
    lb = 2 * (f0 * P0 + f1 * (1 - P0))
    z = (math.log(e + 1) ** 2 + math.log(1 + e**2) ** 2 + math.log(e**3 + 1) ** 2) / 3
    _, aux = moe(x)
    assert moe.last_stats["load_balance"].item() == pytest.approx(lb, rel=1e-6)
    assert moe.last_stats["z_loss"].item() == pytest.approx(z, rel=1e-6)
    assert aux.item() == pytest.approx(0.01 * lb + 0.001 * z, rel=1e-6)


def test_aux_losses_uniform_router():
    # Zero router: uniform probs 1/E, so load balance = sum_e f_e = 1 and z = (log E)^2.
    moe = make_moe(E=8, k=2)
    with torch.no_grad():
        moe.router.gate.weight.zero_()
    moe(torch.randn(10, 8))
    assert moe.last_stats["load_balance"].item() == pytest.approx(1.0, rel=1e-6)
    assert moe.last_stats["z_loss"].item() == pytest.approx(math.log(8) ** 2, rel=1e-6)


def test_act_softmax_router_hand_computed():
    moe = make_moe(E=3, k=1, router="act_softmax", router_activation="tanh", router_temperature=0.5)
    x = torch.randn(5, 8)
    scores, probs, top_w, _ = moe.router(x)
    logits = x.double() @ moe.router.gate.weight.double().T
    want = torch.softmax(torch.tanh(logits) / 0.5, -1)
    torch.testing.assert_close(probs.double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(top_w, torch.ones(5, 1))  # renormalised top-1
    moe_z = router_z = torch.logsumexp(torch.tanh(logits) / 0.5, -1).pow(2).mean()
    moe(x)
    assert moe.last_stats["z_loss"].item() == pytest.approx(router_z.item(), rel=1e-5)
    del moe_z


@pytest.mark.parametrize("act", ["polynorm", "swiglu"])
def test_one_expert_equals_dense_mlp(act):
    torch.manual_seed(0)
    dense = MLP(8, 12, act, eager(act))
    moe = MoE(8, 12, act, MoEConfig(num_experts=1, top_k=1), eager(act))
    with torch.no_grad():
        moe.up_proj[0].copy_(dense.up_proj.weight)
        moe.down_proj[0].copy_(dense.down_proj.weight)
        if dense.gated:
            moe.gate_proj[0].copy_(dense.gate_proj.weight)
    x = torch.randn(2, 7, 8)
    y, _ = moe(x)
    torch.testing.assert_close(y, dense(x))


def test_shared_expert_adds_dense_mlp():
    moe = make_moe(E=4, k=2, shared_expert=True)
    x = torch.randn(6, 8)
    y, _ = moe(x)
    routed = naive_moe(moe, x)
    torch.testing.assert_close(y.double(), routed + moe.shared_expert(x).double(), rtol=1e-4, atol=1e-5)


def test_per_expert_coefficients_are_separate():
    moe = make_moe(E=4, k=2, coefficients="per_expert")
    acts = list(moe.act.experts)
    assert len(acts) == 4 and len({id(a.weight) for a in acts}) == 4
    x = torch.randn(16, 8)
    y, aux = moe(x)
    (y.sum() + aux).backward()
    _, _, _, top_idx = moe.router(x)
    used = set(top_idx.reshape(-1).tolist())
    for e, a in enumerate(acts):
        assert (a.weight.grad is not None and a.weight.grad.abs().sum() > 0) == (e in used)
    assert moe.router.gate.weight.grad.abs().sum() > 0  # the router learns through top_w and aux


def test_moe_model_forward_backward_and_param_matching():
    torch.manual_seed(0)
    cfg = model_config("debug-moe", activation="polynorm", activation_kwargs=eager("polynorm"))
    model = build_model(cfg)
    ids = torch.randint(0, 256, (2, 16))
    out = model(ids, targets=ids)
    assert out.logits.shape == (2, 16, 256)
    assert out.aux_loss.item() > 0
    assert out.loss.item() == pytest.approx(out.ce_loss.item() + out.aux_loss.item(), rel=1e-6)
    mean_aux = sum(0.01 * b.mlp.last_stats["load_balance"] + 0.001 * b.mlp.last_stats["z_loss"]
                   for b in model.layers) / 2
    assert out.aux_loss.item() == pytest.approx(mean_aux.item(), rel=1e-5)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    counts = {}
    for act in polycom.list_activations():  # every kind has MoE experts, those with their own layer included
        with torch.device("meta"):
            counts[act] = build_model(model_config("tiny-moe", activation=act)).num_params()
    assert max(counts.values()) / min(counts.values()) - 1 < 0.01, counts


def test_moe_active_params_and_flops():
    cfg = model_config("debug-moe", activation="gelu")  # 4 experts, top-2, expert width 96
    m = build_model(cfg)
    d, h, L, V, E, k = 64, 96, 2, 256, 4, 2
    total = V * d * 2 + L * (4 * d * d + 2 * d + d * E + E * 2 * d * h) + d
    assert m.num_params() == total
    active = V * d + L * (4 * d * d + 2 * d + d * E + k * 2 * d * h) + d  # head, no embedding table
    assert m.num_active_params() == active
    assert m.flops_per_token(16) == 6 * active + 12 * L * d * 16
    assert model_config("paper-moe-1b-7b", activation="swiglu").expert_hidden == 1024
    assert model_config("paper-moe-1b-7b", activation="polynorm").expert_hidden == 1536


def test_no_renormalisation_keeps_softmax_weights():
    moe = make_moe(E=4, k=2, renormalize=False)
    x = torch.randn(5, 8)
    _, probs, top_w, top_idx = moe.router(x)
    torch.testing.assert_close(top_w, probs.gather(1, top_idx))
    assert (top_w.sum(-1) < 1).all()



def test_moe_under_bf16_autocast():
    moe = make_moe(E=4, k=2)
    x = torch.randn(10, 8)
    ref, _ = moe(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, aux = moe(x)
    assert torch.isfinite(aux)
    torch.testing.assert_close(low.float(), ref, rtol=0.05, atol=0.02)  # bf16: 8 mantissa bits


def test_one_expert_model_equals_dense_model():
    torch.manual_seed(0)
    dense = build_model(model_config("debug", activation="polynorm", activation_kwargs=eager("polynorm")))
    moe = build_model(model_config("debug", activation="polynorm", activation_kwargs=eager("polynorm"),
                                   moe={"num_experts": 1, "top_k": 1, "expert_hidden": 288}))
    state = {}
    for k, v in dense.state_dict().items():
        if ".mlp." in k and k.endswith("_proj.weight"):
            k, v = k[: -len(".weight")], v[None]  # (1, out, in) stacked expert weight
        state[k] = v
    missing, unexpected = moe.load_state_dict(state, strict=False)
    assert unexpected == [] and all(k.endswith("router.gate.weight") for k in missing)
    ids = torch.randint(0, 256, (2, 16))
    a, b = dense(ids, targets=ids), moe(ids, targets=ids)
    torch.testing.assert_close(b.logits, a.logits)
    assert b.aux_loss.item() > 0 and b.ce_loss.item() == pytest.approx(a.ce_loss.item(), rel=1e-6)
