"""Activation families in one file each, the MLP-kind registry, width matching, fixed polynomials."""

import importlib
import math
import sys
import textwrap

import numpy as np
import pytest
import torch

import polycom
from polycom import registry
from polycom.models import build_model, model_config
from polycom.models import mlp as mlp_module
from polycom.models.mlp import MLP_KINDS, MLPKind, build_mlp, matched_hidden, mlp_kind, register_mlp_kind
from polycom.ops import dispatch
from polycom.ops import poly_norm as poly_norm_op

# A family written the way docs/models.md says: one file, nothing else edited.
FAMILY_SOURCE = '''
"""ReGLU, relu(gate) * up (Shazeer 2020), as a test family with a fast path."""

import torch
from torch import nn

from polycom.ops import dispatch
from polycom.ops.fused_op import OpKernels
from polycom.registry import register_activation


def reglu_reference(gate, up):
    return torch.relu(gate) * up


def reglu_forward(gate, up):
    return torch.relu(gate) * up


def reglu_backward(grad_y, gate, up):
    return grad_y * (gate > 0) * up, grad_y * torch.relu(gate)


class ReGLU(nn.Module):
    def __init__(self, implementation="auto"):
        super().__init__()
        self.implementation = implementation

    def forward(self, gate, up):
        return dispatch.call("test_reglu", self.implementation, gate, up)


dispatch.register_op("test_reglu", reference=reglu_reference,
                     kernels=OpKernels(forward=reglu_forward, backward=reglu_backward, rows=2))
register_activation("test_reglu", ReGLU, gated=True, description="relu(gate) * up",
                    paper="Shazeer 2020, GLU Variants Improve Transformer")
'''


@pytest.fixture
def clean_registries():
    """Registrations made by a test (every name starts with "test_") vanish with it.

    The tables are cleaned in place, not swapped for copies: a test may also resolve the
    lazy Triton kernels, and those entries must stay for the tests that follow.
    """
    yield
    tables = [registry._REGISTRY, mlp_module.MLP_KINDS, dispatch._OPS]
    for table in tables:
        for key in [k for k in table if (k[0] if isinstance(k, tuple) else k).startswith("test_")]:
            del table[key]


def _import_family(tmp_path, monkeypatch, name, source):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    module = importlib.import_module(name)
    monkeypatch.delitem(sys.modules, name)
    return module


def _mlp_weights(model) -> int:
    """Weights in the MLPs of ``model``, the activations' own coefficients excluded."""
    return sum(p.numel() for n, p in model.named_parameters() if ".mlp." in n and ".act." not in n and "router" not in n)


def test_a_family_in_one_file_registers_builds_and_is_width_matched(tmp_path, monkeypatch, clean_registries):
    family = _import_family(tmp_path, monkeypatch, "reglu_family", FAMILY_SOURCE)
    assert "test_reglu" in polycom.list_activations(gated=True)
    info = polycom.activation_info("test_reglu")
    assert info.mlp_kind == "gated" and info.paper.startswith("Shazeer")
    assert dispatch.registered_op("test_reglu").kernel("eager", "forward") is family.reglu_forward

    torch.manual_seed(0)
    eager = {"implementation": "eager"}  # the compiled path is checked below, once
    dense = build_model(model_config("debug", activation="test_reglu", activation_kwargs=eager))
    relu = build_model(model_config("debug", activation="relu"))
    ids = torch.randint(0, 256, (2, 8))
    assert torch.isfinite(dense(ids).logits).all()
    # Parameter matching covered it with no other edit: 3 d h' within 1% of relu's 2 d h.
    assert dense.config.mlp_hidden == 2 * relu.config.mlp_hidden // 3
    assert abs(_mlp_weights(dense) - _mlp_weights(relu)) <= 0.01 * _mlp_weights(relu)
    block = dense.layers[0].mlp
    x = torch.randn(3, dense.config.d_model)
    want = block.down_proj(torch.relu(block.gate_proj(x)) * block.up_proj(x))  # the gated layout by hand
    torch.testing.assert_close(block(x), want, rtol=0, atol=0)

    moe = build_model(model_config("debug-moe", activation="test_reglu", activation_kwargs=eager))
    moe_relu = build_model(model_config("debug-moe", activation="relu"))
    assert torch.isfinite(moe(ids).logits).all()
    assert abs(_mlp_weights(moe) - _mlp_weights(moe_relu)) <= 0.01 * _mlp_weights(moe_relu)


