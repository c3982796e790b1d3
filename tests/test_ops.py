"""Every fast path against the reference path: values, all gradients, memory, compile.

The reference (``implementation="reference"``) is itself checked against the
naive float64 formulas in test_activations.py; here each implementation must
agree with it on the same inputs.
"""

import pytest
import torch

import polycom
from polycom import functional as PF
from polycom.memory import saved_tensor_bytes
from polycom.ops import available_implementations

# "eager" runs the same closed-form code as "compiled", so it carries the wide
# parameter matrix; "compiled" pays an Inductor compile per shape and gets a few
# representative cases; "triton" runs through the interpreter on CPU (slow).
FAST_PATHS = ["eager", "triton"]

# Against the reference in the same dtype. fp32: both paths are exact to a few
# ulps of 1.2e-7 on O(1)-O(10) values, and coefficient gradients sum M*N products
# in different orders (checked relative to their magnitude below). bf16: both
# compute in fp32 and round once, so outputs agree to one bf16 ulp (2^-8 relative,
# with ties possibly rounding differently) -> 1e-2.
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-5), torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2)}


def _skip_unavailable(impl, x):
    if impl not in available_implementations(x):
        pytest.skip(f"{impl} unavailable here")


def _compare(fn, impl, inputs, order, dtype, seed=0):
    torch.manual_seed(seed)
    weight = (torch.randn(order) * 0.5 + 0.3).requires_grad_(True)
    bias = (torch.randn(1) * 0.1).requires_grad_(True)
    results = {}
    for path in ("reference", impl):
        leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
        w, b = weight.detach().clone().requires_grad_(True), bias.detach().clone().requires_grad_(True)
        out = fn(*leaves, w, b, implementation=path)
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
        out.backward(grad_out)
        results[path] = (out, [t.grad for t in leaves], w.grad, b.grad)
    (out_r, gx_r, gw_r, gb_r), (out_f, gx_f, gw_f, gb_f) = results["reference"], results[impl]
    tol = TOL[dtype]
    assert out_f.dtype == dtype and out_f.shape == out_r.shape
    torch.testing.assert_close(out_f.float(), out_r.float(), **tol)
    for a, b in zip(gx_f, gx_r):
        assert a.dtype == dtype
        torch.testing.assert_close(a.float(), b.float(), **tol)
    # Coefficient gradients: sums over every element; fp32 accumulation in a
    # different order -> compare relative to the largest of them (1e-4).
    scale = max(1.0, gw_r.abs().max().item(), gb_r.abs().max().item())
    torch.testing.assert_close(gw_f / scale, gw_r / scale, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gb_f / scale, gb_r / scale, rtol=1e-4, atol=1e-4)


def _x(shape, dtype, scale=1.0, noncontiguous=False):
    torch.manual_seed(hash(shape) % 1000)
    if noncontiguous:
        return (torch.randn(shape[-1], *shape[:-1]) * scale).to(dtype).transpose(0, -1)
    return (torch.randn(shape) * scale).to(dtype)


ODD_SHAPES = [(1, 1), (7,), (3, 1), (5, 37), (2, 3, 129)]


@pytest.mark.parametrize("impl", FAST_PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", ODD_SHAPES)
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_poly_norm_paths(impl, dtype, shape, order):
    x = _x(shape, dtype)
    _skip_unavailable(impl, x)
    _compare(PF.poly_norm, impl, [x], order, dtype)


@pytest.mark.parametrize("impl", FAST_PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", ODD_SHAPES)
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_poly_relu_paths(impl, dtype, shape, order):
    x = _x(shape, dtype)
    _skip_unavailable(impl, x)
    _compare(PF.poly_relu, impl, [x], order, dtype)


@pytest.mark.parametrize("impl", FAST_PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 1), (5, 37), (2, 3, 129)])
@pytest.mark.parametrize("order", [2, 3])
def test_gated_poly_norm_paths(impl, dtype, shape, order):
    gate, up = _x(shape, dtype), _x(shape, dtype, scale=2.0) + 0.5
    _skip_unavailable(impl, gate)
    _compare(PF.gated_poly_norm, impl, [gate, up], order, dtype)


