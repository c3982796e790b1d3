"""Grouped (per-expert) PolyNorm and gated PolyNorm: one op for all experts, against the per-expert loop."""

import pytest
import torch

import polycom
from polycom import functional as PF
from polycom.models.moe import MoE
from polycom.models.config import MoEConfig
from polycom.ops import available_implementations, dispatch

# Like test_ops.py: fp32 paths agree to a few ulps of O(1)-O(10) values; bf16 paths compute in fp32
# and round once, so they agree to one bf16 ulp (2^-8 relative) -> 1.6e-2.
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-5), torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2)}
# Unsorted rows, expert 3 of 5 empty, expert 4 with a single row.
ROW_EXPERT = torch.tensor([0, 2, 2, 1, 0, 2, 1, 1, 0, 2, 0, 4])


def _inputs(width, dtype, order, experts=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = ROW_EXPERT.numel()
    gate = torch.randn(m, width, generator=g).to(dtype)
    up = torch.randn(m, width, generator=g).to(dtype)
    weight = 0.5 * torch.randn(experts, order, generator=g) + 0.3
    bias = 0.1 * torch.randn(experts, 1, generator=g)
    return gate, up, weight, bias


def _loop(gated, gate, up, weight, bias, impl):
    """Today's per-expert loop (models/moe.py before the grouped op): each expert's PolyNorm on its rows."""
    out = torch.empty_like(gate)
    for e in range(weight.shape[0]):
        rows = (ROW_EXPERT == e).nonzero().flatten()
        if rows.numel() == 0:
            continue
        if gated:
            out[rows] = PF.gated_poly_norm(gate[rows], up[rows], weight[e], bias[e], implementation=impl)
        else:
            out[rows] = PF.poly_norm(gate[rows], weight[e], bias[e], implementation=impl)
    return out


def _run(fn, tensors):
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    y = fn(*leaves)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(7)).to(y.dtype)
    grads = torch.autograd.grad(y, leaves, g)
    return y, grads


# compiled: one variant per op (an Inductor compile each); the eager closed form runs every case.
LOOP_CASES = [(impl, dtype, order) for impl in ("reference", "eager", "triton") for dtype in (torch.float32, torch.bfloat16)
              for order in (1, 3, 4)] + [("compiled", torch.float32, 3)]


@pytest.mark.parametrize("impl,dtype,order", LOOP_CASES)
@pytest.mark.parametrize("gated", [False, True])
def test_grouped_equals_the_per_expert_loop(impl, dtype, gated, order):
    gate, up, weight, bias = _inputs(37, dtype, order)
    if impl not in available_implementations(gate):
        pytest.skip(f"{impl} unavailable here")
    if gated:
        grouped = lambda g, u, w, b: PF.grouped_gated_poly_norm(g, u, w, b, ROW_EXPERT, implementation=impl)  # noqa: E731
        loop = lambda g, u, w, b: _loop(True, g, u, w, b, "reference")  # noqa: E731
        tensors = [gate, up, weight, bias]
    else:
        grouped = lambda g, w, b: PF.grouped_poly_norm(g, w, b, ROW_EXPERT, implementation=impl)  # noqa: E731
        loop = lambda g, w, b: _loop(False, g, None, w, b, "reference")  # noqa: E731
        tensors = [gate, weight, bias]
    (y, grads), (y_want, grads_want) = _run(grouped, tensors), _run(loop, tensors)
    tol = TOL[dtype]
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), y_want.float(), **tol)
    n_rows = 2 if gated else 1
    for got, want in zip(grads[:n_rows], grads_want[:n_rows]):
        torch.testing.assert_close(got.float(), want.float(), **tol)
    # Coefficient gradients: sums over an expert's rows in another order -> relative to the largest (1e-4).
    for got, want in zip(grads[n_rows:], grads_want[n_rows:]):
        scale = max(1.0, want.abs().max().item())
        torch.testing.assert_close(got / scale, want / scale, rtol=1e-4, atol=1e-4)
    # The empty expert gets exactly zero gradient.
    assert torch.equal(grads[n_rows][3], torch.zeros(order)) and grads[n_rows + 1][3].item() == 0.0


def _to_bf16(t: torch.Tensor, impl: str) -> torch.Tensor:
    """float32 -> bfloat16 as ``impl`` rounds: to nearest even, except the Triton interpreter, which
    truncates (GPU Triton rounds to nearest even)."""
    if impl == "triton" and t.device.type == "cpu":
        return (t.view(torch.int32) & ~0xFFFF).view(torch.float32).to(torch.bfloat16)
    return t.to(torch.bfloat16)