def test_a_family_fast_path_runs_through_the_tables(tmp_path, monkeypatch, clean_registries):
    family = _import_family(tmp_path, monkeypatch, "reglu_family", FAMILY_SOURCE)
    # The compiled backend is torch.compile of the same function (compiling it here would take
    # ~35 s on a 2-core CPU; the compiled wrapper itself is exercised by test_ops.py).
    assert dispatch.registered_op("test_reglu").kernel("compiled", "forward").fn is family.reglu_forward
    torch.manual_seed(0)
    gate, up, g = torch.randn(3, 4, 8, dtype=torch.float64).unbind(0)
    # Independent expectation: relu(gate) * up and its gradients, typed out.
    want_y, want_ggate, want_gup = gate.clamp(min=0) * up, g * (gate > 0).double() * up, g * gate.clamp(min=0)
    for impl in ("reference", "eager"):
        act = polycom.get_activation("test_reglu", implementation=impl)
        leaves = [gate.clone().requires_grad_(True), up.clone().requires_grad_(True)]
        y = act(*leaves)
        y.backward(g)
        # Elementwise products in float64: one rounding each, the same on every path.
        torch.testing.assert_close(y, want_y, rtol=1e-15, atol=0)
        torch.testing.assert_close(leaves[0].grad, want_ggate, rtol=1e-15, atol=0)
        torch.testing.assert_close(leaves[1].grad, want_gup, rtol=1e-15, atol=0)
        assert (y.grad_fn.name() == "TestRegluFunctionBackward") == (impl != "reference")


class _Bilinear(torch.nn.Module):
    """down(A x * B x): a layer that is not act(...) of a projection (a multiplicative layer)."""

    def __init__(self, d_model, hidden, activation, activation_kwargs):
        super().__init__()
        self.a = torch.nn.Linear(d_model, hidden, bias=False)
        self.b = torch.nn.Linear(d_model, hidden, bias=False)
        self.down_proj = torch.nn.Linear(hidden, d_model, bias=False)

    def forward(self, x):
        return self.down_proj(self.a(x) * self.b(x))


def test_a_kind_with_its_own_layer_is_built_and_matched(clean_registries):
    register_mlp_kind(MLPKind("test_bilinear", "down(A x * B x)", lambda d, h: 3 * d * h, build=_Bilinear))
    polycom.register_activation("test_bilinear", torch.nn.Identity, mlp_kind="test_bilinear", description="A x * B x")
    model = build_model(model_config("debug", activation="test_bilinear"))
    block = model.layers[0].mlp
    assert isinstance(block, _Bilinear)
    d, h = model.config.d_model, model.config.mlp_hidden
    assert sum(p.numel() for p in block.parameters()) == mlp_kind("test_bilinear").parameters(d, h)
    relu = model_config("debug", activation="relu")
    assert h == 2 * relu.mlp_hidden // 3  # matched like a gated MLP: same weight count per width
    with pytest.raises(ValueError, match="test_bilinear.*no expert"):
        build_model(model_config("debug-moe", activation="test_bilinear"))
    with pytest.raises(ValueError, match="unknown MLP kind 'nope'; valid kinds"):
        mlp_kind("nope")


