"""Dense model: shapes, parameter matching, hand-counted sizes and FLOPs, attention
against a naive float64 reference, causality, init, config validation."""

import math

import pytest
import torch
from naive import naive_poly_norm

import polycom
from polycom.models import MLP, PRESETS, ModelConfig, MoEConfig, build_model, model_config
from polycom.models.layers import CausalSelfAttention, RotaryEmbedding

ALL_ACTIVATIONS = polycom.list_activations()


@pytest.fixture(autouse=True)
def _fresh_compile_cache():
    """polycom.ops' default CPU path compiles per input shape (dynamic=False) and fails hard
    after 8 shapes per process; resetting dynamo keeps these tests independent of order."""
    yield
    torch._dynamo.reset()


def hand_count_dense(V, L, d, h, gated, kv_dim=None, tied=False, act_params=0, qk_norm_dim=0):
    """Parameters of the dense model counted from the architecture description."""
    kv_dim = kv_dim or d
    attn = d * d * 2 + 2 * d * kv_dim + 2 * qk_norm_dim  # q, o, k, v (+ qk gains)
    mlp = (3 if gated else 2) * d * h + act_params
    norms = 2 * d
    return V * d * (1 if tied else 2) + L * (attn + mlp + norms) + d


@pytest.mark.parametrize("act", ["gelu", "swiglu", "polynorm", "polyrelu", "gated_polynorm"])
def test_forward_backward_shapes(act):
    torch.manual_seed(0)
    cfg = model_config("debug", activation=act, n_kv_heads=2, qk_norm=True)
    model = build_model(cfg)
    ids = torch.randint(0, cfg.vocab_size, (2, 17))
    out = model(ids, targets=ids)
    assert out.logits.shape == (2, 17, cfg.vocab_size)
    assert out.aux_loss.item() == 0.0 and out.loss.item() == pytest.approx(out.ce_loss.item())
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    assert model(ids).loss is None


def test_debug_param_count_matches_hand_count():
    cfg = model_config("debug", activation="gelu")
    V, L, d, h = 256, 2, 64, 288
    assert cfg.mlp_hidden == h
    assert build_model(cfg).num_params() == hand_count_dense(V, L, d, h, gated=False)
    cfg = model_config("debug", activation="swiglu", n_kv_heads=1, tie_embeddings=True, qk_norm=True)
    model = build_model(cfg)
    assert cfg.mlp_hidden == 192  # 2/3 of 288
    assert model.num_params() == hand_count_dense(V, L, d, 192, True, kv_dim=16, tied=True, qk_norm_dim=16)
    assert model.num_params(exclude_embeddings=True) == model.num_params() - V * d


def test_paper_1b_shape():
    for act, h in (("gelu", 8256), ("polynorm", 8256), ("swiglu", 5504), ("gated_polynorm", 5504)):
        cfg = model_config("paper-1b", activation=act)
        assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.mlp_hidden) == (24, 2048, 16, h)
    with torch.device("meta"):
        m = build_model(model_config("paper-1b", activation="polynorm"))
    assert m.num_params() == hand_count_dense(32000, 24, 2048, 8256, False, act_params=4)


@pytest.mark.parametrize("preset", ["debug", "tiny", "small", "paper-1b"])
def test_params_equal_across_all_activations(preset):
    counts = {}
    for act in ALL_ACTIVATIONS:
        with torch.device("meta"):
            counts[act] = build_model(model_config(preset, activation=act)).num_params()
    ref = counts["gelu"]
    off = {a: n / ref - 1 for a, n in counts.items() if abs(n / ref - 1) > 0.01}
    assert not off, off


def test_explicit_ffn_hidden_is_matched():
    # An explicit non-gated width that is not a multiple of 3 still matches within 1%.
    for ffn in (256, 1000, 3000):
        g = model_config("debug", activation="gelu", ffn_hidden=ffn, ffn_multiple_of=16)
        s = model_config("debug", activation="swiglu", ffn_hidden=ffn, ffn_multiple_of=16)
        assert abs(3 * s.mlp_hidden / (2 * ffn) - 1) <= 0.01  # MLP alone
        ng, ns = build_model(g).num_params(), build_model(s).num_params()
        assert abs(ns / ng - 1) < 0.01


def test_flops_per_token_hand_computed():
    cfg = model_config("debug", activation="gelu")
    m = build_model(cfg)
    # Matmul parameters: all but the embedding table (head untied); attention 12 L d T.
    n_matmul = m.num_params() - 256 * 64
    assert m.flops_per_token(32) == 6 * n_matmul + 12 * 2 * 64 * 32
    assert m.flops_per_token() == 6 * n_matmul + 12 * 2 * 64 * 64
    tied = build_model(model_config("debug", activation="gelu", tie_embeddings=True))
    assert tied.flops_per_token(32) == m.flops_per_token(32)


