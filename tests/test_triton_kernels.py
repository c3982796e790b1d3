"""Triton kernels (polycom.ops.triton_*) against autograd through polycom.reference.

Without a GPU the kernels run in the Triton interpreter on CPU tensors
(numerics only, slow: shapes stay small). On a CUDA machine, run with
TRITON_INTERPRET=0 to test the compiled kernels on the GPU.

Expected values come from the reference functions evaluated in float64 on the
same (already rounded) inputs, differentiated by autograd; the only errors left
are the kernels' fp32 arithmetic and the rounding of outputs to their dtype.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton")

from polycom import reference as ref  # noqa: E402
from polycom.ops.triton_poly_norm import (  # noqa: E402
    gated_poly_norm_backward_triton,
    gated_poly_norm_forward_triton,
    poly_norm_backward_triton,
    poly_norm_forward_triton,
)
from polycom.ops.triton_poly_relu import poly_relu_backward_triton, poly_relu_forward_triton  # noqa: E402
from polycom.ops import triton_poly_norm as tpn  # noqa: E402
from polycom.ops.triton_utils import (  # noqa: E402
    MAX_SINGLE_BLOCK,
    TUNED,
    interpreting,
    row_launch_config,
    triton_available,
)

if not triton_available():
    pytest.skip("Triton cannot run here (no CUDA device and TRITON_INTERPRET != 1)", allow_module_level=True)

DEVICE = "cpu" if interpreting() else "cuda"
# The PolyNorm forward squares x unscaled first and rescales only if fp32 overflowed: on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
EPS = 1e-6

# Tolerances: (rel, floor). Checked as |actual - expected| <= rel * |expected| + floor * max|expected|.
# The floor covers entries near zero from cancellation between terms of size ~max|expected|.
# bf16 output rounding: at most half an ulp (2^-9 relative) with the GPU's round-to-nearest;
# the Triton interpreter truncates fp32 -> bf16 (checked with triton 3.9), up to a full ulp (2^-8..2^-7).
BF16_ROUNDING = 2**-7 if interpreting() else 2**-8
TOL_Y = {
    torch.float32: (1e-5, 1e-6),  # fp32 sums of <= 1e3 terms and rsqrt: a few ulp (2^-23 ~ 1.2e-7) each
    torch.bfloat16: (BF16_ROUNDING, 2**-9),  # output rounded to bf16 (see above), plus the fp32 error
    torch.float16: (2**-10, 2**-11),  # output rounded to fp16 (half ulp 2^-11), plus the fp32 error above
}
# Input gradients: the closed form subtracts (d_i / N) n_i from g, so fp32 errors grow by ~ the
# ratio of the terms to the result: 10x the forward's fp32 tolerance; 16-bit ones are output rounding.
TOL_DX = {torch.float32: (1e-4, 1e-5), torch.bfloat16: (BF16_ROUNDING, 2**-8), torch.float16: (2**-10, 2**-10)}
# Weight/bias gradients are fp32 sums over all M*N elements whatever the dtype (inputs are exact).
TOL_DW = (1e-4, 1e-5)
# inv_rms is fp32 rsqrt of fp32 sums of <= 1e3 terms: a few ulp. No floor: each entry is its own scale.
TOL_INV = (1e-5, 0.0)

# (M, N, block_size): block_size None lets the launcher choose (single block); a small
# forced block makes the row longer than a block, so the chunked two-pass path runs.
SHAPES = [(1, 1, None), (7, 123, None), (1, 1000, 128), (3, 1000, 256)]


def assert_close(actual, expected, tol, what, abs_floor=0.0):
    rel, floor = tol
    actual, expected = actual.double().cpu(), expected.double().cpu()
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    bound = rel * expected.abs() + floor * expected.abs().max() + abs_floor
    err = (actual - expected).abs()
    worst = (err - bound).argmax()
    assert (err <= bound).all(), (
        f"{what}: max error {err.max().item():.3e}; worst entry {actual.flatten()[worst].item():.6e} "
        f"vs {expected.flatten()[worst].item():.6e}"
    )


def coefficients(order, dtype=torch.float32, seed=1):
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(order, generator=gen).to(dtype)
    bias = torch.randn(1, generator=gen).to(dtype)
    return weight.to(DEVICE), bias.to(DEVICE)


def randn(m, n, dtype, scale=1.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(m, n, generator=gen, dtype=torch.float64) * scale).to(dtype).to(DEVICE)


def inv_rms_float64(x, order, eps=EPS):
    """1 / sqrt(mean(x^(2i)) + eps) per row, i = 1..r, typed out in float64 (exact for |x| < 1e38)."""
    x = x.double().cpu()
    return torch.stack([1.0 / torch.sqrt((x ** (2 * i)).mean(-1) + eps) for i in range(1, order + 1)], dim=-1)


def grad_x_floor(grad_y, inv, weight, rel=1e-6):
    """Absolute error allowed in grad_x from cancellation inside the closed form.

    grad_x is a difference of terms of size up to max|g| * inv_1 * sum_i i |a_i| (times
    |n_i| ~ 1); when they cancel (e.g. N = 1, where the true gradient is ~eps), fp32 leaves
    an error of a few ulp of the terms, not of the result.
    """
    order = weight.numel()
    coef = sum(i * abs(weight[order - i].item()) for i in range(1, order + 1))
    return rel * grad_y.abs().max().item() * inv[:, 0].max().item() * coef


def reference_grads(fn, inputs, grad_y):
    """Output and gradients of ``fn`` by autograd, in float64 on CPU, at the given (rounded) inputs."""
    leaves = [t.detach().double().cpu().requires_grad_() for t in inputs]
    out = fn(*leaves)
    out.backward(grad_y.double().cpu())
    return out.detach(), [t.grad for t in leaves]


# ----------------------------------------------------------------------------- PolyNorm


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("m,n,block", SHAPES)
def test_poly_norm(order, dtype, m, n, block):
    x = randn(m, n, dtype, scale=2.0)
    weight, bias = coefficients(order)
    grad_y = randn(m, n, dtype, seed=5)

    y, inv = poly_norm_forward_triton(x, weight, bias, EPS, block_size=block)
    assert y.dtype == dtype and inv.dtype == torch.float32 and inv.shape == (m, order)
    expected, (gx_ref, gw_ref, gb_ref) = reference_grads(
        lambda x_, w_, b_: ref.poly_norm_reference(x_, w_, b_, EPS), (x, weight, bias), grad_y
    )
    assert_close(y, expected, TOL_Y[dtype], "y")
    assert_close(inv, inv_rms_float64(x, order), TOL_INV, "inv_rms")

    gx, gw, gb = poly_norm_backward_triton(grad_y, x, weight, inv, block_size=block)
    assert gx.dtype == dtype and gw.dtype == torch.float32 and gb.dtype == torch.float32
    assert gw.shape == weight.shape and gb.shape == (1,)
    assert_close(gx, gx_ref, TOL_DX[dtype], "grad_x", abs_floor=grad_x_floor(grad_y, inv, weight))
    assert_close(gw, gw_ref, TOL_DW, "grad_weight")
    assert_close(gb, gb_ref, TOL_DW, "grad_bias")


@pytest.mark.parametrize("order", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("m,n,block", [(7, 123, None), (3, 1000, 256)])
def test_gated_poly_norm(order, dtype, m, n, block):
    gate = randn(m, n, dtype, scale=2.0)
    up = randn(m, n, dtype, seed=3)
    weight, bias = coefficients(order)
    grad_y = randn(m, n, dtype, seed=5)

    y, inv = gated_poly_norm_forward_triton(gate, up, weight, bias, EPS, block_size=block)
    expected, (gg_ref, gu_ref, gw_ref, gb_ref) = reference_grads(
        lambda g_, u_, w_, b_: ref.gated_poly_norm_reference(g_, u_, w_, b_, EPS), (gate, up, weight, bias), grad_y
    )
    assert_close(y, expected, TOL_Y[dtype], "y")
    assert_close(inv, inv_rms_float64(gate, order), TOL_INV, "inv_rms")

    gg, gu, gw, gb = gated_poly_norm_backward_triton(grad_y, gate, up, weight, bias, inv, block_size=block)
    assert gg.dtype == dtype and gu.dtype == dtype and gw.dtype == torch.float32
    assert_close(gg, gg_ref, TOL_DX[dtype], "grad_gate", abs_floor=grad_x_floor(grad_y * up, inv, weight))
    assert_close(gu, gu_ref, TOL_DX[dtype], "grad_up")
    assert_close(gw, gw_ref, TOL_DW, "grad_weight")
    assert_close(gb, gb_ref, TOL_DW, "grad_bias")


# Capped grids: each program loops over rows (the launcher does this for long rows on CUDA).
# The per-row arithmetic is unchanged, so the results must be bit-identical to one program per row.
@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("m,n,block,programs", [(7, 123, None, 3), (5, 300, 64, 2), (4, 50, None, 1)])
def test_capped_grid_matches_one_program_per_row(gated, m, n, block, programs):
    x = randn(m, n, torch.float32, scale=2.0)
    up = randn(m, n, torch.float32, seed=3) if gated else None
    weight, bias = coefficients(3)
    grad_y = randn(m, n, torch.float32, seed=5)
    if gated:
        fwd = lambda **kw: gated_poly_norm_forward_triton(x, up, weight, bias, EPS, block_size=block, **kw)  # noqa: E731
        bwd = lambda inv, **kw: gated_poly_norm_backward_triton(  # noqa: E731
            grad_y, x, up, weight, bias, inv, block_size=block, **kw)
    else:
        fwd = lambda **kw: poly_norm_forward_triton(x, weight, bias, EPS, block_size=block, **kw)  # noqa: E731
        bwd = lambda inv, **kw: poly_norm_backward_triton(grad_y, x, weight, inv, block_size=block, **kw)  # noqa: E731
    (y, inv), (y_capped, inv_capped) = fwd(), fwd(max_programs=programs)
    assert torch.equal(y, y_capped) and torch.equal(inv, inv_capped)
    for full, capped in zip(bwd(inv), bwd(inv, max_programs=programs)):
        assert torch.equal(full, capped)


# The input bound as a constexpr variant (BOUNDED) of the same kernels: with x clamped as it is read, every
# value is the unbounded kernels' on clamp(x), so the results are bit-identical to them (grad_x masked).
@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("m,n,block,bound", [
    (7, 123, None, 1.5),  # one block per row
    (3, 300, 64, 1.5),  # chunked rows
    (3, 300, 64, 1e7),  # chunked, (1e7)^6 overflows fp32 in the first pass: the rescaled pass runs
])
def test_input_bound_equals_the_unbounded_kernels_on_the_clamped_input(gated, m, n, block, bound):
    x = randn(m, n, torch.float32, scale=2.0)
    x[0, :4] = torch.tensor([bound, -bound, 3 * bound, -3 * bound])  # at the bound and beyond
    up = randn(m, n, torch.float32, seed=3)
    weight, bias = coefficients(3)
    grad_y = randn(m, n, torch.float32, seed=5)
    clamped = x.clamp(-bound, bound)
    if gated:
        fwd = lambda x_, *c: gated_poly_norm_forward_triton(x_, up, weight, bias, EPS, *c, block_size=block)  # noqa: E731
        bwd = lambda x_, inv, *c: gated_poly_norm_backward_triton(  # noqa: E731
            grad_y, x_, up, weight, bias, inv, *c, block_size=block)
    else:
        fwd = lambda x_, *c: poly_norm_forward_triton(x_, weight, bias, EPS, *c, block_size=block)  # noqa: E731
        bwd = lambda x_, inv, *c: poly_norm_backward_triton(grad_y, x_, weight, inv, *c, block_size=block)  # noqa: E731
    (y, inv), (y_clamped, inv_clamped) = fwd(x, bound), fwd(clamped)
    assert torch.equal(y, y_clamped) and torch.equal(inv, inv_clamped)
    grads, grads_clamped = bwd(x, inv, bound), bwd(clamped, inv)
    inside = x.abs() <= bound  # torch.clamp's gradient mask: inclusive
    assert not inside.all() and inside[0, :2].all()
    assert torch.equal(grads[0], torch.where(inside, grads_clamped[0], 0.0))
    for got, want in zip(grads[1:], grads_clamped[1:]):
        assert torch.equal(got, want)


def test_capped_grid_rejects_zero_programs():
    x = randn(2, 8, torch.float32)
    weight, bias = coefficients(2)
    with pytest.raises(ValueError, match="max_programs"):
        poly_norm_forward_triton(x, weight, bias, EPS, max_programs=0)


@pytest.mark.parametrize("key", sorted(TUNED), ids=lambda k: f"{k[0]}-{k[1]}B-{k[2]}")
def test_tuned_launch_configs(key):
    """Every measured launch config covers its row lengths and computes what the rule's does."""
    kernel, elem_bytes, length = key
    cfg = TUNED[key]
    n = length // 2 + 1 if length > 16 else length  # the shortest row the entry covers (odd: masks run)
    assert row_launch_config(n, elem_bytes, kernel) == cfg
    assert cfg.single == (cfg.block >= length) and (cfg.single or cfg.block < n)
    dtype = torch.float32 if elem_bytes == 4 else torch.bfloat16
    gated = kernel.startswith("gated")
    x, g = randn(2, n, dtype, scale=2.0), randn(2, n, dtype, seed=5)
    up = randn(2, n, dtype, seed=3) if gated else None
    weight, bias = coefficients(3)
    ruled = dict(block_size=MAX_SINGLE_BLOCK if n <= MAX_SINGLE_BLOCK else 4096)  # bypasses TUNED
    if kernel.endswith("fwd"):
        run = lambda **kw: tpn._forward(x, up, weight, bias, EPS, None, None, kernel, **kw)  # noqa: E731
    else:
        _, inv = tpn._forward(x, up, weight, bias, EPS, None, None, "fwd")
        run = lambda **kw: tpn._backward(g, x, up, weight, bias, inv, None, None, kernel, **kw)  # noqa: E731
    tuned_out = run()
    rule_out = run(cfg=row_launch_config(n, elem_bytes, kernel, **ruled))
    for a, b in zip(tuned_out, rule_out):
        if a is not None:
            # Same math, different summation order: fp32 rounding of sums of n terms.
            assert_close(a, b, (1e-5, 1e-5) if dtype == torch.float32 else (BF16_ROUNDING, 2**-8), kernel)


