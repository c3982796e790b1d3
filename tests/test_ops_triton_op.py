"""The Triton kernels as torch.library.triton_op pairs (polycom::<name>_triton): the compiler sees the kernels.

Without a GPU the kernels run in the Triton interpreter on CPU tensors (TRITON_INTERPRET=1, set by
conftest.py), and torch compiles with backend="aot_eager" (Dynamo and AOTAutograd, whose graphs
hold the kernel launches; Inductor launches user kernels through a GPU driver only). tests/test_gpu.py
runs Inductor on these ops on a GPU.
"""

import json
import logging
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton")
from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table, triton_kernel_wrapper_functional  # noqa: E402

import polycom  # noqa: E402, F401 - registers the ops
from polycom.models.mlp import build_mlp  # noqa: E402
from polycom.ops import available_implementations, dispatch, fused_op  # noqa: E402
from test_ops_library import BOUNDED_OPS, INPUT_BOUND, _args  # noqa: E402 - the generic ops' opcheck arguments

if "triton" not in available_implementations(torch.randn(1)):
    pytest.skip("Triton cannot run on CPU tensors here (TRITON_INTERPRET != 1)", allow_module_level=True)

# Without a GPU target torch cannot analyse which arguments a kernel writes and logs a traceback per
# traced launch before assuming every argument is written (correct, the launchers pass no tensor twice).
logging.getLogger("torch._higher_order_ops.triton_kernel_wrap").setLevel(logging.ERROR)

OPS = [name for name, op in sorted(dispatch._OPS.items()) if op.kernels.triton]
HOP = triton_kernel_wrapper_functional  # a kernel launch in a functional (AOTAutograd) graph


def test_every_op_with_triton_kernels_has_a_pair():
    assert OPS == ["gated_poly_norm", "grouped_gated_poly_norm", "grouped_poly_norm", "poly_norm", "poly_relu"]
    for name in OPS:
        forward_op, backward_op = dispatch.registered_op(name).triton_library_ops()
        assert getattr(torch.ops.polycom, f"{name}_triton").default is forward_op._opoverload
        assert getattr(torch.ops.polycom, f"{name}_triton_backward").default is backward_op._opoverload


# Each case costs 0.5-1 s of interpreter and tracing time on a 2-core CPU (the first ~3 s), so not all
# 45 run. PolyNorm, gated PolyNorm and PolyReLU run every width once and every dtype once (a 1-element
# row, a row shorter than its block, one of two blocks' length); the grouped ops, which are the
# PolyNorm launchers with per-row expert offsets, run one case each for their own contract (an index
# tensor in, per-expert coefficient gradients out). All the ops share one generated op body.
WIDTH_DTYPE = [(1, torch.float32), (7, torch.bfloat16), (513, torch.float16)]


def _opcheck_cases():
    for name in OPS:
        for width, dtype in WIDTH_DTYPE[1:2] if name.startswith("grouped") else WIDTH_DTYPE:
            yield pytest.param(name, width, dtype, {}, id=f"{name}-{width}-{str(dtype)[6:]}")
    for name in BOUNDED_OPS:  # the input bound (a constexpr variant of the kernels): one case each
        yield pytest.param(name, 7, torch.bfloat16, {"input_bound": INPUT_BOUND}, id=f"{name}-7-bfloat16-bounded")


@pytest.mark.parametrize("name,width,dtype,bound", list(_opcheck_cases()))
def test_opcheck_forward_with_autograd(name, width, dtype, bound):
    """Schema, fake tensors against the kernels, the autograd registration, and AOTAutograd with dynamic
    shapes, forward and backward (through the backward triton_op): all four of opcheck's tests."""
    forward_op, _ = dispatch.registered_op(name).triton_library_ops()
    results = torch.library.opcheck(forward_op, _args(name, width, dtype, **bound))
    assert set(results.values()) == {"SUCCESS"}, results


@pytest.mark.parametrize("name", OPS)
def test_opcheck_backward(name):
    """The backward op on its own: its outputs alias neither its inputs nor one another (the coefficient
    gradients are slices of one buffer in the kernels), and its fake matches the kernels."""
    op = dispatch.registered_op(name)
    forward_op, backward_op = op.triton_library_ops()
    args = [a.detach() if isinstance(a, torch.Tensor) else a
            for a in _args(name, 7, torch.float32, **({"input_bound": INPUT_BOUND} if name in BOUNDED_OPS else {}))]
    out = forward_op(*args)
    stats = [out[1]] if op.kernels.saves_stats else []
    y = out[0] if op.kernels.saves_stats else out
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    constants = [a for p, a in zip(op.kernels.arguments, args) if p in op.kernels.backward_constants]
    results = torch.library.opcheck(backward_op, (torch.randn_like(y), *tensors, *stats, *constants))
    assert set(results.values()) == {"SUCCESS"}, results


