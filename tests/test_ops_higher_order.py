"""Every fast path under every transform: second and higher derivatives, torch.func, forward-mode AD.

The fused kernels' backward is a closed form of first derivatives; a graph of the gradient
(create_graph=True) is built from the reference formula instead (ops/fused_op.py). These tests
check the result, not the mechanism: gradgradcheck in float64 against finite differences, the
issue's reproduction against the naive formula of tests/naive.py, and torch.func transforms
against the same quantities computed without transforms.
"""

import pytest
import torch
from naive import naive_gated_poly_norm, naive_poly_norm, naive_poly_relu
from torch.func import functional_call, grad, jacrev, jvp, vmap

import polycom
from polycom import functional as PF
from polycom.activations.fourier import fourier
from polycom.activations.hermite import hermite
from polycom.ops import available_implementations, dispatch

# Every path that runs in float64 on CPU. The compiled path pays an Inductor compile per
# (order, width) variant (~5 s on a 2-core CPU), and its double backward is the same
# backend-independent mechanism as eager's, so it runs one order.
PATHS_ORDERS = [("reference", o) for o in (1, 8)] + [("eager", o) for o in range(1, 9)] + \
    [("compiled", 3), ("auto", 3)]


def _away_from_kinks(shape, seed):
    torch.manual_seed(seed)
    x = torch.randn(shape, dtype=torch.float64)
    return x + 0.2 * x.sign()  # relu's kink at 0 would make finite differences meaningless


def _coefficients(order, seed):
    g = torch.Generator().manual_seed(seed)
    w = (0.5 * torch.randn(order, generator=g, dtype=torch.float64) + 0.3).requires_grad_(True)
    b = (0.1 * torch.randn(1, generator=g, dtype=torch.float64)).requires_grad_(True)
    return w, b


def _unary(name):
    return {
        "poly_norm": PF.poly_norm,
        "poly_relu": PF.poly_relu,
        # general PolyCom routes its (relu, I) and (rmsnorm, II) members to the fast ops
        "polycom_relu_I": lambda x, w, b, implementation: PF.poly_com(x, w, b, "relu", "I",
                                                                      implementation=implementation),
        "polycom_rmsnorm_II": lambda x, w, b, implementation: PF.poly_com(x, w, b, "rmsnorm", "II",
                                                                          implementation=implementation),
    }[name]


@pytest.mark.parametrize("impl,order", PATHS_ORDERS)
@pytest.mark.parametrize("name", ["poly_norm", "poly_relu", "polycom_relu_I", "polycom_rmsnorm_II"])
def test_gradgradcheck_polycom_families(name, impl, order):
    x = _away_from_kinks((3, 6), order).requires_grad_(True)
    w, b = _coefficients(order, order)
    fn = _unary(name)
    assert torch.autograd.gradgradcheck(lambda x, w, b: fn(x, w, b, implementation=impl), (x, w, b))


@pytest.mark.parametrize("impl,order", PATHS_ORDERS)
def test_gradgradcheck_gated_poly_norm(impl, order):
    gate = _away_from_kinks((3, 6), order).requires_grad_(True)
    up = _away_from_kinks((3, 6), order + 10).requires_grad_(True)
    w, b = _coefficients(order, order)
    assert torch.autograd.gradgradcheck(
        lambda g, u, w, b: PF.gated_poly_norm(g, u, w, b, implementation=impl), (gate, up, w, b))


def _peer_cases(degree):
    """(function of (impl, *tensors), tensors) for each peer family of the given degree."""
    g = torch.Generator().manual_seed(degree)
    rand = lambda n: (0.3 * torch.randn(n, generator=g, dtype=torch.float64) + 0.2).requires_grad_(True)  # noqa: E731
    x = _away_from_kinks((3, 5), degree).requires_grad_(True)
    # Tropical: distinct integer slopes and coefficients spread apart, so no two pieces tie at any x.
    spread = lambda n: (torch.arange(n, dtype=torch.float64) * -0.7 + 0.05 * torch.randn(n, generator=g,  # noqa: E731
                                                                                          dtype=torch.float64))
    freq = (torch.arange(1, degree + 1, dtype=torch.float64) * 0.5).requires_grad_(True)
    return {
        "hermite": (lambda impl, x, a: hermite(x, a, impl), (x, rand(degree + 1))),
        "fourier": (lambda impl, x, b, c, s, w: fourier(x, b, c, s, w, impl), (x, rand(1), rand(degree), rand(degree),
                                                                               freq)),
        "tropical": (lambda impl, x, a: dispatch.call("tropical", impl, x, a),
                     (x, spread(degree + 1).requires_grad_(True))),
        "tropical_rational": (lambda impl, x, a, c: dispatch.call("tropical_rational", impl, x, a, c),
                              (x, spread(degree + 1).requires_grad_(True), (spread(degree + 1) - 3).requires_grad_(True))),
    }


