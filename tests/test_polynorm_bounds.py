"""Motif's bounded PolyNorm (sigmoid coefficients, clamped bias, output scale, clamped input) on every path."""

import pytest
import torch
from naive import naive_poly_norm

import polycom
from polycom import functional as PF
from polycom.activations.grouped_polynorm import grouped_gated_poly_norm, grouped_poly_norm
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


# The coefficient maps act outside the fused op, so one fast path checks them (the input bound inside each
# op is gradchecked per op below); the compiled op itself is gradchecked in test_ops_higher_order.py.
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


# ---- The input bound inside the fused ops (ops/poly_norm.py): every path against the reference ----

INPUT_BOUND = 1.5  # on 2 * randn data about 45% of the entries lie beyond it


def _bounded_case(dtype, rows=6, width=40, seed=0):
    """(x, up) with entries beyond the bound on both sides and two exactly at it (-c, +c)."""
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(rows, width, generator=g)
    x[0, :2] = torch.tensor([INPUT_BOUND, -INPUT_BOUND])  # exact in bf16 too
    up = torch.randn(rows, width, generator=g)
    return x.to(dtype), up.to(dtype)


def _call(op, x, up, weight, bias, impl, bounds, group=None):
    """Op ``op`` through its functional form; the grouped ops with 3 experts (rows m -> m % 3). ``group``: the
    tensor-parallel statistics group (the sharded op)."""
    row_expert = torch.arange(x.shape[0]) % 3
    kw = dict(implementation=impl, bounds=bounds, statistics_group=group)
    return {
        "poly_norm": lambda: PF.poly_norm(x, weight, bias, **kw),
        "gated_poly_norm": lambda: PF.gated_poly_norm(x, up, weight, bias, **kw),
        "grouped_poly_norm": lambda: grouped_poly_norm(x, weight, bias, row_expert, **kw),
        "grouped_gated_poly_norm": lambda: grouped_gated_poly_norm(x, up, weight, bias, row_expert, **kw),
    }[op]()


def _coefficients(op):
    g = torch.Generator().manual_seed(1)
    shape = (3, 3) if op.startswith("grouped") else (3,)
    return torch.randn(shape, generator=g), 0.3 * torch.randn(shape[:-1] + (1,), generator=g)


def _output_and_grads(op, impl, x, up, bounds, group=None):
    weight, bias = _coefficients(op)
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, up, weight, bias)]
    y = _call(op, *leaves, impl, bounds, group)
    y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(2)).to(y.dtype))
    grads = [leaves[0].grad, leaves[2].grad, leaves[3].grad] + ([leaves[1].grad] if "gated" in op else [])
    return y, grads


FUSED_OPS = ["poly_norm", "gated_poly_norm", "grouped_poly_norm", "grouped_gated_poly_norm"]


@pytest.mark.parametrize("op", FUSED_OPS)
@pytest.mark.parametrize("impl", ["eager", "compiled", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_fused_input_bound_equals_the_reference(op, impl, dtype):
    """Forward and every gradient of the op with the bound inside it equal the reference (explicit clamp)."""
    x, up = _bounded_case(dtype)
    if impl not in available_implementations(x):
        pytest.skip(f"{impl} unavailable here")
    if impl == "compiled" and op.startswith("grouped") and dtype == torch.bfloat16:
        pytest.skip("one compile per case (~10 s): the grouped ops' compiled kernels run in float32 only")
    bounds = PolyNormBounds(sigmoid_coefficients=True, bias_bound=0.5, output_scale=0.5, input_bound=INPUT_BOUND)
    y_ref, grads_ref = _output_and_grads(op, "reference", x, up, bounds)
    y, grads = _output_and_grads(op, impl, x, up, bounds)
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), y_ref.float(), **TOL[dtype])
    grad_x, grad_x_ref = grads[0], grads_ref[0]
    # The gradient is zero beyond the bound and passes at it (torch.clamp's mask is inclusive).
    beyond = x.float().abs() > INPUT_BOUND
    assert beyond.any() and (~beyond).any()
    assert torch.equal(grad_x.float()[beyond], torch.zeros(int(beyond.sum())))
    assert (grad_x[0, :2] != 0).all() and (grad_x_ref[0, :2] != 0).all()
    torch.testing.assert_close(grad_x.float(), grad_x_ref.float(), **TOL[dtype])
    # Coefficient gradients are sums over every element (fp32, another order): relative to the largest, 1e-4
    # (as test_ops.py); the gated ops' grad_up is elementwise, to the output's tolerance.
    scale = max(1.0, *(g.abs().max().item() for g in grads_ref[1:3]))
    for got, want in zip(grads[1:3], grads_ref[1:3]):
        torch.testing.assert_close(got.float() / scale, want.float() / scale, rtol=1e-4, atol=1e-4)
    for got, want in zip(grads[3:], grads_ref[3:]):
        torch.testing.assert_close(got.float(), want.float(), **TOL[dtype])


