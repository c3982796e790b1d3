"""AF-KAN (Ta & Tran 2025) as an MLP kind, and the MoE experts of the kinds with their own
layer (AF-KAN, the Mu-layer): formulas against typed-out loops, gradcheck, parameter
matching, per-expert outputs against the dense layer with that expert's weights, training."""

import math

import pytest
import torch
from test_peer_activations import _mlp_weights

from polycom.activations.af_kan import AFKANFunction
from polycom.models import MoE, build_model, model_config
from polycom.models.af_kan import AFKAN, AFKANExperts, af_kan_parameters
from polycom.models.grouped import ExpertGroups
from polycom.models.mlp import MuExperts, MuLayer, mlp_kind


def _silu(u: float) -> float:
    return u / (1.0 + math.exp(-u))


def _naive_phi(x: float, c: list[float], grid_size=3, order=3, lo=-1.0, hi=1.0, f=_silu) -> float:
    """sum_i c_i [f(x - s_i) f(e_i - x)]^2 16 / (e_i - s_i)^4, knots typed out from the definition."""
    t = (hi - lo) / grid_size
    total = 0.0
    for i in range(grid_size + order):
        s, e = lo + (i - order) * t, lo + (i + 1) * t
        total += c[i] * (f(x - s) * f(e - x)) ** 2 * 16.0 / (e - s) ** 4
    return total


def test_af_kan_function_is_the_formula_element_by_element():
    torch.manual_seed(0)
    x = torch.randn(3, 5, dtype=torch.float64) * 2
    for kwargs, f in (({}, _silu), ({"base_activation": "relu", "grid_size": 4, "spline_order": 2},
                                    lambda u: max(u, 0.0))):
        phi = AFKANFunction(**kwargs).double()
        with torch.no_grad():
            phi.coefficients.copy_(torch.randn(phi.num_basis, dtype=torch.float64))
        c = phi.coefficients.tolist()
        g, k = kwargs.get("grid_size", 3), kwargs.get("spline_order", 3)
        want = torch.tensor([[_naive_phi(v, c, g, k, f=f) for v in row] for row in x.tolist()], dtype=torch.float64)
        torch.testing.assert_close(phi(x), want, rtol=1e-12, atol=1e-12)


def test_relu_base_is_relu_kan_with_peak_one_at_each_centre():
    # ReLU-KAN's R_i is 1 at the centre of its support and 0 outside it.
    phi = AFKANFunction(base_activation="relu", grid_size=5, spline_order=2).double()
    with torch.no_grad():
        phi.coefficients.zero_()
        phi.coefficients[2] = 1.0
    s, e = phi.starts[2], phi.ends[2]
    x = torch.tensor([(s + e) / 2, s - 0.1, e + 0.1], dtype=torch.float64)
    torch.testing.assert_close(phi(x), torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))


