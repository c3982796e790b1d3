"""The NaN/inf guard: find where a diverging step first went non-finite.

Normal steps cost nothing extra: the trainer already reads the loss and the
global gradient norm. Only when one of them is non-finite does the guard
diagnose, before the optimizer step (so the weights and the last good
checkpoint stay clean): it re-runs the forward pass of the failing micro-batch
with a forward hook on every module and names the first module, in execution
order, whose output is non-finite (e.g. ``layers.3.mlp.act``), and lists the
parameters whose gradients are non-finite, in model order.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

__all__ = ["first_nonfinite_output", "nonfinite_gradients", "diagnose", "format_report"]


def _strip(name: str) -> str:
    """Names as in the user's model: drop DDP's ``module.`` and compile's ``_orig_mod.``."""
    for prefix in ("module.", "_orig_mod."):
        name = name.replace(prefix, "")
    return name


def _first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return next((o for o in out if isinstance(o, torch.Tensor)), None)
    return getattr(out, "logits", None)


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t  # FSDP2 DTensor


def first_nonfinite_output(model: nn.Module, forward: Callable[[], object]) -> str | None:
    """Run ``forward()`` with hooks; the first module (execution order) with a non-finite output.

    Hooks fire when a module returns, so a child (``layers.1.mlp.act``) is seen
    before its parent (``layers.1.mlp``): the name is the innermost culprit.
    """
    found: list[str] = []

    def hook(name):
        def check(_module, _inputs, out):
            t = _first_tensor(out)
            if not found and t is not None and t.is_floating_point() and not torch.isfinite(_local(t)).all():
                found.append(name)
        return check

    handles = [m.register_forward_hook(hook(_strip(n))) for n, m in model.named_modules()
               if n and not isinstance(m, (nn.ModuleList, nn.ModuleDict))]
    try:
        with torch.no_grad():
            forward()
    finally:
        for h in handles:
            h.remove()
    return found[0] if found else None


def nonfinite_gradients(model: nn.Module) -> list[str]:
    return [_strip(n) for n, p in model.named_parameters()
            if p.grad is not None and not torch.isfinite(_local(p.grad)).all()]


def diagnose(model: nn.Module, step: int, loss: float, grad_norm: float, forward: Callable[[], object]) -> dict:
    """A JSON-able report of a non-finite step (call before ``optimizer.step``)."""
    grads = nonfinite_gradients(model)
    return {
        "step": step,
        "loss": loss,
        "grad_norm": grad_norm,
        "first_nonfinite_activation": first_nonfinite_output(model, forward),
        "first_nonfinite_gradient": grads[0] if grads else None,
        "nonfinite_gradients": grads[:20],
    }


def format_report(report: dict) -> str:
    lines = [f"non-finite values at step {report['step']}: loss {report['loss']}, grad norm {report['grad_norm']}"]
    act, grad = report["first_nonfinite_activation"], report["first_nonfinite_gradient"]
    lines.append(f"  first layer with non-finite activations: {act or 'none (forward is finite)'}")
    lines.append(f"  first parameter with a non-finite gradient: {grad or 'none'}")
    if report.get("checkpoint"):
        lines.append(f"  last good checkpoint (kept): {report['checkpoint']}")
    return "\n".join(lines)