def naive_attention(x, attn, theta, n_heads, n_kv):
    """float64 attention written from the definition: explicit RoPE angles, mask, softmax."""
    x = x.double()
    B, T, d = x.shape
    hs = d // n_heads
    q = (x @ attn.q_proj.weight.double().T).view(B, T, n_heads, hs)
    k = (x @ attn.k_proj.weight.double().T).view(B, T, n_kv, hs)
    v = (x @ attn.v_proj.weight.double().T).view(B, T, n_kv, hs)

    def rope(t):  # pair i with i + hs/2, angle pos * theta^(-2i/hs)
        out = t.clone()
        for pos in range(T):
            for i in range(hs // 2):
                a = pos * theta ** (-2 * i / hs)
                x1, x2 = t[:, pos, :, i], t[:, pos, :, i + hs // 2]
                out[:, pos, :, i] = x1 * math.cos(a) - x2 * math.sin(a)
                out[:, pos, :, i + hs // 2] = x2 * math.cos(a) + x1 * math.sin(a)
        return out

    q, k = rope(q), rope(k)
    y = torch.zeros(B, T, n_heads, hs, dtype=torch.float64)
    for h in range(n_heads):
        kh = h // (n_heads // n_kv)
        s = torch.einsum("bid,bjd->bij", q[:, :, h], k[:, :, kh]) / math.sqrt(hs)
        s = s.masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf"))
        y[:, :, h] = torch.softmax(s, -1) @ v[:, :, kh]
    return y.reshape(B, T, d) @ attn.o_proj.weight.double().T


@pytest.mark.parametrize("n_kv", [4, 2, 1])
def test_attention_matches_naive(n_kv):
    torch.manual_seed(1)
    cfg = model_config("debug", n_kv_heads=n_kv, rope_theta=500.0)
    attn = CausalSelfAttention(cfg)
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(2, 9, 64)
    cos, sin = RotaryEmbedding(cfg.head_dim, cfg.max_seq_len, 500.0)(9)
    got = attn(x, cos, sin)
    torch.testing.assert_close(got.double(), naive_attention(x, attn, 500.0, 4, n_kv), rtol=1e-4, atol=1e-5)


def test_causal():
    torch.manual_seed(0)
    model = build_model(model_config("debug", activation="polynorm")).eval()
    ids = torch.randint(0, 256, (1, 20))
    ids2 = ids.clone()
    ids2[0, 12:] = (ids2[0, 12:] + 1) % 256
    a, b = model(ids).logits, model(ids2).logits
    torch.testing.assert_close(a[:, :12], b[:, :12])
    assert not torch.allclose(a[:, 12:], b[:, 12:])


def test_mlp_matches_naive_formula():
    torch.manual_seed(0)
    mlp = MLP(16, 24, "polynorm")
    with torch.no_grad():
        mlp.act.weight.copy_(torch.tensor([0.3, -0.5, 0.9]))
        mlp.act.bias.fill_(0.1)
    x = torch.randn(3, 5, 16)
    h = x.double() @ mlp.up_proj.weight.double().T
    want = naive_poly_norm(h, mlp.act.weight, mlp.act.bias) @ mlp.down_proj.weight.double().T
    torch.testing.assert_close(mlp(x).double(), want, rtol=1e-5, atol=1e-6)
    gated = MLP(16, 24, "swiglu")
    g, u = x @ gated.gate_proj.weight.T, x @ gated.up_proj.weight.T
    want = (g * torch.sigmoid(g) * u) @ gated.down_proj.weight.T
    torch.testing.assert_close(gated(x), want)


def test_per_layer_activation_instances_and_init():
    torch.manual_seed(0)
    cfg = model_config("tiny", activation="polynorm", init="small", vocab_size=512, n_layers=2, d_model=256)
    model = build_model(cfg)
    acts = [b.mlp.act for b in model.layers]
    assert acts[0] is not acts[1] and acts[0].weight is not acts[1].weight
    for a in acts:  # PolyCom init survives the model init
        assert torch.equal(a.weight, torch.full((3,), 1 / 3)) and a.bias.item() == 0.0
    std = math.sqrt(2 / (5 * 256))
    w = model.layers[0].attn.q_proj.weight
    assert w.std().item() == pytest.approx(std, rel=0.03)
    assert model.layers[0].mlp.down_proj.weight.std().item() == pytest.approx(std / math.sqrt(4), rel=0.03)
    normal = build_model(model_config("tiny", vocab_size=512, n_layers=2, d_model=256))
    assert normal.tok_embeddings.weight.std().item() == pytest.approx(0.02, rel=0.03)
    assert torch.equal(model.layers[0].attn_norm.weight, torch.ones(256))


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = build_model(model_config("debug", activation="polynorm"))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ids = torch.randint(0, 256, (4, 32))
    first = None
    for _ in range(30):
        loss = model(ids[:, :-1], targets=ids[:, 1:]).loss
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 1.0


@pytest.mark.parametrize(
    "kwargs, field, hint",
    [
        (dict(n_heads=5), "n_heads", "divisor of 64"),
        (dict(n_kv_heads=3), "n_kv_heads", "[1, 4]"),
        (dict(activation="nope"), "activation", "polynorm"),
        (dict(d_model=0), "d_model", ">= 1"),
        (dict(init="xavier"), "init", "small"),
        (dict(dropout=1.5), "dropout", "[0.0, 1.0]"),
        (dict(activation_kwargs={"bogus": 1}), "activation_kwargs", "gelu"),
        (dict(moe=MoEConfig(num_experts=4, top_k=2), ffn_hidden=-1), "ffn_hidden", ">= 1"),
    ],
)
def test_bad_config_names_field(kwargs, field, hint):
    with pytest.raises((ValueError, TypeError)) as e:
        model_config("debug", **kwargs)
    assert field in str(e.value) and hint in str(e.value)


def test_bad_moe_config():
    with pytest.raises(ValueError, match=r"top_k must be in \[1, num_experts=4\]"):
        MoEConfig(num_experts=4, top_k=5)
    with pytest.raises(ValueError, match="router"):
        MoEConfig(router="hash")
    with pytest.raises(ValueError, match="coefficients"):
        MoEConfig(coefficients="shared")
    with pytest.raises(ValueError, match="router_activation.*gated"):
        MoEConfig(router="act_softmax", router_activation="swiglu")
    with pytest.raises(ValueError, match="router_temperature"):
        MoEConfig(router_temperature=0.0)


def test_config_dict_round_trip():
    for name in PRESETS:
        cfg = model_config(name, activation="polynorm", activation_kwargs={"order": 2})
        d = cfg.to_dict()
        assert ModelConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match=r"unknown keys \['colour'\]"):
        ModelConfig.from_dict({**model_config("debug").to_dict(), "colour": 1})
    with pytest.raises(ValueError, match=r"moe.bogus"):
        ModelConfig.from_dict({**model_config("debug-moe").to_dict(), "moe": {"bogus": 1}})
    with pytest.raises(ValueError, match="unknown model preset"):
        model_config("huge")
    assert model_config("tiny-moe", moe={"top_k": 1}).moe.num_experts == 8


def test_rope_rejects_too_long():
    model = build_model(model_config("debug"))
    with pytest.raises(ValueError, match="max_seq_len=64"):
        model(torch.zeros(1, 65, dtype=torch.long))


def test_polycom_models_prints_counts(capsys):
    from polycom.cli import main

    assert main(["models", "paper-1b", "--activations", "gelu,swiglu"]) == 0
    table = capsys.readouterr().out
    assert "| paper-1b | gelu | 8256 | 1,345,423,360 |" in table
    assert "| paper-1b | swiglu | 5504 | 1,345,423,360 |" in table
    assert main(["models", "nope"]) == 2 and "nope" in capsys.readouterr().err


def test_bf16_autocast_close_to_fp32():
    torch.manual_seed(0)
    model = build_model(model_config("debug", activation="polynorm"))
    ids = torch.randint(0, 256, (2, 16))
    ref = model(ids, targets=ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(ids, targets=ids)
    assert low.logits.dtype == torch.bfloat16 and low.ce_loss.dtype == torch.float32
    # bf16 keeps ~3 significant digits: the loss of a 2-layer model agrees to 1e-2.
    assert low.ce_loss.item() == pytest.approx(ref.ce_loss.item(), abs=1e-2)
    low.loss.backward()


def test_same_seed_gives_every_activation_the_same_shared_tensors():
    """The paired design of `polycom compare`: seed k gives GELU and SwiGLU (one MLP matrix
    more, other widths) identical values in every tensor they share by name and shape."""
    def build(act, seed):
        torch.manual_seed(seed)
        return build_model(model_config("debug", activation=act, vocab_size=300, max_seq_len=32)).state_dict()

    gelu, swiglu, other_seed = build("gelu", 1), build("swiglu", 1), build("gelu", 2)
    shared = [k for k in gelu if k in swiglu and gelu[k].shape == swiglu[k].shape]
    assert any("attn" in k for k in shared) and "tok_embeddings.weight" in shared
    for k in shared:
        assert torch.equal(gelu[k], swiglu[k]), k
    random_tensors = [k for k in gelu if gelu[k].std() > 0]  # drawn at init, not constant
    assert random_tensors and all(not torch.equal(gelu[k], other_seed[k]) for k in random_tensors)