def _graphs_and_grads(name):
    """AOTAutograd's forward and backward graphs of ``name``'s triton_op, and the op's output and gradients."""
    from functorch.compile import aot_function, make_boxed_func

    graphs = []

    def keep(gm, _):
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    op = dispatch.registered_op(name)
    forward_op, _ = op.triton_library_ops()
    args = _args(name, 33, torch.float32)

    def first_output(*a):
        out = forward_op(*a)
        return out[0] if op.kernels.saves_stats else out

    y = aot_function(first_output, fw_compiler=keep, bw_compiler=keep)(*args)
    y.square().sum().backward()
    grads = [a.grad for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    return graphs, y, grads, args


@pytest.mark.parametrize("name", ["poly_norm", "grouped_gated_poly_norm"])
def test_aot_graphs_hold_the_kernels_and_match_the_reference(name):
    """The kernels, not an opaque op, in AOTAutograd's graphs: the forward kernel in the forward graph, the
    backward kernel in the backward graph. Output and gradients equal the reference formula's."""
    graphs, y, grads, args = _graphs_and_grads(name)
    assert len(graphs) == 2
    forward_kernels = [n.kwargs["kernel_idx"] for n in graphs[0].graph.nodes if n.target is HOP]
    backward_kernels = [n.kwargs["kernel_idx"] for n in graphs[1].graph.nodes if n.target is HOP]
    assert len(forward_kernels) == 1 and len(backward_kernels) == 1
    names = [kernel_side_table.get_kernel(i).fn.__name__ for i in forward_kernels + backward_kernels]
    assert names == ["_fwd_kernel", "_bwd_kernel"]
    assert not any("polycom" in str(n.target) for g in graphs for n in g.graph.nodes)  # nothing opaque is left

    leaves = [a.detach().clone().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a for a in args]
    want = dispatch.registered_op(name).reference(*leaves)
    want.square().sum().backward()
    want_grads = [a.grad for a in leaves if isinstance(a, torch.Tensor) and a.requires_grad]
    # fp32 kernels against the fp32 reference under autograd: the same sums in another order
    # (rows of 33, a few ulp); coefficient gradients sum over the rows as well.
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    for got, expected in zip(grads, want_grads):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.fixture
def triton_ops_under_compile(monkeypatch):
    """POLYCOM_TRITON_OP=1 as read at import: compile traces of triton calls use the triton_op pairs."""
    for name in OPS:
        dispatch.registered_op(name).triton_library_ops()  # registered outside the trace, as at resolve time
    monkeypatch.setattr(fused_op, "TRITON_OPS_UNDER_COMPILE", True)
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _model(implementation):
    torch.manual_seed(0)
    return torch.nn.Sequential(*(build_mlp(16, 24, act, {"implementation": implementation})
                                 for act in ("polynorm", "polyrelu", "gated_polynorm")))


def test_model_compiles_fullgraph_with_the_kernels_visible(triton_ops_under_compile):
    """An MLP stack with PolyNorm, PolyReLU and gated PolyNorm on the triton path: no graph break, forward
    and backward through the triton_ops (every kernel launch in AOTAutograd's graphs), equal to the
    reference formula's model in eager mode."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    model, reference = _model("triton"), _model("reference")
    reference.load_state_dict(model.state_dict())
    x = torch.randn(2, 5, 16)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons

    graphs = []

    def keep(gm, _):
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    torch._dynamo.reset()
    # aot_eager with the graphs kept: Dynamo and AOTAutograd trace, the aten graph runs as is.
    out = torch.compile(model, fullgraph=True, backend=aot_autograd(fw_compiler=keep, bw_compiler=keep))(x)
    out.square().mean().backward()
    launches = [n for gm in graphs for n in gm.graph.nodes if n.target is HOP]
    assert len(graphs) == 2 and len(launches) == 6  # three activations, a forward and a backward kernel each

    want = reference(x)
    want.square().mean().backward()
    # fp32 kernels against fp32 autograd of the reference: the same arithmetic up to summation order
    # (rows of 24, a few ulp), through two linear layers per block; the coefficient gradients sum
    # over the 10 rows as well.
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    for (key, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=key)


_KERNELS_FOR_THE_CACHE_KEY = """
import json, polycom
from polycom.ops import dispatch
from torch._library.triton import get_triton_kernels_for_op
found = {}
for name in %r:
    dispatch.registered_op(name).triton_library_ops()
    for op in (name + "_triton", name + "_triton_backward"):
        found[op] = [k.fn.__module__ + "." + k.fn.__name__ for k in get_triton_kernels_for_op("polycom::" + op)]
print(json.dumps(found))
"""


def test_aot_autograd_cache_key_finds_the_kernels():
    """torch reads each triton_op's source for the kernels it launches (AOTAutograd's cache key covers their
    source, so a changed kernel is recompiled). Run without the interpreter, where the kernels are the
    JITFunctions torch looks for (under it they are InterpretedFunctions, which it skips)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", _KERNELS_FOR_THE_CACHE_KEY % OPS], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout.splitlines()[-1])
    for name in OPS:
        module = "polycom.ops.triton_poly_relu" if name == "poly_relu" else "polycom.ops.triton_poly_norm"
        assert found[f"{name}_triton"] == [f"{module}._fwd_kernel"], name
        assert found[f"{name}_triton_backward"] == [f"{module}._bwd_kernel"], name
