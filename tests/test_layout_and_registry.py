"""Init, checkpoint layout, low-precision safety, registry behaviour and bad input."""

import pytest
import torch

import polycom
from polycom import functional as PF
from naive import naive_poly_norm


@pytest.mark.parametrize("cls", [polycom.PolyReLU, polycom.PolyNorm, polycom.GatedPolyNorm])
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_paper_init(cls, order):
    m = cls(order=order)
    assert m.weight.shape == (order,) and m.bias.shape == (1,)
    assert torch.all(m.weight == 1.0 / order)
    assert m.bias.item() == 0.0


def test_official_state_dict_layout():
    """An official checkpoint's activation entry (weight[0] = cubic, weight[2] = linear) loads unchanged."""
    a3, a2, a1, a0 = 0.7, -0.2, 1.3, 0.05
    official = {"weight": torch.tensor([a3, a2, a1], dtype=torch.float64), "bias": torch.tensor([a0], dtype=torch.float64)}
    m = polycom.PolyNorm().double()
    m.load_state_dict(official)
    assert list(m.state_dict().keys()) == ["weight", "bias"]

    x = torch.randn(4, 10, dtype=torch.float64)

    def n(z):
        return z / torch.sqrt(z.pow(2).mean(-1, keepdim=True) + 1e-6)

    expected = a0 + a1 * n(x) + a2 * n(x**2) + a3 * n(x**3)
    torch.testing.assert_close(m(x), expected, rtol=1e-12, atol=1e-12)

    r = polycom.PolyReLU().double()
    r.load_state_dict(official)
    rx = torch.relu(x)
    torch.testing.assert_close(r(x), a0 + a1 * rx + a2 * rx**2 + a3 * rx**3, rtol=1e-12, atol=1e-12)


def test_nested_state_dict_keys():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), polycom.PolyNorm(), torch.nn.Linear(8, 4))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("1.")}
    assert shapes == {"1.weight": (3,), "1.bias": (1,)}


def test_fp16_extreme_inputs_are_finite_and_correct():
    torch.manual_seed(0)
    x = (torch.rand(8, 64) * 2 - 1) * 60000
    x[0, 0] = 60000.0
    x16 = x.half()
    w, b = torch.tensor([0.5, -0.3, 0.8]), torch.tensor([0.1])
    out = PF.poly_norm(x16, w, b)
    assert out.dtype == torch.float16
    assert torch.isfinite(out).all()
    # fp16 output rounding (rel 2^-11) on values of size up to ~sqrt(64).
    torch.testing.assert_close(out.double(), naive_poly_norm(x16, w, b), rtol=2e-3, atol=2e-3)
    # Gradients stay finite as well.
    x16.requires_grad_(True)
    PF.poly_norm(x16, w, b).sum().backward()
    assert torch.isfinite(x16.grad).all()


@pytest.mark.parametrize("implementation,top", [("reference", 1e30), ("auto", 1e10)])
def test_bf16_huge_inputs_do_not_overflow(implementation, top):
    """The reference is exact for every finite input; the fast paths save 1/rms(x^i) ~ |x|^-i
    in float32, which bounds them to max|x| below ~1e12 (r = 3): far beyond any activation."""
    x = (torch.tensor([[1.0, -0.3, 0.05, 1e-30]]) * top).bfloat16()
    w, b = torch.tensor([0.5, -0.3, 0.8]), torch.tensor([0.0])
    out = PF.poly_norm(x, w, b, implementation=implementation)
    assert torch.isfinite(out).all()
    # Float64 holds (1e30)^6 exactly enough; bf16 rounding of the output: rel 2^-8.
    torch.testing.assert_close(out.double(), naive_poly_norm(x, w, b), rtol=1e-2, atol=1e-2)


def test_registry_returns_fresh_modules():
    a, b = polycom.get_activation("polynorm"), polycom.get_activation("polynorm")
    assert a is not b and a.weight is not b.weight
    with torch.no_grad():
        a.weight.fill_(5.0)
    assert torch.all(b.weight == 1.0 / 3)