def test_poly_norm_coefficients_in_input_dtype():
    x = randn(4, 64, torch.bfloat16)
    weight, bias = coefficients(3, dtype=torch.bfloat16)
    y, inv = poly_norm_forward_triton(x, weight, bias, EPS)
    y32, inv32 = poly_norm_forward_triton(x, weight.float(), bias.float(), EPS)
    # bf16 coefficients are exactly representable in fp32: identical results.
    assert torch.equal(y, y32) and torch.equal(inv, inv32)
    grad_y = randn(4, 64, torch.bfloat16, seed=2)
    assert all(torch.equal(a, b) for a, b in zip(
        poly_norm_backward_triton(grad_y, x, weight, inv), poly_norm_backward_triton(grad_y, x, weight.float(), inv)
    ))


# Large inputs: rows whose x^6 overflows fp32 (bf16 to 1e30), the fp16 range (60000), a
# row of tiny values next to huge ones, on both the single-block and the chunked path.
@pytest.mark.parametrize("block", [None, 64])
@pytest.mark.parametrize("dtype,scale", [(torch.bfloat16, 1e30), (torch.float16, 2e4), (torch.bfloat16, 1e8)])
def test_poly_norm_large_values_forward(dtype, scale, block):
    order = 4
    x = randn(4, 200, dtype, scale=scale)
    x[1] = randn(1, 200, dtype, scale=1e-3, seed=7)  # eps-dominated row
    x[2, 150] = 60000.0 if dtype == torch.float16 else scale * 30  # a late outlier: the online max must rescale
    weight, bias = coefficients(order)
    y, inv = poly_norm_forward_triton(x, weight, bias, EPS, block_size=block)
    expected = ref.poly_norm_reference(x.double().cpu(), weight.double().cpu(), bias.double().cpu(), EPS)
    assert_close(y, expected, TOL_Y[dtype], "y")
    # Stored inv_i ~ max|x|^(-i) underflows for 1e30 rows: compared down to fp32's smallest normal.
    assert_close(inv, inv_rms_float64(x, order), TOL_INV, "inv_rms", abs_floor=1.2e-38)