def test_init_is_variance_preserving_on_a_million_samples():
    x = torch.randn(1_000_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    second_moment = AFKANFunction().double()(x).square().mean().item()
    assert second_moment == pytest.approx(1.0, rel=0.02)


def test_gradcheck_float64_function_and_layer():
    torch.manual_seed(2)
    phi = AFKANFunction().double()
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    c = phi.coefficients.detach().clone().requires_grad_(True)
    from polycom.activations.af_kan import af_kan_function
    assert torch.autograd.gradcheck(lambda x, c: af_kan_function(x, c, phi.starts, phi.ends, "silu"), (x, c))
    layer = AFKAN(6, 5).double()
    names = [n for n, _ in layer.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in layer.parameters())

    def run(x, *p):
        return torch.func.functional_call(layer, dict(zip(names, p)), (x,))

    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(run, (x, *params))


def test_dense_layer_is_the_typed_out_composition():
    torch.manual_seed(3)
    layer = AFKAN(8, 12).double()
    with torch.no_grad():  # non-default gains and biases so a missing term shows
        for p in (layer.input_norm.weight, layer.input_norm.bias, layer.hidden_norm.weight, layer.hidden_norm.bias):
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(2, 8, dtype=torch.float64)

    def ln(v, w, b):
        mean, var = v.mean(-1, keepdim=True), v.var(-1, unbiased=False, keepdim=True)
        return (v - mean) / torch.sqrt(var + 1e-5) * w + b

    def phi(v, c):
        return torch.tensor([[_naive_phi(a, c.tolist()) for a in row] for row in v.tolist()], dtype=torch.float64)

    u = phi(ln(x, layer.input_norm.weight, layer.input_norm.bias), layer.input_act.coefficients) @ layer.up_proj.weight.T
    want = phi(ln(u, layer.hidden_norm.weight, layer.hidden_norm.bias), layer.act.coefficients) @ layer.down_proj.weight.T
    torch.testing.assert_close(layer(x), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("d_model", [64, 96, 128])
def test_dense_parameter_count_is_exact_and_within_one_percent_of_the_plain_mlp(d_model):
    over = {"d_model": d_model, "n_heads": 4}
    with torch.device("meta"):
        kan = build_model(model_config("debug", activation="af_kan", **over))
        relu = build_model(model_config("debug", activation="relu", **over))
    h = kan.config.mlp_hidden
    mlp = kan.layers[0].mlp
    assert isinstance(mlp, AFKAN) and mlp.hidden == h
    assert sum(p.numel() for p in mlp.parameters()) == af_kan_parameters(d_model, h) + 2 * 6  # + 2 (G + k) coefficients
    assert mlp_kind("afkan").parameters(d_model, h) == 2 * d_model * h + 2 * (d_model + h)
    # _mlp_weights leaves out ".act." (phi_2's 6 coefficients) but counts input_act's 6: within 1% either way.
    assert abs(_mlp_weights(kan) - _mlp_weights(relu)) <= 0.01 * _mlp_weights(relu)


def test_compare_size_model_matches_gelu_within_one_percent():
    # The compare tiny preset's model: d_model 96 (src/polycom/configs/compare/tiny.yaml).
    with torch.device("meta"):
        n = {a: build_model(model_config("tiny", activation=a, d_model=96)).num_params() for a in ("gelu", "af_kan")}
    assert abs(n["af_kan"] / n["gelu"] - 1) < 0.01, n


def test_bad_hyper_parameters_name_the_argument():
    with pytest.raises(ValueError, match="'grid_size' must be >= 1"):
        AFKANFunction(grid_size=0)
    with pytest.raises(ValueError, match="'spline_order' must be >= 1"):
        AFKANFunction(spline_order=0)
    with pytest.raises(TypeError, match="'grid_size' must be an int"):
        AFKANFunction(grid_size=2.5)
    with pytest.raises(ValueError, match="'grid_range' must be finite with lo < hi"):
        AFKANFunction(grid_range=(1.0, -1.0))
    with pytest.raises(ValueError, match="'base_activation' must be one of"):
        AFKANFunction(base_activation="tanh")
    with pytest.raises(ValueError, match="'activation' must be an activation of MLP kind 'afkan'"):
        AFKAN(8, 12, activation="relu")
    with pytest.raises(ValueError, match="'grid_size' must be >= 1"):
        build_model(model_config("debug", activation="af_kan", activation_kwargs={"grid_size": 0}))


def test_compare_runs_af_kan_end_to_end(tmp_path):
    from test_compare import small_spec

    from polycom.experiments.compare.sweep import compare

    spec = small_spec(tmp_path, activations=["af_kan", "gelu"], seeds=1, throughput_rounds=0, baseline="gelu")
    result = compare(spec, tmp_path / "out", say=lambda *a: None)
    assert list(result.states.values()) == ["done"] * 2 and (tmp_path / "out" / "REPORT.md").exists()
    # 8 steps of a 1-layer byte-level model: the loss starts near ln(256) = 5.55 and must have moved.
    assert all(math.isfinite(r.val_loss) and r.val_loss < math.log(256) for r in result.records)


# --- MoE experts of the kinds with their own layer -------------------------------------------

def _routed(d=8, seed=0):
    """11 rows sorted by expert over 4 experts, expert 2 getting none (an empty group)."""
    expert = torch.tensor([0, 0, 0, 1, 1, 3, 3, 3, 3, 3, 3])
    x = torch.randn(expert.numel(), d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x, ExpertGroups.from_sorted(expert, 4)


def _dense_with_weights_of(experts, e, kind):
    """The dense layer of ``kind`` loaded by hand with expert e's tensors."""
    if kind == "mu":
        dense = MuLayer(experts.up_proj.shape[2], experts.hidden).double()
        with torch.no_grad():
            for name in ("up_proj", "rank_down", "rank_up", "down_proj"):
                getattr(dense, name).weight.copy_(getattr(experts, name)[e])
        return dense
    d, h = experts.up_proj.shape[2], experts.hidden
    dense = AFKAN(d, h).double()
    E = experts.num_experts
    with torch.no_grad():
        dense.up_proj.weight.copy_(experts.up_proj[e])
        dense.down_proj.weight.copy_(experts.down_proj[e])
        for layer, norm, act in (("input", dense.input_norm, dense.input_act), ("hidden", dense.hidden_norm, dense.act)):
            norm.weight.copy_(getattr(experts, f"{layer}_norm_weight").view(E, -1)[e])
            norm.bias.copy_(getattr(experts, f"{layer}_norm_bias").view(E, -1)[e])
            c = getattr(experts, f"{layer}_coefficients")
            act.coefficients.copy_(c.view(E, -1)[e] if experts.per_expert_coefficients else c)
    return dense


# float64: only the summation order differs; float32: ~1e-7 per op over a few dozen terms;
# bfloat16 (8-bit mantissa, 4e-3 per rounding) through two or four matmuls of width <= 10.
TOLERANCES = {torch.float64: (1e-10, 1e-12), torch.float32: (1e-5, 1e-5), torch.bfloat16: (5e-2, 5e-2)}


@pytest.mark.parametrize("dtype", list(TOLERANCES))
@pytest.mark.parametrize("kind,per_expert", [("mu", False), ("afkan", False), ("afkan", True)])
def test_each_experts_rows_equal_the_dense_layer_with_its_weights(kind, per_expert, dtype):
    torch.manual_seed(4)
    E, d, h = 4, 8, 10
    experts = (MuExperts(d, h, E) if kind == "mu" else AFKANExperts(d, h, E, per_expert_coefficients=per_expert))
    experts = experts.double()
    with torch.no_grad():  # distinct per-expert vectors so an expert mix-up shows
        for name, p in experts.named_parameters():
            if p.dim() == 1:
                p.add_(0.2 * torch.randn_like(p))
    xs, groups = _routed(d=d)
    want = torch.zeros(xs.shape[0], d, dtype=torch.float64)
    for e in range(E):
        rows = groups.expert == e
        if rows.any():
            want[rows] = _dense_with_weights_of(experts, e, kind)(xs[rows]).detach()
    out = experts.to(dtype)(xs.to(dtype), groups)
    assert out.shape == (xs.shape[0], d) and out.dtype == dtype
    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(out.double(), want, rtol=rtol, atol=atol * want.abs().max().item())


@pytest.mark.parametrize("activation", ["mu_layer", "af_kan"])
def test_moe_model_with_own_layer_kinds_trains_and_matches_the_plain_moe(activation):
    torch.manual_seed(5)
    model = build_model(model_config("debug-moe", activation=activation))
    assert isinstance(model.layers[0].mlp, MoE) and model.layers[0].mlp.experts is not None
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ids = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(6):
        out = model(ids, targets=ids)
        opt.zero_grad()
        out.loss.backward()
        assert all(p.grad is not None for p in model.parameters())
        opt.step()
        losses.append(out.ce_loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0] - 0.1, losses
    for preset in ("debug-moe", "tiny-moe"):
        with torch.device("meta"):
            n = {a: build_model(model_config(preset, activation=a)).num_params() for a in ("gelu", activation)}
        assert abs(n[activation] / n["gelu"] - 1) < 0.01, (preset, n)


def test_moe_active_params_count_top_k_experts_and_shared_coefficients():
    cfg = model_config("debug-moe", activation="af_kan")  # 4 experts, top-2
    moe = build_model(cfg).layers[0].mlp
    d, h, E, k = 64, cfg.expert_hidden, 4, 2
    per_expert = af_kan_parameters(d, h)
    assert sum(p.numel() for p in moe.experts.parameters()) == E * per_expert + 2 * 6
    assert moe.active_params() == d * E + k * per_expert + 2 * 6
    per = build_model(model_config("debug-moe", activation="af_kan", moe={"num_experts": 4, "top_k": 2,
                                                                          "coefficients": "per_expert"}))
    assert per.layers[0].mlp.active_params() == d * E + k * (per_expert + 2 * 6)


def test_moe_expert_matrices_get_the_model_init():
    model = build_model(model_config("debug-moe", activation="mu_layer"))
    experts = model.layers[0].mlp.experts
    std = model.config.resolved_init_std
    assert experts.up_proj.std().item() == pytest.approx(std, rel=0.05)
    assert experts.down_proj.std().item() == pytest.approx(std / math.sqrt(2 * model.config.n_layers), rel=0.05)
