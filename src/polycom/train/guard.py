"""The NaN/inf guard: find where a diverging step first overflowed.

Normal steps cost nothing extra: the trainer already reads the loss and the
global gradient norm. Only when one of them is non-finite does the guard
diagnose, before clipping and before the optimizer step (clipping by an
infinite norm multiplies every gradient by 0 or NaN and hides the culprit; the
skipped step keeps the weights and the last good checkpoint clean):

1. from the step's accumulated gradients: the norm of each optimizer parameter
   group (in float64, so a norm beyond float32's range is still a number) and
   the parameters whose gradient overflowed, in model order;
2. it re-runs forward and backward of the step's last micro-batch with a hook on
   every module and names the first module, in forward order, whose output is
   non-finite (e.g. ``layers.3.mlp.act``), and the first module, in backward
   order, whose output gradient or weight gradient overflowed (e.g. ``layers.2.attn.q_proj``).

A tensor *overflowed* when it holds an inf or NaN or its float32 norm is inf:
exactly what turns the global gradient norm non-finite (a huge but finite
gradient, 1e20 per entry, already does).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

__all__ = ["overflowed", "diagnose", "format_report"]


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
    return t.to_local() if hasattr(t, "to_local") else t  # FSDP2 DTensor: this rank's shard


def overflowed(t: torch.Tensor) -> bool:
    t = _local(t).detach().float()
    return not (torch.isfinite(t).all() and torch.isfinite(torch.linalg.vector_norm(t)))


def _norm64(t: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(_local(t).detach().double()))


def gradient_summary(model: nn.Module, param_groups: list[dict]) -> tuple[dict[str, float], list[str]]:
    """({group name: float64 gradient norm}, names of the parameters whose gradient overflowed)."""
    norms = {}
    for i, group in enumerate(param_groups):
        squares = sum(_norm64(p.grad) ** 2 for p in group["params"] if p.grad is not None)
        norms[group.get("name", f"group{i}")] = math.sqrt(squares)
    bad = [_strip(n) for n, p in model.named_parameters() if p.grad is not None and overflowed(p.grad)]
    return norms, bad


def trace_overflow(model: nn.Module, forward: Callable[[], object]) -> tuple[str | None, str | None]:
    """Run ``forward()`` (returning an output with ``.loss``) and its backward with hooks;
    (first module with a non-finite output, forward order; first module whose output or
    parameter gradient overflowed, backward order).

    Forward hooks fire when a module returns, so a child (``layers.1.mlp.act``) is seen
    before its parent (``layers.1.mlp``): the name is the innermost culprit. The gradient
    hooks sit on the same outputs and on every parameter, and fire as backward reaches them.
    """
    act, grad = [], []

    def check_gradient(name):
        def check(g):
            if not grad and overflowed(g):
                grad.append(name)
        return check

    def hook(name):
        def check(_module, _inputs, out):
            t = _first_tensor(out)
            if t is None or not t.is_floating_point():
                return
            if not act and not torch.isfinite(_local(t)).all():
                act.append(name)
            if t.requires_grad:
                t.register_hook(check_gradient(name))
        return check

    handles = [m.register_forward_hook(hook(_strip(n))) for n, m in model.named_modules()
               if n and not isinstance(m, (nn.ModuleList, nn.ModuleDict))]
    # A weight's gradient (a sum over all tokens) can overflow before its output gradient does.
    handles += [p.register_hook(check_gradient(_strip(n).rsplit(".", 1)[0])) for n, p in model.named_parameters()
                if p.requires_grad]
    try:
        forward().loss.backward()
    finally:
        for h in handles:
            h.remove()
    return (act or [None])[0], (grad or [None])[0]


def diagnose(model: nn.Module, param_groups: list[dict], step: int, loss: float, grad_norm: float,
             forward: Callable[[], object]) -> dict:
    """A JSON-able report of a non-finite step: call after backward, before clipping and
    ``optimizer.step``. The re-run's gradients replace the step's (the step is skipped)."""
    group_norms, bad = gradient_summary(model, param_groups)
    model.zero_grad(set_to_none=True)
    first_act, first_grad = trace_overflow(model, forward)
    if first_grad is None and bad:  # the re-run micro-batch did not overflow, an earlier one did:
        first_grad = bad[-1].rsplit(".", 1)[0]  # the module of the overflowed parameter nearest the output
    return {
        "step": step,
        "loss": loss,
        "grad_norm": grad_norm,
        "grad_norm_by_group": group_norms,
        "first_nonfinite_activation": first_act,
        "first_nonfinite_gradient": first_grad,
        "nonfinite_gradients": bad[:20],
        "n_nonfinite_gradients": len(bad),
    }


def format_report(report: dict) -> str:
    groups = ", ".join(f"{k} {v:.3g}" for k, v in report["grad_norm_by_group"].items())
    bad = report["nonfinite_gradients"]
    lines = [f"non-finite values at step {report['step']}: loss {report['loss']}, grad norm {report['grad_norm']}",
             f"  gradient norm by group (float64, before clipping): {groups}",
             f"  first layer with non-finite activations (forward): "
             f"{report['first_nonfinite_activation'] or 'none (forward is finite)'}",
             f"  first layer whose gradient overflowed (backward): {report['first_nonfinite_gradient'] or 'none'}",
             f"  parameters with overflowed gradients: {report['n_nonfinite_gradients']}"
             + (f" (first: {bad[0]})" if bad else "")]
    if report.get("checkpoint"):
        lines.append(f"  last good checkpoint (kept): {report['checkpoint']}")
    return "\n".join(lines)