@pytest.mark.parametrize("block", [None, 64])
@pytest.mark.parametrize("dtype,scale,order", [(torch.float16, 2e4, 4), (torch.bfloat16, 1e9, 3), (torch.bfloat16, 1e30, 1)])
def test_poly_norm_large_values_backward(dtype, scale, order, block):
    # The backward is exact while every stored inv_i is a normal fp32 (max|x|^r < ~1e37).
    x = randn(3, 200, dtype, scale=scale)
    x[2, 100] = 60000.0 if dtype == torch.float16 else scale * 30
    weight, bias = coefficients(order)
    grad_y = randn(3, 200, dtype, seed=5)
    _, inv = poly_norm_forward_triton(x, weight, bias, EPS, block_size=block)
    _, (gx_ref, gw_ref, gb_ref) = reference_grads(
        lambda x_, w_, b_: ref.poly_norm_reference(x_, w_, b_, EPS), (x, weight, bias), grad_y
    )
    gx, gw, gb = poly_norm_backward_triton(grad_y, x, weight, inv, block_size=block)
    # grad_x ~ 1/scale is far below the 16-bit subnormal range for huge rows; compare per row scale.
    row_scale = gx_ref.abs().amax(-1, keepdim=True)
    assert_close(gx.double().cpu() / row_scale, gx_ref / row_scale, TOL_DX[dtype], "grad_x / row max")
    assert_close(gw, gw_ref, TOL_DW, "grad_weight")
    assert_close(gb, gb_ref, TOL_DW, "grad_bias")