def test_registry_gated_flags_and_kwargs():
    assert polycom.activation_info("swiglu").gated and polycom.activation_info("gated_polynorm").gated
    assert not polycom.activation_info("polynorm").gated and not polycom.activation_info("gelu").gated
    assert set(polycom.list_activations(gated=True)) == {"swiglu", "geglu", "gated_polynorm", "pnglu", "motif_gated_polynorm"}
    assert polycom.get_activation("polynorm", order=2).weight.shape == (2,)
    assert polycom.get_activation("pnglu").order == 2
    assert polycom.get_activation("gelu_tanh").approximate == "tanh"
    assert polycom.get_activation("PolyNorm").order == 3  # names are case-insensitive


def test_register_custom_activation(monkeypatch):
    from polycom import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # keep the global registry clean
    info = polycom.register_activation("test_square", lambda: torch.nn.Identity(), description="x", overwrite=True)
    assert "test_square" in polycom.list_activations() and not info.gated
    with pytest.raises(ValueError, match="already registered"):
        polycom.register_activation("test_square", torch.nn.Identity)


def test_extra_repr():
    assert repr(polycom.PolyNorm(order=2)) == "PolyNorm(order=2, eps=1e-06)"
    assert repr(polycom.PolyReLU()) == "PolyReLU(order=3)"
    assert "base=silu, kind=II, order=3" in repr(polycom.PolyCom("silu", 3, "II"))


@pytest.mark.parametrize(
    "make, exc, pattern",
    [
        (lambda: polycom.PolyNorm(order=0), ValueError, "'order' must be >= 1"),
        (lambda: polycom.PolyReLU(order=2.5), TypeError, "'order' must be an int"),
        (lambda: polycom.PolyNorm(eps=0.0), ValueError, "'eps' must be a finite number > 0"),
        (lambda: polycom.PolyNorm(eps=-1e-6), ValueError, "'eps' must be a finite number > 0"),
        (lambda: polycom.get_activation("polynrom"), ValueError, "unknown activation 'polynrom'; valid names: .*polynorm"),
        (lambda: polycom.PolyCom(base="tanh"), ValueError, "'base' must be one of"),
        (lambda: polycom.PolyCom(kind="III"), ValueError, "'kind' must be"),
        (lambda: polycom.PolyNorm()(torch.ones(3, 4, dtype=torch.long)), TypeError, "'x' must be a floating-point"),
        (lambda: polycom.PolyNorm()(torch.ones(3, 0)), ValueError, "'x' has a last dimension of size 0"),
        (lambda: PF.poly_norm(torch.ones(2, 3), torch.ones(3, 1), torch.zeros(1)), ValueError, "'weight' must have shape"),
        (lambda: PF.poly_relu(torch.ones(2, 3), torch.ones(3), torch.zeros(2)), ValueError, "'bias' must have shape"),
        (lambda: PF.poly_norm(torch.ones(2, 3), torch.ones(3), torch.zeros(1), eps=0), ValueError, "'eps' must be a finite"),
        (lambda: PF.gated_poly_norm(torch.ones(2, 3), torch.ones(2, 4), torch.ones(3), torch.zeros(1)),
         ValueError, "'gate' and 'up'"),
        (lambda: PF.poly_norm(torch.ones(2, 3), torch.ones(3), torch.zeros(1), implementation="cuda!"),
         ValueError, "'implementation' must be one of"),
    ],
)
def test_bad_input_names_the_argument(make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make()


def test_reset_parameters_restores_every_coefficient():
    m = polycom.PolyCom(base="prelu", order=2)
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(7.0)
    m.reset_parameters()
    assert m.weight.tolist() == [0.5, 0.5] and m.bias.item() == 0.0 and m.prelu_weight.item() == 0.25