def test_sharded_op_takes_the_input_bound(tmp_path):
    """The tensor-parallel op (ops/sharded_poly_norm.py) with the bound inside its passes, on a one-rank gloo
    group (the row whole on the rank, each all_reduce the identity): equal to the single-rank reference.
    The split row (two ranks) is test_tensor_parallel.py's, without a bound: the bound acts per element."""
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group exists in this process already")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        x, up = _bounded_case(torch.float32)
        bounds = PolyNormBounds(sigmoid_coefficients=True, input_bound=INPUT_BOUND)
        for op in FUSED_OPS:
            y_ref, grads_ref = _output_and_grads(op, "reference", x, up, bounds)
            # compiled: four kernels compiled per op (~5 s each here), so for PolyNorm only
            for impl in ("eager", "compiled") if op == "poly_norm" else ("eager",):
                y, grads = _output_and_grads(op, impl, x, up, bounds, group=dist.group.WORLD)
                # float64 statistics against the reference's float32 ones: agreement to float32 rounding.
                torch.testing.assert_close(y, y_ref, **TOL[torch.float32])
                assert torch.equal(grads[0][x.abs() > INPUT_BOUND], torch.zeros(int((x.abs() > INPUT_BOUND).sum())))
                scale = max(1.0, *(g.abs().max().item() for g in grads_ref[1:3]))
                torch.testing.assert_close(grads[0], grads_ref[0], **TOL[torch.float32])
                for got, want in zip(grads[1:3], grads_ref[1:3]):
                    torch.testing.assert_close(got / scale, want / scale, rtol=1e-4, atol=1e-4)
                for got, want in zip(grads[3:], grads_ref[3:]):
                    torch.testing.assert_close(got, want, **TOL[torch.float32])
    finally:
        dist.destroy_process_group()


def test_torch_clamp_gradient_is_inclusive_at_the_bounds():
    """The convention the fused backward copies: torch.clamp passes the gradient at x == -c and x == c."""
    x = torch.tensor([-2.0, -INPUT_BOUND, 0.0, INPUT_BOUND, 2.0], requires_grad=True)
    x.clamp(-INPUT_BOUND, INPUT_BOUND).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize("op", FUSED_OPS)
def test_fused_input_bound_gradcheck_and_gradgradcheck_float64(op):
    """The eager kernels' first derivatives (gradcheck) and the second ones (through the reference) with some
    entries clamped; every entry at least 0.1 from the kink, where clamp's derivative jumps."""
    x, up = (t.double() for t in _bounded_case(torch.float64, rows=3, width=8, seed=3))
    x = torch.where((x.abs() - INPUT_BOUND).abs() < 0.1, x + 0.3, x)
    assert (x.abs() > INPUT_BOUND).any() and ((x.abs() - INPUT_BOUND).abs() >= 0.1).all()
    bounds = PolyNormBounds(input_bound=INPUT_BOUND)
    weight, bias = _coefficients(op)
    leaves = [t.double().requires_grad_(True) for t in (x, up, weight, bias)]
    fn = lambda x, up, w, b: _call(op, x, up, w, b, "eager", bounds)  # noqa: E731
    assert torch.autograd.gradcheck(fn, leaves)
    assert torch.autograd.gradgradcheck(fn, leaves)


def test_no_bound_adds_no_op():
    """Unbounded (inf) the closed forms take x itself: no clamp, no mask (the Triton kernels: BOUNDED false)."""
    from polycom.ops.poly_norm import NO_BOUND, bounded_input, inside_bound

    x = torch.randn(3, 4)
    assert bounded_input(x, NO_BOUND) is x and inside_bound(x, x, NO_BOUND) is x
    assert torch.equal(bounded_input(x, 0.5), x.clamp(-0.5, 0.5))


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