def test_poly_norm_backward_beyond_fp32_inv_range_is_finite():
    # bf16 rows near 1e30 with r = 4: inv_2..inv_4 underflow to 0 in the (M, r) fp32 contract,
    # so those gradient terms vanish; the kernel must still return finite numbers.
    x = randn(2, 100, torch.bfloat16, scale=1e30)
    weight, bias = coefficients(4)
    _, inv = poly_norm_forward_triton(x, weight, bias, EPS)
    gx, gw, gb = poly_norm_backward_triton(randn(2, 100, torch.bfloat16, seed=5), x, weight, inv)
    assert torch.isfinite(gx.float()).all() and torch.isfinite(gw).all() and torch.isfinite(gb).all()


# ----------------------------------------------------------------------------- PolyReLU


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("m,n,block", [(1, 1, 4096), (7, 123, 256), (3, 1000, 4096)])
def test_poly_relu(order, dtype, m, n, block):
    x = randn(m, n, dtype, scale=2.0)
    x[0, 0] = 0.0  # relu'(0) = 0, as torch
    weight, bias = coefficients(order)
    grad_y = randn(m, n, dtype, seed=5)

    y = poly_relu_forward_triton(x, weight, bias, block_size=block)
    expected, (gx_ref, gw_ref, gb_ref) = reference_grads(ref.poly_relu_reference, (x, weight, bias), grad_y)
    assert y.dtype == dtype
    assert_close(y, expected, TOL_Y[dtype], "y")

    gx, gw, gb = poly_relu_backward_triton(grad_y, x, weight, block_size=block)
    assert gx.dtype == dtype and gw.dtype == torch.float32 and gw.shape == weight.shape and gb.shape == (1,)
    # Horner's rule vs the reference's power sum: fp32 rounding only, as for PolyNorm's output.
    assert_close(gx, gx_ref, TOL_Y[dtype], "grad_x")
    assert_close(gw, gw_ref, TOL_DW, "grad_weight")
    assert_close(gb, gb_ref, TOL_DW, "grad_bias")


