"""polycom.kernels_hub: layers marked with kernels' ``use_kernel_forward_from_hub`` ("PolyNorm",
"PolyReLU", "GatedPolyNorm") take polycom's forward under ``kernel_mapping()`` and ``kernelize``,
offline, in inference, training and torch.compile modes. The host layers here are a model's own
code, written with the naive float64 formulas of tests/naive.py; kernelize must swap in polycom's
forward (checked by identity and by counting calls), which must give the same outputs and gradients."""

import copy

import pytest
import torch
from torch import nn

kernels = pytest.importorskip("kernels")

from kernels import Mode, kernelize, use_kernel_forward_from_hub, use_kernel_mapping  # noqa: E402
from naive import naive_gated_poly_norm, naive_poly_norm, naive_poly_relu  # noqa: E402

import polycom  # noqa: E402
from polycom import kernels_hub  # noqa: E402


class Coefficients(nn.Module):
    """weight (r,) with weight[0] the highest power, bias (1,): the PolyCom checkpoints' layout."""

    def __init__(self, eps: float | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([0.3, -0.5, 0.9]))
        self.bias = nn.Parameter(torch.tensor([0.2]))
        if eps is not None:
            self.eps = eps


@use_kernel_forward_from_hub("PolyNorm")
class HostPolyNorm(Coefficients):
    def forward(self, x):
        return naive_poly_norm(x, self.weight, self.bias, self.eps).to(x.dtype)


@use_kernel_forward_from_hub("PolyReLU")
class HostPolyReLU(Coefficients):
    def forward(self, x):
        return naive_poly_relu(x, self.weight, self.bias).to(x.dtype)


@use_kernel_forward_from_hub("GatedPolyNorm")
class HostGatedPolyNorm(Coefficients):
    def forward(self, x, mul):
        return naive_gated_poly_norm(x, mul, self.weight, self.bias, self.eps).to(x.dtype)


class TinyModel(nn.Module):
    """The three marked layers in a row; ``implementation`` set on the hosts is passed to polycom."""

    def __init__(self, implementation: str | None = None):
        super().__init__()
        torch.manual_seed(0)
        self.up, self.gate, self.down = nn.Linear(8, 24), nn.Linear(24, 24), nn.Linear(24, 8)
        self.poly_norm, self.poly_relu = HostPolyNorm(eps=1e-5), HostPolyReLU()
        self.gated = HostGatedPolyNorm(eps=1e-6)
        if implementation is not None:
            for host in (self.poly_norm, self.poly_relu, self.gated):
                host.implementation = implementation

    def forward(self, x):
        h = self.poly_norm(self.up(x))  # (B, 24)
        return self.down(self.gated(self.gate(h), self.poly_relu(h)))


HOSTS = {"poly_norm": "PolyNorm", "poly_relu": "PolyReLU", "gated": "GatedPolyNorm"}


def _outputs_and_grads(model, x):
    x = x.clone().requires_grad_(True)
    model.zero_grad()
    y = model(x)
    y.square().sum().backward()
    return [y.detach(), x.grad] + [p.grad for p in model.parameters()]


def _assert_polycoms_forward(model):
    for attr, name in HOSTS.items():
        host = getattr(model, attr)
        assert host.forward.__func__ is kernels_hub.LAYERS[name].forward, attr
        assert host._kernel_repo == kernels_hub.PolycomRepository(name)