@pytest.mark.parametrize("impl", ["reference", "eager", "triton"])
def test_gated_product_is_rounded_once_in_bf16(impl):
    """PolyNorm(gate) * up in float32, then one rounding: equal to the float32 product rounded to bf16
    (casting PolyNorm(gate) to bf16 first costs ~1e-3 relative per element)."""
    gate, up, weight, bias = _inputs(64, torch.bfloat16, 3)
    if impl not in available_implementations(gate):
        pytest.skip(f"{impl} unavailable here")
    y = PF.grouped_gated_poly_norm(gate, up, weight, bias, ROW_EXPERT, implementation=impl)
    act32 = PF.grouped_poly_norm(gate.float(), weight, bias, ROW_EXPERT, implementation="reference")
    once = _to_bf16(act32 * up.float(), impl)
    twice = _to_bf16(_to_bf16(act32, impl).float() * up.float(), impl)
    # The kernels' fp32 PolyNorm differs from the reference's by a few fp32 ulps: a value next to a
    # rounding boundary may land one bf16 ulp away (rarely).
    mismatched = (y != once).float().mean().item()
    assert mismatched < 0.01
    assert (twice != once).float().mean().item() > 0.1  # rounding twice changes many elements


@pytest.mark.parametrize("impl", ["reference", "eager"])
@pytest.mark.parametrize("order", range(1, 9))
def test_grouped_gradgradcheck_float64(impl, order):
    gate, up, weight, bias = (t.double().requires_grad_(True) for t in _inputs(6, torch.float64, order))
    assert torch.autograd.gradgradcheck(
        lambda x, w, b: PF.grouped_poly_norm(x, w, b, ROW_EXPERT, implementation=impl), (gate, weight, bias))
    assert torch.autograd.gradgradcheck(
        lambda g, u, w, b: PF.grouped_gated_poly_norm(g, u, w, b, ROW_EXPERT, implementation=impl),
        (gate, up, weight, bias))


def test_bad_arguments_name_the_argument():
    gate, up, weight, bias = _inputs(8, torch.float32, 3)
    with pytest.raises(ValueError, match="'weight' must have shape \\(experts, r\\)"):
        PF.grouped_poly_norm(gate, weight[0], bias, ROW_EXPERT)
    with pytest.raises(ValueError, match="'bias' must have shape \\(5, 1\\)"):
        PF.grouped_poly_norm(gate, weight, bias[:, 0], ROW_EXPERT)
    with pytest.raises(TypeError, match="'row_expert' must be an int64"):
        PF.grouped_poly_norm(gate, weight, bias, ROW_EXPERT.int())
    with pytest.raises(ValueError, match="'row_expert' must have shape \\(12,\\)"):
        PF.grouped_poly_norm(gate, weight, bias, ROW_EXPERT[:3])
    with pytest.raises(ValueError, match="'row_expert' must hold experts in \\[0, 5\\), got \\[0, 7\\]"):
        PF.grouped_poly_norm(gate, weight, bias, torch.where(ROW_EXPERT == 4, 7, ROW_EXPERT))


@pytest.mark.parametrize("activation", ["polynorm", "gated_polynorm"])
def test_moe_per_expert_coefficients_run_one_grouped_op(activation, monkeypatch):
    torch.manual_seed(0)
    kwargs = {"implementation": "eager"}
    moe = MoE(16, 24, activation, MoEConfig(num_experts=6, top_k=2, coefficients="per_expert"), kwargs)
    assert moe.act.grouped
    with torch.no_grad():
        for i, act in enumerate(moe.act.experts):  # distinct coefficients per expert
            act.weight.add_(0.1 * i)
            act.bias.fill_(0.05 * i)
    x = torch.randn(2, 9, 16)
    op = dispatch.registered_op("grouped_gated_poly_norm" if "gated" in activation else "grouped_poly_norm")
    calls = []
    forward = op.kernel("eager", "forward")
    monkeypatch.setitem(op._resolved, "eager", (lambda *a: calls.append(1) or forward(*a), op.kernel("eager", "backward")))
    out, _ = moe(x)
    out.square().sum().backward()
    assert calls == [1]  # one launch for all experts
    grads = {k: p.grad.clone() for k, p in moe.named_parameters()}
    moe.zero_grad()
    moe.act.grouped = False  # the per-expert loop, as before
    want, _ = moe(x)
    want.square().sum().backward()
    torch.testing.assert_close(out, want, rtol=2e-5, atol=2e-6)
    for k, p in moe.named_parameters():
        torch.testing.assert_close(grads[k], p.grad, rtol=1e-4, atol=1e-5, msg=k)
    assert set(moe.state_dict()) >= {"act.experts.0.weight", "act.experts.5.bias"}  # layout unchanged


def test_grouped_is_exported_in_functional():
    assert PF.grouped_poly_norm is polycom.activations.grouped_polynorm.grouped_poly_norm