def test_poly_relu_overflows_like_the_reference():
    # PolyReLU is unbounded: values past the dtype's range are inf, as in the reference.
    x = torch.tensor([[-60000.0, 0.5, 30.0, 300.0, 60000.0]], dtype=torch.float16, device=DEVICE)
    weight, bias = coefficients(3)
    weight = weight.abs()
    y = poly_relu_forward_triton(x, weight, bias)
    expected = ref.poly_relu_reference(x.cpu(), weight.cpu(), bias.cpu())
    assert torch.equal(torch.isinf(y.cpu()), torch.isinf(expected)) and torch.isinf(expected).any()
    finite = torch.isfinite(expected)
    assert_close(y.cpu()[finite], expected[finite], TOL_Y[torch.float16], "finite y")


def test_empty_inputs():
    weight, bias = coefficients(3)
    for m, n in [(0, 16), (3, 0)]:
        x = torch.zeros(m, n, device=DEVICE)
        y, inv = poly_norm_forward_triton(x, weight, bias, EPS)
        assert y.shape == (m, n) and inv.shape == (m, 3)
        gx, gw, gb = poly_norm_backward_triton(x, x, weight, inv)
        assert gx.shape == (m, n) and torch.equal(gw, torch.zeros_like(gw)) and torch.equal(gb, torch.zeros_like(gb))
        gx, gw, gb = poly_relu_backward_triton(x, x, weight)
        assert gx.shape == (m, n) and torch.equal(gw, torch.zeros_like(gw)) and gb.item() == 0.0
        assert poly_relu_forward_triton(x, weight, bias).shape == (m, n)


# ----------------------------------------------------------------------------- packaging


