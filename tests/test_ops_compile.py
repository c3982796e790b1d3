"""torch.compile sees every activation whole: no graph breaks, no warnings, no float64 in generated code."""

import warnings

import pytest
import torch
from torch._inductor.utils import run_and_get_code

import polycom
from polycom.models.mlp import build_mlp


@pytest.mark.parametrize("name", polycom.list_activations())
def test_every_registered_activation_compiles_fullgraph_forward_and_backward(name):
    """The MLP block each activation is built into by the models (its own layer for mu_layer and af_kan)."""
    torch.manual_seed(0)
    model = build_mlp(16, 48, name)
    ids = torch.randn(2, 9, 16)
    explanation = torch._dynamo.explain(model)(ids)
    assert explanation.graph_break_count == 0, explanation.break_reasons

    expected = model(ids)
    expected.float().square().mean().backward()
    want = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    torch._dynamo.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # aot_eager: Dynamo and AOTAutograd trace forward and backward (what fullgraph needs), no Inductor
        # compile per activation; Inductor's code is checked below.
        out = torch.compile(model, fullgraph=True, backend="aot_eager")(ids)
        out.float().square().mean().backward()
    assert not [str(w.message) for w in caught if "lru_cache" in str(w.message)]
    # Same ops in the same order as eager (aot_eager runs the traced aten graph): float32 rounding only.
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for k, p in model.named_parameters():
        if k in want:
            torch.testing.assert_close(p.grad, want[k], rtol=1e-4, atol=1e-5, msg=k)


def test_explicit_paths_under_compile_trace_without_lru_cache_warnings(monkeypatch):
    """An explicit implementation asks whether Triton can run (TRITON_INTERPRET=1 makes CPU eligible):
    Dynamo evaluates that once as a constant, it does not trace a cached function."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    torch._dynamo.reset()
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), polycom.PolyNorm(implementation="eager"),
                                torch.nn.Linear(16, 16), polycom.PolyReLU(implementation="compiled"))
    x = torch.randn(3, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert not [str(w.message) for w in caught if "lru_cache" in str(w.message)]


def _inductor_code(fn) -> list[str]:
    torch._dynamo.reset()
    _, codes = run_and_get_code(fn)
    return codes


# One compile per case (~6 s each on a 2-core CPU): the two PolyNorm ops (the statistics and their eps
# are where a float64 constant crept into Liger-Kernel's kernel) in both compute dtypes' inputs, and
# every other family in float32.
FLOAT64_CASES = [("polynorm", torch.float32), ("polynorm", torch.bfloat16), ("gated_polynorm", torch.bfloat16),
                 ("polyrelu", torch.float32), ("hermite", torch.float32), ("fourier", torch.float32),
                 ("tropical", torch.float32),
                 # Motif's input bound (1e6), a float constant of the fused op: its clamp and gradient mask
                 ("motif_polynorm", torch.float32), ("motif_gated_polynorm", torch.bfloat16)]


@pytest.mark.parametrize("activation,dtype", FLOAT64_CASES)
def test_compiled_code_holds_no_float64(activation, dtype):
    """A Python float (eps, a coefficient) must enter generated code as the tensor's dtype: a float64
    constant promotes the whole row loop to double (Liger-Kernel's compiled PolyNorm was 6x slower so)."""
    torch.manual_seed(0)
    act = polycom.get_activation(activation, implementation="compiled")
    gated = polycom.activation_info(activation).gated
    inputs = [torch.randn(5, 43, dtype=dtype, requires_grad=True) for _ in range(2 if gated else 1)]

    def step():
        y = act(*inputs)
        y.float().sum().backward()

    codes = _inductor_code(step)
    assert len(codes) >= 2  # the forward and the backward kernel were compiled here
    for code in codes:
        assert "double" not in code and "float64" not in code


def test_a_model_compiled_by_inductor_holds_no_float64():
    """Inside a model compiled by Inductor the closed form is fused into the surrounding graph."""
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(43, 43), polycom.PolyNorm(), torch.nn.Linear(43, 43), polycom.PolyReLU())
    x = torch.randn(5, 43)
    codes = _inductor_code(lambda: torch.compile(mlp)(x).sum().backward())
    assert len(codes) >= 2 and all("double" not in c and "float64" not in c for c in codes)
