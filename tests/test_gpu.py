"""CUDA checks of the Triton kernels at real sizes (skipped without a GPU; CI has none).

Run on a GPU machine with ``python -m pytest -q tests/test_gpu.py``.
"""

import pytest
import torch

import polycom
from polycom import functional as PF

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# Same reasoning as test_ops.TOL: one output rounding in the input dtype, fp32 math.
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-5), torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2),
       torch.float16: dict(rtol=2e-3, atol=2e-3)}
# Input gradients in fp32: the closed form subtracts (d_i / N) * n_i from g, and with
# rows of 65536 features the two sides' fp32 row sums differ by ~1e-4 relative
# (seen: 1.7e-4 on 2 of 1M elements), so 3e-4 instead of the forward's 2e-5.
GRAD_TOL = {**TOL, torch.float32: dict(rtol=3e-4, atol=3e-4)}


def _check(fn, n_inputs, shape, dtype, impl, order=3):
    torch.manual_seed(0)
    inputs = [torch.randn(shape, device="cuda").to(dtype) for _ in range(n_inputs)]
    w0 = torch.randn(order, device="cuda") * 0.5 + 0.3
    b0 = torch.randn(1, device="cuda") * 0.1
    g = torch.randn(shape, device="cuda").to(dtype)
    res = {}
    for path in ("reference", impl):
        leaves = [t.clone().requires_grad_(True) for t in inputs]
        w, b = w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
        out = fn(*leaves, w, b, implementation=path)
        out.backward(g)
        res[path] = (out, [t.grad for t in leaves], w.grad, b.grad)
    (o_r, gx_r, gw_r, gb_r), (o_f, gx_f, gw_f, gb_f) = res["reference"], res[impl]
    torch.testing.assert_close(o_f.float(), o_r.float(), **TOL[dtype])
    for a, b in zip(gx_f, gx_r):
        torch.testing.assert_close(a.float(), b.float(), **GRAD_TOL[dtype])
    # Sums over up to 2^27 products in different orders: relative 1e-3 of the largest.
    scale = max(1.0, gw_r.abs().max().item(), gb_r.abs().max().item())
    torch.testing.assert_close(gw_f / scale, gw_r / scale, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(gb_f / scale, gb_r / scale, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("impl", ["triton", "compiled"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(3, 5), (257, 1000), (64, 4096), (16, 65536), (2, 3, 131072)])
def test_poly_norm_cuda(impl, dtype, shape):
    _check(PF.poly_norm, 1, shape, dtype, impl)


@pytest.mark.parametrize("impl", ["triton", "compiled"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(3, 5), (257, 1000), (16, 65536)])
def test_poly_relu_and_gated_cuda(impl, dtype, shape):
    _check(PF.poly_relu, 1, shape, dtype, impl)
    _check(PF.gated_poly_norm, 2, shape, dtype, impl)


@pytest.mark.parametrize("order", [1, 2, 4])
def test_orders_cuda(order):
    _check(PF.poly_norm, 1, (33, 3000), torch.bfloat16, "triton", order)
    _check(PF.poly_relu, 1, (33, 3000), torch.bfloat16, "triton", order)


def test_auto_is_triton_and_compiles_fullgraph():
    from polycom.ops import select_implementation

    x = torch.randn(8, 256, device="cuda", dtype=torch.bfloat16)
    assert select_implementation(x, "auto") == "triton"
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), polycom.PolyNorm(), torch.nn.Linear(512, 256)).cuda()
    expected = model(x.float())
    out = torch.compile(model, fullgraph=True)(x.float())
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


@pytest.fixture
def triton_ops_under_compile(monkeypatch):
    """POLYCOM_TRITON_OP=1 as read at import: compile traces of triton calls use the ops' triton_op pairs."""
    from polycom.ops import dispatch, fused_op

    for name, op in dispatch._OPS.items():
        if op.kernels.triton:
            op.triton_library_ops()  # registered outside the trace, as at resolve time with the variable set
    monkeypatch.setattr(fused_op, "TRITON_OPS_UNDER_COMPILE", True)
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_inductor_compiles_the_triton_op_kernels(triton_ops_under_compile):
    """With the switch on, Inductor puts polycom's own kernels into its code (no opaque polycom op left):
    a fullgraph forward and backward of PolyNorm, PolyReLU and gated PolyNorm MLPs equal to the reference
    formula's model in eager mode. What must pass before POLYCOM_TRITON_OP=1 becomes the default."""
    from torch._inductor.utils import run_and_get_code

    from polycom.models.mlp import build_mlp

    def stack(implementation):
        torch.manual_seed(0)
        return torch.nn.Sequential(*(build_mlp(256, 512, act, {"implementation": implementation})
                                     for act in ("polynorm", "polyrelu", "gated_polynorm"))).cuda()

    model, reference = stack("triton"), stack("reference")
    reference.load_state_dict(model.state_dict())
    x = torch.randn(4, 64, 256, device="cuda")
    compiled = torch.compile(model, fullgraph=True)

    def step():
        out = compiled(x)
        out.square().mean().backward()
        return out

    out, codes = run_and_get_code(step)
    code = "\n".join(codes)
    assert "_fwd_kernel" in code and "_bwd_kernel" in code
    assert "torch.ops.polycom" not in code
    want = reference(x)
    want.square().mean().backward()
    # fp32 kernels against fp32 autograd of the reference (test_auto_is_triton_and_compiles_fullgraph's
    # 1e-4); the coefficient gradients sum over 256 rows of 512 in another order: relative 1e-3.
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4)
    for (key, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-4, msg=key)
