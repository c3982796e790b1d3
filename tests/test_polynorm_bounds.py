"""Motif's bounded PolyNorm (sigmoid coefficients, clamped bias, output scale, clamped input) on every path."""

import pytest
import torch
from naive import naive_poly_norm

import polycom
from polycom import functional as PF
from polycom.activations.polynorm_bounds import MOTIF_BOUNDS, PolyNormBounds
from polycom.ops import available_implementations

# As test_ops.py: fp32 paths agree to a few ulps; bf16 computes in fp32 and rounds once (one bf16 ulp).
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-5), torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2)}


def naive_motif(x, logits, bias, scale=0.5, bias_bound=0.5, input_bound=1e6):
    """Motif's bounded PolyNorm typed out in float64, from the formula in polynorm_bounds.py."""
    x = x.double().clamp(-input_bound, input_bound)
    return scale * naive_poly_norm(x, torch.sigmoid(logits.double()), bias.double().clamp(-bias_bound, bias_bound))


def _case(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 40, generator=g)
    x[0, :3] = torch.tensor([3e6, -5e6, 2e6])  # beyond the input bound
    logits = torch.randn(3, generator=g)
    bias = torch.tensor([0.9])  # beyond the bias bound: clamped to 0.5
    return x.to(dtype), logits, bias


def _motif(name, impl, logits, bias):
    act = polycom.get_activation(name, implementation=impl)
    with torch.no_grad():
        act.weight.copy_(logits)
        act.bias.copy_(bias)
    return act


@pytest.mark.parametrize("impl", ["reference", "eager", "compiled", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_motif_polynorm_equals_the_formula_on_every_path(impl, dtype):
    x, logits, bias = _case(dtype)
    if impl not in available_implementations(x):
        pytest.skip(f"{impl} unavailable here")
    y = _motif("motif_polynorm", impl, logits, bias)(x)
    want = naive_motif(x, logits, bias)
    assert y.dtype == dtype
    torch.testing.assert_close(y.double(), want.to(dtype).double(), **TOL[dtype])
    # Rows 1.. are inside every bound; row 0 was clamped: it equals the row with the clamped values.
    clamped = x[:1].float().clamp(-1e6, 1e6)
    torch.testing.assert_close(y[:1].float(), naive_motif(clamped, logits, bias).to(dtype).float(), **TOL[dtype])


# The bounds act outside the fused op (on x and the coefficients), so one fast path checks them; the
# compiled op itself is gradchecked in test_ops_higher_order.py.
@pytest.mark.parametrize("impl", ["reference", "eager"])
def test_motif_gradcheck_and_gradgradcheck_float64(impl):
    x, logits, bias = (t.double() for t in _case(torch.float64))
    x = x[1:4, :8]  # inside the input bound: clamp is smooth there (at the bound its derivative jumps)
    up = torch.randn_like(x)
    for b in (torch.tensor([0.3], dtype=torch.float64), torch.tensor([0.9], dtype=torch.float64)):
        leaves = (x.clone().requires_grad_(True), logits.clone().requires_grad_(True), b.clone().requires_grad_(True))
        fn = lambda x, w, b: PF.poly_norm(x, w, b, implementation=impl, bounds=MOTIF_BOUNDS)  # noqa: E731
        assert torch.autograd.gradcheck(fn, leaves)
        assert torch.autograd.gradgradcheck(fn, leaves)
        gated = lambda x, w, b: PF.gated_poly_norm(x, up, w, b, implementation=impl, bounds=MOTIF_BOUNDS)  # noqa: E731
        assert torch.autograd.gradgradcheck(gated, leaves)
    # A clamped bias gets no gradient; the clamped input entries get none either.
    x0 = _case(torch.float64)[0].double()[:1].requires_grad_(True)
    w, b = logits.clone().requires_grad_(True), torch.tensor([0.9], dtype=torch.float64, requires_grad=True)
    PF.poly_norm(x0, w, b, implementation=impl, bounds=MOTIF_BOUNDS).sum().backward()
    assert b.grad.item() == 0.0 and torch.equal(x0.grad[0, :3], torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("impl", ["reference", "eager", "triton"])
def test_motif_gated_polynorm_equals_the_formula(impl):
    gate, logits, bias = _case(torch.float32)
    up = torch.randn(gate.shape, generator=torch.Generator().manual_seed(3))
    if impl not in available_implementations(gate):
        pytest.skip(f"{impl} unavailable here")
    act = _motif("motif_gated_polynorm", impl, logits, bias)
    torch.testing.assert_close(act(gate, up).double(), naive_motif(gate, logits, bias) * up.double(),
                               rtol=2e-5, atol=2e-5)


def test_init_layout_and_defaults():
    act = polycom.get_activation("motif_polynorm")
    # The paper's init a_i = 1/r, reached through the sigmoid; bias 0; layout (r,), (1,).
    torch.testing.assert_close(torch.sigmoid(act.weight), torch.full((3,), 1 / 3))
    assert act.weight.shape == (3,) and act.bias.shape == (1,) and act.bias.item() == 0.0
    assert set(act.state_dict()) == {"weight", "bias"}
    assert polycom.PolyNorm().bounds.is_paper and polycom.GatedPolyNorm().bounds.is_paper
    assert "sigmoid_coefficients=True" in repr(act) and "bias_bound" not in repr(polycom.PolyNorm())
    # Each option alone, against the formula.
    x = torch.randn(4, 16, dtype=torch.float64)
    w, b = torch.tensor([0.2, -0.4, 0.7], dtype=torch.float64), torch.tensor([-0.8], dtype=torch.float64)
    for bounds, want in [
        (PolyNormBounds(sigmoid_coefficients=True), naive_poly_norm(x, torch.sigmoid(w), b)),
        (PolyNormBounds(bias_bound=0.5), naive_poly_norm(x, w, b.clamp(-0.5, 0.5))),
        (PolyNormBounds(output_scale=0.5), 0.5 * naive_poly_norm(x, w, b)),
        (PolyNormBounds(input_bound=0.5), naive_poly_norm(x.clamp(-0.5, 0.5), w, b)),
    ]:
        torch.testing.assert_close(PF.poly_norm(x, w, b, bounds=bounds), want, rtol=1e-12, atol=1e-12)


def test_bad_options_name_the_argument():
    with pytest.raises(ValueError, match="'bias_bound' must be a finite number > 0"):
        polycom.PolyNorm(bias_bound=-1.0)
    with pytest.raises(ValueError, match="'output_scale' must be a finite number > 0"):
        polycom.GatedPolyNorm(output_scale=float("inf"))
    with pytest.raises(ValueError, match="'input_bound'"):
        PolyNormBounds(input_bound=float("nan"))
    with pytest.raises(TypeError, match="'sigmoid_coefficients' must be a bool"):
        PolyNormBounds(sigmoid_coefficients="yes")


def test_motif_per_expert_moe_uses_the_bounds():
    """Motif-3's layout: a bounded PolyNorm per routed expert, run as one grouped op."""
    from polycom.models.config import MoEConfig
    from polycom.models.moe import MoE

    torch.manual_seed(0)
    moe = MoE(12, 16, "motif_polynorm", MoEConfig(num_experts=4, top_k=2, coefficients="per_expert"))
    with torch.no_grad():
        for i, act in enumerate(moe.act.experts):
            act.weight.add_(0.3 * i)
            act.bias.fill_(0.4 * i - 0.6)  # some beyond the bias bound
    x = torch.randn(3, 5, 12)
    out, _ = moe(x)
    moe.act.grouped = False
    want, _ = moe(x)
    torch.testing.assert_close(out, want, rtol=2e-5, atol=2e-6)
