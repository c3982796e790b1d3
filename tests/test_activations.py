"""Activations vs the naive float64 formulas in tests/naive.py: values and all gradients.

These check the reference path (the ground truth); test_ops.py checks every fast
path against it.
"""

import pytest
import torch

import polycom
from polycom import functional as PF
from naive import naive_gated_poly_norm, naive_poly_com, naive_poly_norm, naive_poly_relu

# Tolerances against a float64 ground truth evaluated on the same (rounded) inputs.
# fp32: a handful of ops plus a row mean -> a few ulps of 1.2e-7, relative to
# values of order 1-10; 1e-5 leaves margin for rows of ~100 elements.
# bf16: the result is computed in fp32 and rounded once to bf16 (rel 2^-8 = 3.9e-3),
# so 1e-2 relative covers a one-ulp rounding plus the fp32 error.
TOL = {
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.bfloat16: dict(rtol=1e-2, atol=1e-2),
}

SHAPES = [(17,), (3, 1), (4, 33), (5, 123, 123)]


def _coefficients(order, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(order, generator=g) * 0.5 + 0.3, torch.randn(1, generator=g) * 0.1


def _run(fn, naive, shape, dtype, order, noncontiguous=False, n_inputs=1):
    torch.manual_seed(hash((shape, order)) % 2**31)
    weight, bias = _coefficients(order)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    inputs = []
    for _ in range(n_inputs):
        base = torch.randn(*shape[:-1], shape[-1] * 2 if noncontiguous else shape[-1])
        x = base[..., ::2] if noncontiguous else base  # stride-2 view in the feature dim
        inputs.append(x.to(dtype).requires_grad_(True))
    grad_out = torch.randn(shape).to(dtype)

    out = fn(*inputs, weight, bias, implementation="reference")
    assert out.dtype == dtype and out.shape == torch.Size(shape)
    out.backward(grad_out)

    ref_inputs = [x.detach().double().requires_grad_(True) for x in inputs]
    w64 = weight.detach().double().requires_grad_(True)
    b64 = bias.detach().double().requires_grad_(True)
    expected = naive(*ref_inputs, w64, b64)
    expected.backward(grad_out.double())

    tol = TOL[dtype]
    torch.testing.assert_close(out.double(), expected.detach(), **tol)
    for x, xr in zip(inputs, ref_inputs):
        torch.testing.assert_close(x.grad.double(), xr.grad, **tol)
    # Coefficient gradients sum over every element: compare relative to their size.
    # The fp32 sums over up to 75k terms keep ~1e-6 relative accuracy; in bf16 the
    # upstream gradient is exact and the math runs in fp32, so the same bound holds
    # up to the bf16 rounding of the inputs, which the float64 reference shares.
    scale = max(1.0, w64.grad.abs().max().item(), b64.grad.abs().max().item())
    torch.testing.assert_close(weight.grad.double() / scale, w64.grad / scale, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(bias.grad.double() / scale, b64.grad / scale, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("order", [1, 3])
def test_poly_norm_matches_naive(shape, dtype, order):
    _run(PF.poly_norm, naive_poly_norm, shape, dtype, order)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("order", [1, 3])
def test_poly_relu_matches_naive(shape, dtype, order):
    _run(PF.poly_relu, naive_poly_relu, shape, dtype, order)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(17,), (4, 33), (2, 3, 65)])
def test_gated_poly_norm_matches_naive(shape, dtype):
    _run(PF.gated_poly_norm, naive_gated_poly_norm, shape, dtype, 3, n_inputs=2)


@pytest.mark.parametrize("fn,naive", [(PF.poly_norm, naive_poly_norm), (PF.poly_relu, naive_poly_relu)])
def test_noncontiguous_input(fn, naive):
    _run(fn, naive, (6, 40), torch.float32, 3, noncontiguous=True)


@pytest.mark.parametrize("base", ["relu", "prelu", "gelu", "silu", "sigmoid", "rmsnorm"])
@pytest.mark.parametrize("kind", ["I", "II"])
def test_general_polycom_matches_naive(base, kind):
    torch.manual_seed(1)
    module = polycom.PolyCom(base=base, order=3, kind=kind).double()
    with torch.no_grad():
        module.weight.copy_(torch.tensor([0.2, -0.4, 0.9]))
        module.bias.fill_(0.05)
    x = torch.randn(4, 19, dtype=torch.float64)
    expected = naive_poly_com(x, module.weight.detach(), module.bias.detach(), base, kind)
    torch.testing.assert_close(module(x), expected, rtol=1e-10, atol=1e-10)


def test_named_instances_are_polycom():
    x = torch.randn(3, 8, dtype=torch.float64)
    pr, pn = polycom.PolyReLU().double(), polycom.PolyNorm().double()
    torch.testing.assert_close(pr(x), polycom.PolyCom("relu", 3, "I").double()(x))
    torch.testing.assert_close(pn(x), polycom.PolyCom("rmsnorm", 3, "II").double()(x))


def test_poly_relu_contains_relu_and_relu_squared():
    x = torch.linspace(-3, 3, 61)
    m = polycom.PolyReLU(order=3)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([0.0, 0.0, 1.0]))  # a1 = 1: ReLU (weight[2] is the linear term)
    torch.testing.assert_close(m(x), torch.relu(x), rtol=0, atol=0)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([0.0, 1.0, 0.0]))  # a2 = 1: ReLU^2
    torch.testing.assert_close(m(x), polycom.ReLU2()(x), rtol=0, atol=0)
    with torch.no_grad():
        m.bias.fill_(0.7)
    assert torch.all(m(torch.tensor([-5.0, -0.1])) == 0.7)  # negative inputs give a0, not 0


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("name", ["polyrelu", "polynorm", "polyprelu", "gated_polynorm"])
def test_gradcheck_learnable(name, order):
    torch.manual_seed(order)
    module = polycom.get_activation(name, order=order).double()
    w = (torch.randn(order, dtype=torch.float64) * 0.5).requires_grad_(True)
    b = torch.randn(1, dtype=torch.float64).requires_grad_(True)
    # Keep inputs away from 0: relu/prelu have a kink there that finite differences straddle.
    x = torch.randn(3, 7, dtype=torch.float64)
    x = (x + 0.2 * x.sign()).requires_grad_(True)
    if name == "gated_polynorm":
        up = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda g, u, w, b: PF.gated_poly_norm(g, u, w, b), (x, up, w, b))
    elif name == "polyprelu":
        slope = torch.tensor([0.25], dtype=torch.float64, requires_grad=True)
        fn = lambda x, w, b, s: PF.poly_com(x, w, b, "prelu", "I", prelu_weight=s)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, w, b, slope))
    else:
        fn = PF.poly_relu if name == "polyrelu" else PF.poly_norm
        assert torch.autograd.gradcheck(fn, (x, w, b))
    del module