def test_import_without_triton_is_safe():
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch\n"
        "from polycom.ops import triton_poly_norm, triton_poly_relu, triton_utils\n"
        "assert not triton_utils.triton_available()\n"
        "x = torch.zeros(2, 3)\n"
        "for call in (lambda: triton_poly_norm.poly_norm_forward_triton(x, torch.ones(3), torch.zeros(1), 1e-6),\n"
        "             lambda: triton_poly_relu.poly_relu_forward_triton(x, torch.ones(3), torch.zeros(1))):\n"
        "    try:\n"
        "        call()\n"
        "    except RuntimeError as e:\n"
        "        assert 'Triton' in str(e), e\n"
        "    else:\n"
        "        raise AssertionError('no error')\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_rejects_cpu_tensors_outside_the_interpreter():
    code = (
        "import os; os.environ['TRITON_INTERPRET'] = '0'\n"
        "import torch\n"
        "from polycom.ops.triton_poly_norm import poly_norm_forward_triton\n"
        "try:\n"
        "    poly_norm_forward_triton(torch.zeros(2, 3), torch.ones(3), torch.zeros(1), 1e-6)\n"
        "except RuntimeError as e:\n"
        "    print('ok' if 'CUDA' in str(e) else e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stdout + out.stderr


def test_compiled_graphs_hold_the_custom_op_and_eager_calls_match():
    """Eager calls launch the kernels directly; torch.compile traces the polycom:: custom op
    (one opaque node, no graph break). Both give the same numbers."""
    from polycom import functional as PF

    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    x = randn(6, 40, torch.float32).requires_grad_()
    weight, bias = coefficients(3)
    weight.requires_grad_()

    def fn(x, w, b):
        return PF.poly_norm(x, w, b, implementation="triton")

    eager = fn(x, weight, bias)
    compiled = torch.compile(fn, backend=backend, fullgraph=True)(x, weight, bias)
    code = "".join(m.code for gm in graphs for m in gm.modules() if isinstance(m, torch.fx.GraphModule))
    assert "torch.ops.polycom.poly_norm.default" in code and "torch.ops.polycom.poly_norm_backward" in code
    assert torch.equal(eager, compiled)


def test_load_tuned_overrides_and_validates(tmp_path):
    import json

    from polycom.ops import triton_utils

    saved = dict(triton_utils.TUNED)
    good = tmp_path / "tuned.json"
    good.write_text(json.dumps([
        {"kernel": "bwd", "elem_bytes": 4, "length": 2048, "block": 512, "single": False, "warps": 4,
         "stages": None, "programs_per_sm": 1.5},
    ]))
    try:
        assert triton_utils.load_tuned(str(good)) == 1
        cfg = row_launch_config(1500, 4, "bwd")
        assert (cfg.block, cfg.single, cfg.warps, cfg.programs_per_sm) == (512, False, 4, 1.5)
        # ... and the kernels run with it (chunked rows of 1500 in blocks of 512).
        x, g = randn(3, 1500, torch.float32), randn(3, 1500, torch.float32, seed=5)
        weight, bias = coefficients(3)
        _, inv = poly_norm_forward_triton(x, weight, bias, EPS)
        gx, _, _ = poly_norm_backward_triton(g, x, weight, inv)
        gx_rule, _, _ = poly_norm_backward_triton(g, x, weight, inv, block_size=2048)
        assert_close(gx, gx_rule, (1e-5, 1e-5), "grad_x")
        for bad, message in [
            ({"kernel": "fwd", "elem_bytes": 4, "length": 3000, "block": 4096, "single": True, "warps": 4}, "'length'"),
            ({"kernel": "fwd", "elem_bytes": 4, "length": 4096, "block": 1024, "single": True, "warps": 4}, "'single'"),
            ({"kernel": "sideways", "elem_bytes": 4, "length": 4096, "block": 4096, "single": True, "warps": 4}, "'kernel'"),
            ({"kernel": "fwd", "length": 4096}, "missing key"),
            ({"kernel": "fwd", "elem_bytes": 2, "length": 4096, "block": 4096, "single": True, "warps": 6}, "'warps'"),
            ({"kernel": "bwd", "elem_bytes": 2, "length": 4096, "block": 1024, "single": False, "warps": 4,
              "programs_per_sm": 0}, "'programs_per_sm'"),
        ]:
            path = tmp_path / "bad.json"
            path.write_text(json.dumps([bad]))
            with pytest.raises(ValueError, match=message):
                triton_utils.load_tuned(str(path))
    finally:
        triton_utils.TUNED.clear()
        triton_utils.TUNED.update(saved)
        row_launch_config.cache_clear()


def test_bad_tuned_file_in_the_environment_is_an_error(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"not": "a list"}')
    code = "import torch, polycom\npolycom.PolyNorm(implementation='triton')(torch.randn(2, 8))\n"
    env = {**os.environ, "POLYCOM_TRITON_TUNED": str(path), "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode != 0 and "expected a JSON list" in out.stderr and str(path) in out.stderr