@pytest.mark.parametrize("activation", ["relu", "swiglu", "polynorm", "gated_polynorm"])
@pytest.mark.parametrize("d_model, hidden", [(8, 12), (64, 96)])
def test_kind_parameter_count_equals_the_built_mlp(activation, d_model, hidden):
    mlp = build_mlp(d_model, hidden, activation)
    kind = mlp_kind(polycom.activation_info(activation).mlp_kind)
    weights = sum(p.numel() for n, p in mlp.named_parameters() if not n.startswith("act."))
    assert weights == kind.parameters(d_model, hidden)
    assert {n.split(".")[0] for n, _ in mlp.named_parameters() if not n.startswith("act.")} == \
        {f"{p}_proj" for p in (*kind.projections, "down")}


def _old_gated_rule(h, multiple):
    """The rule models/config.py had, typed out: 2h/3 to the nearest multiple (ties up), halved until within 1%."""
    m = multiple
    while True:
        w = max(m, math.floor(2 * h / 3 / m + 0.5) * m)
        if m == 1 or abs(3 * w - 2 * h) <= 0.02 * h:
            return w
        m = max(1, m // 2)


@pytest.mark.parametrize("multiple", [1, 2, 8, 64])
def test_width_matching_keeps_the_config_rule_and_holds_within_one_percent(multiple):
    for h in range(6, 4000, 7):
        w = matched_hidden(h, "gated", multiple, d_model=32)
        assert w == _old_gated_rule(h, multiple), h
        # Within 1%, or, below h = 50 where one column is more than 1%, the nearest width (off by <= 1 of 3).
        assert abs(3 * w - 2 * h) <= max(0.01 * 2 * h, 1)
        back = matched_hidden(w, "plain", multiple, d_model=32, reference_kind="gated")
        assert abs(2 * back - 3 * w) <= max(0.01 * 3 * w, 1)
    assert matched_hidden(8256, "gated", 64, d_model=2048) == 5504  # the paper's widths
    assert matched_hidden(5504, "plain", 64, d_model=2048, reference_kind="gated") == 8256
    assert matched_hidden(100, "plain", 64, d_model=8) == 100  # same kind: unchanged


def test_hf_swap_uses_the_shared_width_rule(monkeypatch):
    pytest.importorskip("transformers")
    from transformers import LlamaConfig, LlamaForCausalLM

    import polycom.hf as H

    calls = []
    shared = H.swap.matched_hidden
    monkeypatch.setattr(H.swap, "matched_hidden", lambda *a, **k: calls.append((a, k)) or shared(*a, **k))
    # intermediate 86: 3/2 * 86 = 129, a tie at multiple 2; the shared rule rounds ties up (130),
    # where the old swap-only rule's round() gave 128.
    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=86, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2)
    model = LlamaForCausalLM(cfg)
    H.swap_activation(model, "relu", mode="non_gated")
    assert model.model.layers[0].mlp.up_proj.out_features == 130
    assert calls and calls[0][1] == {"reference_kind": "gated"}


def test_registered_lists_every_entry_with_its_kind_and_paper():
    infos = polycom.registered()
    assert [i.name for i in infos] == polycom.list_activations()
    for info in infos:
        assert info.mlp_kind in MLP_KINDS and info.description and info.paper, info.name
        assert (info.mlp_kind == "gated") == info.gated


def test_cli_lists_the_new_families(capsys):
    from polycom.cli import main

    assert main(["activations"]) == 0
    out = capsys.readouterr().out
    assert "poly2_relu_approx" in out and "quad" in out and "gated_polynorm" in out


def test_op_table_is_filled_by_the_families():
    op = dispatch.registered_op("poly_norm")
    assert op.kernel("eager", "backward") is poly_norm_op.poly_norm_backward
    assert op.kernels.backends == ("eager", "compiled", "triton")
    assert dispatch.registered_op("hermite").kernels.backends == ("eager", "compiled")
    with pytest.raises(ValueError, match="no dispatched op named 'nope'"):
        dispatch.registered_op("nope")
    with pytest.raises(ValueError, match="op 'hermite' has no 'triton' backend"):
        dispatch.registered_op("hermite").kernel("triton", "forward")
    with pytest.raises(ValueError, match="'implementation'.*hermite has no Triton kernel"):
        dispatch.call("hermite", "triton", torch.randn(2, 3), torch.ones(3))
    # No import circle: the Triton module does not import the op table.
    source = (importlib.util.find_spec("polycom.ops.triton_ops").origin)
    assert "import dispatch" not in open(source).read() and "from .dispatch" not in open(source).read()