@pytest.mark.parametrize("base", ["relu", "prelu", "gelu", "silu", "sigmoid", "rmsnorm"])
@pytest.mark.parametrize("kind", ["I", "II"])
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_gradcheck_general_polycom(base, kind, order):
    torch.manual_seed(order)
    w = (torch.randn(order, dtype=torch.float64) * 0.5).requires_grad_(True)
    b = torch.randn(1, dtype=torch.float64).requires_grad_(True)
    x = torch.randn(2, 5, dtype=torch.float64)
    x = (x + 0.2 * x.sign()).requires_grad_(True)  # away from the relu/prelu kink at 0
    slope = torch.tensor([0.25], dtype=torch.float64, requires_grad=True)
    fn = lambda x, w, b, s: PF.poly_com(x, w, b, base, kind, prelu_weight=s)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b, slope))


@pytest.mark.parametrize("name", ["relu2", "gelu", "gelu_tanh", "silu", "swiglu", "geglu"])
def test_gradcheck_baselines(name):
    act = polycom.get_activation(name)
    x = torch.randn(3, 6, dtype=torch.float64)
    x = (x + 0.2 * x.sign()).requires_grad_(True)
    if polycom.activation_info(name).gated:
        up = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(act, (x, up))
    else:
        assert torch.autograd.gradcheck(act, (x,))


def test_baseline_values():
    g = torch.tensor([-2.0, -0.5, 0.0, 1.5])
    u = torch.tensor([3.0, 2.0, 1.0, -1.0])
    sig = 1 / (1 + torch.exp(-g))
    torch.testing.assert_close(polycom.get_activation("swiglu")(g, u), g * sig * u)
    phi = 0.5 * (1 + torch.erf(g / 2**0.5))
    torch.testing.assert_close(polycom.get_activation("geglu")(g, u), g * phi * u)
    torch.testing.assert_close(polycom.get_activation("relu2")(g), torch.tensor([0.0, 0.0, 0.0, 2.25]))