@pytest.mark.parametrize("impl", FAST_PATHS)
@pytest.mark.parametrize("fn", [PF.poly_norm, PF.poly_relu])
def test_noncontiguous_input(impl, fn):
    x = _x((6, 33), torch.float32, noncontiguous=True)
    assert not x.is_contiguous()
    _skip_unavailable(impl, x)
    _compare(fn, impl, [x], 3, torch.float32)


@pytest.mark.parametrize("impl", [*FAST_PATHS, "compiled"])
def test_poly_norm_large_values_fp16(impl):
    """fp16 inputs near the top of the range: no inf/NaN, same values as the reference."""
    x = _x((4, 50), torch.float32, scale=20000.0).clamp(-65000, 65000).half()
    _skip_unavailable(impl, x)
    w, b = torch.tensor([0.5, -0.3, 0.8], requires_grad=True), torch.tensor([0.1], requires_grad=True)
    out = PF.poly_norm(x, w, b, implementation=impl)
    assert torch.isfinite(out).all()
    # fp16 rounding of O(1) outputs: rel 2^-11; 2e-3 allows a one-ulp difference.
    torch.testing.assert_close(out, PF.poly_norm(x, w, b, implementation="reference"), rtol=2e-3, atol=2e-3)
    xg = x.clone().requires_grad_(True)
    PF.poly_norm(xg, w, b, implementation=impl).sum().backward()
    assert torch.isfinite(xg.grad).all() and torch.isfinite(w.grad).all()


@pytest.mark.parametrize("impl", FAST_PATHS)
@pytest.mark.parametrize("scale,order", [(1e9, 3), (1e20, 1), (1e20, 3), (1e36, 4)])
def test_poly_norm_huge_values(impl, scale, order):
    """Far beyond where x^r overflows fp32: the forward is exact (statistics and outputs are
    taken of x / max|x|); the backward is exact while max|x|^r < ~1e37 (every saved
    1/rms(x^i) a normal fp32) and finite beyond it. Checked against float64 autograd."""
    x = _x((3, 40), torch.float32) * scale
    x[1] = _x((1, 40), torch.float32)[0] * 1e-3  # an ordinary, eps-dominated row beside them
    _skip_unavailable(impl, x)
    w = torch.tensor([0.5, -0.3, 0.8, 0.2][:order], requires_grad=True)
    b = torch.tensor([0.1], requires_grad=True)
    g = torch.randn(3, 40, generator=torch.Generator().manual_seed(7))  # not parallel to x
    xg = x.clone().requires_grad_(True)
    out = PF.poly_norm(xg, w, b, implementation=impl)
    out.backward(g)
    x64, w64, b64 = (t.detach().double().requires_grad_(True) for t in (x, w, b))
    expected = PF.poly_norm(x64, w64, b64, implementation="reference")
    expected.backward(g.double())
    # Outputs O(1): fp32 arithmetic on normalised values.
    torch.testing.assert_close(out.double(), expected.detach(), rtol=1e-5, atol=1e-5)
    assert torch.isfinite(xg.grad).all() and torch.isfinite(w.grad).all() and torch.isfinite(b.grad).all()
    if scale**order < 1e37:
        # grad_x ~ 1/scale per row: compare each row relative to its own largest entry.
        row_max = x64.grad.abs().amax(-1, keepdim=True)
        torch.testing.assert_close(xg.grad.double() / row_max, x64.grad / row_max, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(w.grad.double(), w64.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fn,order", [(PF.poly_norm, 3), (PF.poly_relu, 2), (PF.gated_poly_norm, 3)])
def test_compiled_path(fn, order):
    """One representative shape per op through Inductor (each new shape costs a compile)."""
    n_inputs = 2 if fn is PF.gated_poly_norm else 1
    inputs = [_x((8, 96), torch.float32) for _ in range(n_inputs)]
    _compare(fn, "compiled", inputs, order, torch.float32)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("name", ["poly_norm", "poly_relu", "gated_poly_norm"])
def test_gradcheck_eager_closed_form(name, order):
    """The closed-form backward in float64 against finite differences."""
    torch.manual_seed(order)
    x = torch.randn(3, 6, dtype=torch.float64)
    x = (x + 0.2 * x.sign()).requires_grad_(True)  # away from relu's kink
    w = torch.randn(order, dtype=torch.float64, requires_grad=True)
    b = torch.randn(1, dtype=torch.float64, requires_grad=True)
    if name == "gated_poly_norm":
        up = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
        fn = lambda g, u, w, b: PF.gated_poly_norm(g, u, w, b, implementation="eager")  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, up, w, b))
    else:
        f = getattr(PF, name)
        assert torch.autograd.gradcheck(lambda x, w, b: f(x, w, b, implementation="eager"), (x, w, b))