# ---- fixed low-degree polynomials ----

@pytest.mark.parametrize("degree", [2, 3])
@pytest.mark.parametrize("interval", [(-5.0, 5.0), (-1.0, 1.0), (-2.0, 8.0)])
def test_relu_fit_equals_polyfit_on_a_fine_grid(degree, interval):
    from polycom.activations.fixed_polynomials import relu_least_squares_coefficients

    got = relu_least_squares_coefficients(degree, interval)
    grid = np.linspace(*interval, 200_001)
    want = np.polyfit(grid, np.maximum(grid, 0.0), degree)[::-1]  # lowest power first
    # The grid's sum is the integral up to O(spacing) = 5e-5 relative (endpoint terms),
    # so 1e-4 of the interval's scale bounds the difference; coefficient k scales as a^(1-k).
    a = max(abs(interval[0]), abs(interval[1]))
    for k, (g, w) in enumerate(zip(got, want)):
        assert abs(g - w) <= 1e-4 * a ** (1 - k), (k, got, want)


def test_symmetric_fit_closed_form_and_vanishing_cubic():
    """On [-a, a]: p = 3a/32 + x/2 + 15x^2/(32a) (by hand from the Legendre projection), cubic term 0."""
    for a in (1.0, 5.0):
        p2 = polycom.get_activation("poly2_relu_approx", interval=(-a, a)).coefficients
        p3 = polycom.get_activation("poly3_relu_approx", interval=(-a, a)).coefficients
        np.testing.assert_allclose(p2, [3 * a / 32, 0.5, 15 / (32 * a)], rtol=1e-12, atol=0)
        np.testing.assert_allclose(p3, [*p2, 0.0], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name, kwargs", [
    ("poly2_relu_approx", {}),
    ("poly3_relu_approx", {"interval": (-2.0, 8.0), "input_scale": 0.5}),
    ("square", {}),
    ("quad", {"input_scale": 2.0}),
])
def test_fixed_polynomials_values_gradients_and_no_parameters(name, kwargs):
    act = polycom.get_activation(name, **kwargs).double()
    assert list(act.parameters()) == [] and act.state_dict() == {}
    assert polycom.activation_info(name).mlp_kind == "plain"
    x = torch.linspace(-6, 6, 25, dtype=torch.float64).reshape(5, 5)
    scale = kwargs.get("input_scale", 1.0)
    expected = {"square": lambda z: z**2, "quad": lambda z: z**2 + z}.get(
        name, lambda z: np.polyval(act.coefficients[::-1], z))(scale * x.numpy())
    np.testing.assert_allclose(act(x).numpy(), expected, rtol=1e-12, atol=1e-12)  # float64 rounding only
    assert torch.autograd.gradcheck(act, (x.clone().requires_grad_(True),))
    assert act(x.float()).dtype == torch.float32 and act(x.bfloat16()).dtype == torch.bfloat16


def test_fixed_polynomials_build_in_models():
    ids = torch.randint(0, 256, (1, 8))
    model = build_model(model_config("debug", activation="quad"))
    assert model.config.mlp_hidden == model_config("debug", activation="relu").mlp_hidden
    assert torch.isfinite(model(ids).logits).all()


@pytest.mark.parametrize("kwargs, pattern", [
    ({"degree": 0}, "'degree' must be an int >= 1"),
    ({"interval": (3.0, 1.0)}, "'interval' must be finite with lo < hi"),
    ({"interval": 5.0}, "'interval' must be two numbers"),
    ({"input_scale": 0.0}, "'input_scale' must be a finite number > 0"),
])
def test_fixed_polynomial_bad_arguments_name_the_argument(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        polycom.ReLUApproximation(**kwargs)