# Degrees 2..8 (the tropical init needs 2); compiled: covered by the PolyCom families above (an
# Inductor compile per variant, the same mechanism as eager).
PEER_PATHS_DEGREES = [(impl, d) for impl in ("reference", "eager") for d in range(2, 9)]


@pytest.mark.parametrize("impl,degree", PEER_PATHS_DEGREES)
@pytest.mark.parametrize("family", ["hermite", "fourier", "tropical", "tropical_rational"])
def test_gradgradcheck_peer_families(family, degree, impl):
    fn, inputs = _peer_cases(degree)[family]
    assert torch.autograd.gradgradcheck(lambda *a: fn(impl, *a), inputs)


def _hessian_row_sums(fn, x, w, b):
    """The issue's reproduction: h = d/dx sum(d/dx sum(y^2))."""
    y = fn(x, w, b)
    (g,) = torch.autograd.grad(y.pow(2).sum(), x, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), x)
    return h


@pytest.mark.parametrize("name,naive", [("poly_norm", naive_poly_norm), ("poly_relu", naive_poly_relu)])
def test_issue_reproduction_gives_the_naive_formula_on_every_path(name, naive):
    torch.manual_seed(0)
    x = torch.randn(4, 16, dtype=torch.float64, requires_grad=True)
    w = torch.tensor([0.5, -0.3, 0.7], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    want = _hessian_row_sums(naive, x, w, b)  # the paper's formula typed out, under autograd
    # The values the issue quotes for the reference (the fast paths gave 241.18 and 499.21).
    assert want.sum().item() == pytest.approx({"poly_norm": -79.14, "poly_relu": 865.21}[name], abs=0.01)
    fn = getattr(PF, name)
    for impl in ("reference", "eager", "compiled", "auto"):
        got = _hessian_row_sums(lambda x, w, b: fn(x, w, b, implementation=impl), x, w, b)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("name", ["poly_norm", "poly_relu", "gated_poly_norm"])
def test_triton_double_backward_matches_reference(name, order):
    """Triton runs float32 only (the interpreter on CPU): Hessian-vector products against the reference in float32."""
    x = _away_from_kinks((3, 40), order).float()
    if "triton" not in available_implementations(x):
        pytest.skip("triton unavailable here")
    up = _away_from_kinks((3, 40), order + 1).float()
    w, b = (t.detach().float() for t in _coefficients(order, order))
    v = torch.randn(3, 40)
    fn = getattr(PF, name)
    results = {}
    for impl in ("reference", "triton"):
        leaves = [t.clone().requires_grad_(True) for t in (x, up, w, b)]
        args = leaves if name == "gated_poly_norm" else [leaves[0], *leaves[2:]]
        y = fn(*args, implementation=impl)
        grads = torch.autograd.grad((y * v).sum(), args, create_graph=True)
        hvp = torch.autograd.grad(sum((g * g).sum() for g in grads), args, allow_unused=True)
        results[impl] = (grads, [torch.zeros_like(a) if h is None else h for a, h in zip(args, hvp)])
    # float32 against float32, the same reference formula differentiated twice; the first-order
    # kernels and the reference agree to ~1e-6 relative (test_ops.py), their squares to ~1e-5.
    for got, want in zip(results["triton"], results["reference"]):
        for a, b_ in zip(got, want):
            scale = max(1.0, b_.abs().max().item())
            torch.testing.assert_close(a / scale, b_ / scale, rtol=1e-4, atol=1e-4)


def test_first_order_backward_still_runs_the_fused_kernel(monkeypatch):
    """create_graph=False keeps the closed-form backward (memory-lean), not the reference."""
    op = dispatch.registered_op("poly_norm")
    calls = []
    eager_backward = op.kernel("eager", "backward")
    monkeypatch.setitem(op._resolved, "eager", (op.kernel("eager", "forward"),
                                                lambda *a: calls.append(1) or eager_backward(*a)))
    x = torch.randn(3, 8, requires_grad=True)
    w, b = (t.detach().float().requires_grad_(True) for t in _coefficients(3, 0))
    PF.poly_norm(x, w, b, implementation="eager").sum().backward()
    assert calls == [1]
    y = PF.poly_norm(x, w, b, implementation="eager")
    torch.autograd.grad(y.sum(), x, create_graph=True)
    assert calls == [1]  # a differentiable gradient came from the reference formula


# ---- torch.func ----

@pytest.mark.parametrize("impl", ["auto", "eager", "compiled"])
@pytest.mark.parametrize("name", ["poly_norm", "poly_relu"])
def test_vmap_grad_jvp_jacrev_match_the_untransformed_reference(name, impl):
    fn = getattr(PF, name)
    torch.manual_seed(1)
    x = torch.randn(5, 4, 7)
    w, b = (t.detach().float() for t in _coefficients(3, 1))
    ref = lambda x: fn(x, w, b, implementation="reference")  # noqa: E731
    f = lambda x: fn(x, w, b, implementation=impl)  # noqa: E731
    # vmap over the leading dim: per-sample calls, stacked
    torch.testing.assert_close(vmap(f)(x), torch.stack([ref(xi) for xi in x]))
    # grad of a scalar, and per-sample gradients vmap(grad)
    loss = lambda x: f(x).pow(2).sum()  # noqa: E731
    x_leaf = x.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(ref(x_leaf).pow(2).sum(), x_leaf)
    torch.testing.assert_close(grad(loss)(x), want)
    torch.testing.assert_close(vmap(grad(loss))(x), want)  # samples are independent rows
    # jvp: forward-mode, against J v from the double-backward trick on the reference
    v = torch.randn_like(x)
    _, tangent = jvp(f, (x,), (v,))
    _, want_tangent = torch.autograd.functional.jvp(ref, x, v)
    torch.testing.assert_close(tangent, want_tangent)
    # jacrev on one row
    torch.testing.assert_close(jacrev(f)(x[0, 0]), torch.autograd.functional.jacobian(ref, x[0, 0]))


def test_functional_call_and_per_sample_grads_of_a_module():
    torch.manual_seed(2)
    mlp = torch.nn.Sequential(torch.nn.Linear(6, 12), polycom.PolyNorm(), torch.nn.Linear(12, 3))
    params = {k: v.detach() for k, v in mlp.named_parameters()}
    x, target = torch.randn(4, 6), torch.randn(4, 3)

    def sample_loss(p, xi, ti):
        return (functional_call(mlp, p, (xi[None],)) - ti).pow(2).sum()

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))(params, x, target)
    mlp[1].implementation = "reference"
    for i in range(4):  # each sample's gradient by plain autograd through the reference formula
        mlp.zero_grad()
        (mlp(x[i : i + 1]) - target[i]).pow(2).sum().backward()
        for k, p in mlp.named_parameters():
            torch.testing.assert_close(per_sample[k][i], p.grad, rtol=1e-5, atol=1e-6)
    want = mlp(x)
    mlp[1].implementation = "auto"
    torch.testing.assert_close(functional_call(mlp, params, (x,)), want)


def test_forward_mode_ad_with_dual_tensors():
    import torch.autograd.forward_ad as fwAD

    torch.manual_seed(3)
    x, v = torch.randn(2, 9, dtype=torch.float64), torch.randn(2, 9, dtype=torch.float64)
    w, b = (t.detach() for t in _coefficients(3, 3))
    with fwAD.dual_level():
        out = PF.gated_poly_norm(fwAD.make_dual(x, v), x.flip(-1), w, b)
        tangent = fwAD.unpack_dual(out).tangent
    _, want = torch.autograd.functional.jvp(lambda g: naive_gated_poly_norm(g, x.flip(-1), w, b), x, v)
    torch.testing.assert_close(tangent, want)


def test_explicit_triton_under_a_transform_is_refused():
    x = torch.randn(2, 4, 8)
    with pytest.raises(ValueError, match="'triton' cannot run under torch.func"):
        vmap(lambda t: dispatch.select_implementation(t, "triton", 3))(x)