@pytest.mark.parametrize("impl", ["eager", "compiled", "triton"])
@pytest.mark.parametrize("order", [3, 4])
def test_saved_tensor_budget(impl, order):
    rows, feats = 32, 256
    x = torch.randn(rows, feats, requires_grad=True)
    _skip_unavailable(impl, x)
    m = polycom.PolyNorm(order=order, implementation=impl)
    coef_bytes = sum(p.numel() * p.element_size() for p in m.parameters())
    used = saved_tensor_bytes(lambda: m(x))
    budget = x.numel() * x.element_size() + 16 * rows + coef_bytes
    assert used <= budget, f"{impl} saves {used} bytes, budget {budget}"
    # The reference (official-style eager math) keeps several copies of the input.
    ref_used = saved_tensor_bytes(lambda: polycom.PolyNorm(order=order, implementation="reference")(x))
    assert ref_used > 3 * x.numel() * x.element_size()


@pytest.mark.parametrize("impl", ["eager", "triton"])
def test_poly_relu_saves_only_input(impl):
    x = torch.randn(16, 64, requires_grad=True)
    _skip_unavailable(impl, x)
    m = polycom.PolyReLU(implementation=impl)
    coef_bytes = sum(p.numel() * p.element_size() for p in m.parameters())
    assert saved_tensor_bytes(lambda: m(x)) <= x.numel() * x.element_size() + coef_bytes


def test_auto_dispatch_choices():
    from polycom.ops import select_implementation

    assert select_implementation(torch.zeros(2, 3), "auto") == "compiled"
    assert select_implementation(torch.zeros(2, 3, dtype=torch.float64), "auto") == "eager"
    with pytest.raises(ValueError, match="'implementation' must be one of"):
        select_implementation(torch.zeros(2, 3), "fastest")


def test_torch_compile_fullgraph_module():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 64), polycom.PolyNorm(), torch.nn.Linear(64, 64), polycom.PolyReLU(), torch.nn.Linear(64, 8)
    )
    x = torch.randn(10, 16)
    expected = model(x)
    expected.square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(model, fullgraph=True)
    out = compiled(x)
    out.square().sum().backward()
    # Inductor reorders fp32 reductions: a few ulps on O(1) values.
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    for p, g in zip(model.parameters(), grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-4)


def test_compiled_path_handles_changing_shapes():
    """MoE groups and generation change the row count every step: after one dynamic
    recompile every new shape must reuse the compiled kernel, never fail or fall back."""
    from polycom.ops.compiled import compile_failures

    m = polycom.PolyNorm(order=2, implementation="compiled")
    for rows in range(1, 13):
        x = torch.randn(rows, 24, requires_grad=True)
        y = m(x)
        y.sum().backward()
        torch.testing.assert_close(y, PF.poly_norm(x, m.weight, m.bias, implementation="reference"), rtol=2e-5, atol=2e-5)
    assert not compile_failures()
