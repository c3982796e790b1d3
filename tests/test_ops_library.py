"""Every op as a torch.library custom op: opcheck on every backend, autograd on the raw op."""

import math

import pytest
import torch
from torch.library import opcheck

import polycom  # noqa: F401 - registers the ops
from polycom.ops import available_implementations, dispatch

WIDTHS = [1, 7, 513, 13824]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _args(name, width, dtype, rows=3, input_bound=math.inf):
    """Arguments of op ``name`` (tensors requiring grad, so opcheck also checks the autograd registration);
    ``input_bound``: the PolyNorm ops' constant (inf: none)."""
    g = torch.Generator().manual_seed(width)
    x = lambda: torch.randn(rows, width, generator=g).to(dtype).requires_grad_(True)  # noqa: E731
    coef = lambda n, scale=0.3: (scale * torch.randn(n, generator=g) + 0.2).requires_grad_(True)  # noqa: E731
    return {
        "poly_norm": lambda: (x(), coef(3), coef(1), 1e-6, input_bound),
        "poly_relu": lambda: (x(), coef(3), coef(1)),
        "gated_poly_norm": lambda: (x(), x(), coef(3), coef(1), 1e-6, input_bound),
        "hermite": lambda: (x(), coef(4)),
        "fourier": lambda: (x(), coef(1), coef(3), coef(3), torch.tensor([1.0, 2.0, 3.0], requires_grad=True)),
        "tropical": lambda: (x(), torch.tensor([0.0, -0.5, -2.0, -4.5], requires_grad=True)),
        "tropical_rational": lambda: (x(), torch.tensor([0.0, -0.5, -2.0], requires_grad=True),
                                      torch.tensor([-1.0, -2.0, -4.0], requires_grad=True)),
        # 3 experts, the last one without rows
        "grouped_poly_norm": lambda: (x(), coef((3, 3)), coef((3, 1)), torch.arange(rows) % 2, 1e-6, input_bound),
        "grouped_gated_poly_norm": lambda: (x(), x(), coef((3, 3)), coef((3, 1)), torch.arange(rows) % 2, 1e-6,
                                            input_bound),
    }[name]()


OPS = ["poly_norm", "poly_relu", "gated_poly_norm", "hermite", "fourier", "tropical", "tropical_rational",
       "grouped_poly_norm", "grouped_gated_poly_norm"]
BOUNDED_OPS = ["poly_norm", "gated_poly_norm", "grouped_poly_norm", "grouped_gated_poly_norm"]  # take input_bound
INPUT_BOUND = 0.8  # on randn data about 40% of the entries lie beyond it: the clamped branch and the mask run


def _cases():
    for name in OPS:
        for backend in dispatch.registered_op(name).kernels.backends:
            for width in WIDTHS:
                for dtype in DTYPES:
                    # The compiled backend is torch.compile of the eager closed form, which runs every case;
                    # each compiled variant costs ~9 s here, so it runs for the two ops with saved statistics,
                    # at one width and dtype.
                    if backend == "compiled" and not (name in ("poly_norm", "gated_poly_norm") and width == 513
                                                      and dtype == torch.bfloat16):
                        continue
                    yield pytest.param(name, backend, width, dtype, id=f"{name}-{backend}-{width}-{str(dtype)[6:]}")


@pytest.mark.parametrize("name,backend,width,dtype", list(_cases()))
def test_opcheck(name, backend, width, dtype):
    args = _args(name, width, dtype)
    if backend == "triton" and "triton" not in available_implementations(args[0]):
        pytest.skip("triton unavailable here")
    forward_op, _ = dispatch.registered_op(name).library_ops()
    opcheck(forward_op, (*args, backend))


def _bounded_cases():
    """The ops with an input bound on every backend, at one width, in float32 and bfloat16 (compiled: one case)."""
    for name in BOUNDED_OPS:
        for backend in dispatch.registered_op(name).kernels.backends:
            for dtype in (torch.float32, torch.bfloat16):
                if backend == "compiled" and not (name == "poly_norm" and dtype == torch.bfloat16):
                    continue
                yield pytest.param(name, backend, dtype, id=f"{name}-{backend}-{str(dtype)[6:]}")


@pytest.mark.parametrize("name,backend,dtype", list(_bounded_cases()))
def test_opcheck_with_an_input_bound(name, backend, dtype):
    """The schema's float input_bound, the backward op taking it, fake tensors and autograd, with entries clamped."""
    args = _args(name, 7, dtype, input_bound=INPUT_BOUND)
    assert (args[0].abs() > INPUT_BOUND).any()
    if backend == "triton" and "triton" not in available_implementations(args[0]):
        pytest.skip("triton unavailable here")
    forward_op, _ = dispatch.registered_op(name).library_ops()
    opcheck(forward_op, (*args, backend))


@pytest.mark.parametrize("name,input_bound", [(name, math.inf) for name in OPS]
                         + [(name, INPUT_BOUND) for name in BOUNDED_OPS])
def test_raw_library_op_has_autograd_and_matches_the_reference(name, input_bound):
    """torch.ops.polycom.<name>: forward, first and second derivatives equal the reference formula's (float64)."""
    op = dispatch.registered_op(name)
    forward_op, _ = op.library_ops()
    assert getattr(torch.ops.polycom, name).default is not None
    args = [a.detach().double().requires_grad_(True) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
            for a in _args(name, 9, torch.float64, rows=3, input_bound=input_bound)]
    tensors = [a for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()]
    results = []
    for fn in (lambda *a: op.reference(*a), lambda *a: forward_op(*a, "eager")):
        y = fn(*args)
        y = y[0] if isinstance(y, tuple) else y
        grads = torch.autograd.grad((y * y).sum(), tensors, create_graph=True)
        second = torch.autograd.grad(sum(g.sum() for g in grads), tensors, allow_unused=True)
        results.append([y, *grads, *[torch.zeros_like(t) if s is None else s for t, s in zip(tensors, second)]])
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
