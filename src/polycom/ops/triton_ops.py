"""The Triton kernels registered as ``torch.library`` custom ops (``polycom::*``).

Custom ops with fake (meta) implementations let ``torch.compile`` trace a model
that uses them without graph breaks, and let FSDP/DTensor treat them as ordinary
ops. Autograd is attached one level up, in ``autograd.py``, so the same
``autograd.Function`` serves every backend. Outside tracing, the registered kernel
calls the launchers directly (same results, less host overhead).

The op files declare this module as their Triton backend (``OpKernels(triton=...)``); it is
imported on first use only, so machines without Triton never import it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import triton_poly_norm as tpn
from . import triton_poly_relu as tpr


def _stats_like(x: Tensor, weight: Tensor) -> Tensor:
    return x.new_empty((x.shape[0], weight.shape[0]), dtype=torch.float32)


def _own(*coef_grads: Tensor) -> tuple[Tensor, ...]:
    """Custom ops may not return views of one another; the coefficient gradients
    are slices of one small reduction buffer, so give each its own (r+1 floats)."""
    return tuple(t.clone() for t in coef_grads)


def _coef_grads_like(weight: Tensor) -> tuple[Tensor, Tensor]:
    return weight.new_empty(weight.shape, dtype=torch.float32), weight.new_empty((1,), dtype=torch.float32)


@torch.library.custom_op("polycom::poly_norm_forward", mutates_args=())
def poly_norm_forward_op(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    return tpn.poly_norm_forward_triton(x, weight, bias, eps)


@poly_norm_forward_op.register_fake
def _(x, weight, bias, eps):
    return torch.empty_like(x), _stats_like(x, weight)


@torch.library.custom_op("polycom::poly_norm_backward", mutates_args=())
def poly_norm_backward_op(grad_y: Tensor, x: Tensor, weight: Tensor, inv_rms: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    grad_x, grad_w, grad_b = tpn.poly_norm_backward_triton(grad_y, x, weight, inv_rms)
    return (grad_x, *_own(grad_w, grad_b))


@poly_norm_backward_op.register_fake
def _(grad_y, x, weight, inv_rms):
    return (torch.empty_like(x), *_coef_grads_like(weight))


@torch.library.custom_op("polycom::gated_poly_norm_forward", mutates_args=())
def gated_poly_norm_forward_op(gate: Tensor, up: Tensor, weight: Tensor, bias: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    return tpn.gated_poly_norm_forward_triton(gate, up, weight, bias, eps)


@gated_poly_norm_forward_op.register_fake
def _(gate, up, weight, bias, eps):
    return torch.empty_like(gate), _stats_like(gate, weight)


@torch.library.custom_op("polycom::gated_poly_norm_backward", mutates_args=())
def gated_poly_norm_backward_op(
    grad_y: Tensor, gate: Tensor, up: Tensor, weight: Tensor, bias: Tensor, inv_rms: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    grad_gate, grad_up, grad_w, grad_b = tpn.gated_poly_norm_backward_triton(grad_y, gate, up, weight, bias, inv_rms)
    return (grad_gate, grad_up, *_own(grad_w, grad_b))


@gated_poly_norm_backward_op.register_fake
def _(grad_y, gate, up, weight, bias, inv_rms):
    return (torch.empty_like(gate), torch.empty_like(up), *_coef_grads_like(weight))


@torch.library.custom_op("polycom::poly_relu_forward", mutates_args=())
def poly_relu_forward_op(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    return tpr.poly_relu_forward_triton(x, weight, bias)


@poly_relu_forward_op.register_fake
def _(x, weight, bias):
    return torch.empty_like(x)


@torch.library.custom_op("polycom::poly_relu_backward", mutates_args=())
def poly_relu_backward_op(grad_y: Tensor, x: Tensor, weight: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    grad_x, grad_w, grad_b = tpr.poly_relu_backward_triton(grad_y, x, weight)
    return (grad_x, *_own(grad_w, grad_b))


@poly_relu_backward_op.register_fake
def _(grad_y, x, weight):
    return (torch.empty_like(x), *_coef_grads_like(weight))


def _direct_unless_tracing(op, launcher):
    """Eager calls launch the kernels directly: dispatching a custom op costs ~10-15 us of host
    time per call. While torch.compile traces (Dynamo, AOTAutograd) the registered op is used,
    so the graph holds one opaque node with a fake implementation."""

    def call(*args):
        if torch.compiler.is_compiling():
            return op(*args)
        return launcher(*args)

    return call


# The kernels of ``fused_op``'s contract, ``<op>_forward`` / ``<op>_backward`` (declared by
# ``ops/poly_norm.py``, ``ops/gated_poly_norm.py`` and ``ops/poly_relu.py``). The backward
# contract passes every coefficient tensor; the PolyNorm and PolyReLU kernels do not need the bias.
poly_norm_forward = _direct_unless_tracing(poly_norm_forward_op, tpn.poly_norm_forward_triton)
_poly_norm_backward = _direct_unless_tracing(poly_norm_backward_op, tpn.poly_norm_backward_triton)
gated_poly_norm_forward = _direct_unless_tracing(gated_poly_norm_forward_op, tpn.gated_poly_norm_forward_triton)
gated_poly_norm_backward = _direct_unless_tracing(gated_poly_norm_backward_op, tpn.gated_poly_norm_backward_triton)
poly_relu_forward = _direct_unless_tracing(poly_relu_forward_op, tpr.poly_relu_forward_triton)
_poly_relu_backward = _direct_unless_tracing(poly_relu_backward_op, tpr.poly_relu_backward_triton)


def poly_norm_backward(grad_y: Tensor, x: Tensor, weight: Tensor, bias: Tensor, inv_rms: Tensor):
    return _poly_norm_backward(grad_y, x, weight, inv_rms)


def poly_relu_backward(grad_y: Tensor, x: Tensor, weight: Tensor, bias: Tensor):
    return _poly_relu_backward(grad_y, x, weight)