# fp32 PolyNorm against the float64 formula rounded once: ~1e-6 relative here; 1e-5 still catches a
# wrong power order, eps or gate (those move the outputs by >1e-2).
TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.mark.parametrize("mode", [Mode.INFERENCE, Mode.TRAINING], ids=["inference", "training"])
def test_kernelize_swaps_in_polycoms_forward_with_the_same_outputs_and_gradients(mode, monkeypatch):
    model = TinyModel(implementation="eager")  # the compiled CPU path compiles per shape: too slow for here
    x = torch.randn(5, 8)
    want = _outputs_and_grads(model, x)
    calls = []
    for fn in ("poly_norm", "poly_relu", "gated_poly_norm"):
        original = getattr(kernels_hub, fn)
        monkeypatch.setattr(kernels_hub, fn, lambda *a, _f=original, _n=fn: calls.append(_n) or _f(*a))
    with use_kernel_mapping(kernel_mapping := kernels_hub.kernel_mapping(), inherit_mapping=False):
        kernelize(model, mode=mode, device="cpu", use_fallback=False)  # raise rather than keep the host's forward
    assert set(kernel_mapping) == set(kernels_hub.LAYER_NAMES) == set(HOSTS.values())
    _assert_polycoms_forward(model)
    got = _outputs_and_grads(model, x)
    assert sorted(calls) == ["gated_poly_norm", "poly_norm", "poly_relu"]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **TOL)


def test_kernelize_for_torch_compile_traces_polycoms_forward_in_one_graph():
    model = TinyModel()  # "auto": inside a compiled graph polycom's ops run eager and the compiler fuses them
    x = torch.randn(5, 8)
    want = _outputs_and_grads(copy.deepcopy(model), x)
    with use_kernel_mapping(kernels_hub.kernel_mapping(), inherit_mapping=False):
        kernelize(model, mode=Mode.TRAINING | Mode.TORCH_COMPILE, device="cpu", use_fallback=False)
    _assert_polycoms_forward(model)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")  # fullgraph: no break around the layers
    got = _outputs_and_grads(compiled, x)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **TOL)


def test_polycom_host_passes_its_bounds_eps_and_implementation():
    """A polycom module marked for the hub (Motif's bounded PolyNorm) keeps computing its own function."""

    class MarkedPolyNorm(polycom.PolyNorm):
        pass

    kernels.replace_kernel_forward_from_hub(MarkedPolyNorm, "PolyNorm")
    host = MarkedPolyNorm(eps=1e-4, implementation="eager", sigmoid_coefficients=True, bias_bound=0.5,
                          output_scale=0.5, input_bound=3.0)
    with torch.no_grad():
        host.weight.copy_(torch.tensor([2.0, -1.0, 0.5]))
        host.bias.fill_(0.9)  # beyond bias_bound: the clamp shows
    x = torch.randn(4, 16) * 3
    want = host(x)
    with use_kernel_mapping(kernels_hub.kernel_mapping(), inherit_mapping=False):
        kernelize(host, mode=Mode.INFERENCE, device="cpu", use_fallback=False)
    assert host.forward.__func__ is kernels_hub.PolyNorm.forward
    torch.testing.assert_close(host(x), want, rtol=0, atol=0)  # the same call of the same op


def test_host_with_a_scalar_bias_and_variance_epsilon():
    @use_kernel_forward_from_hub("PolyNorm")
    class ScalarBiasPolyNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.tensor([0.3, 0.4, 0.3]))
            self.bias = nn.Parameter(torch.tensor(0.1))  # 0-dim
            self.variance_epsilon = 1e-2  # large, so reading another epsilon would show

        def forward(self, x):
            return naive_poly_norm(x, self.weight, self.bias.reshape(1), self.variance_epsilon).to(x.dtype)

    host = ScalarBiasPolyNorm()
    host.implementation = "eager"
    x = torch.randn(3, 16) * 0.2  # small rows: mean(x^2) ~ 4e-2, mean(x^6) ~ 1e-3, against eps = 1e-2
    want = host(x)
    with use_kernel_mapping(kernels_hub.kernel_mapping(), inherit_mapping=False):
        kernelize(host, mode=Mode.INFERENCE, device="cpu", use_fallback=False)
    assert host.forward.__func__ is kernels_hub.PolyNorm.forward
    torch.testing.assert_close(host(x), want, **TOL)


def test_unknown_layer_name_is_refused():
    with pytest.raises(ValueError, match="'layer_name' must be one of"):
        kernels_hub.PolycomRepository("RMSNorm")
