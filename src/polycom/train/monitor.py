"""The escaping-activation monitor: per-MLP statistics of the activation's input and output.

``train.monitor_every = N`` (0 = off). On every N-th step, forward hooks on each MLP's
activation module (``polycom.analysis.structure.mlp_activations``: ``mlp.act``, HF's
``act_fn``) record, over all micro-batches of that step, for the pre-activation
(the activation's first input: ``up(x)``, or the gate of a gated MLP) and the
post-activation (its output):

- ``rms``: sqrt(mean x^2) over the finite entries,
- ``max``: max |x| over the finite entries,
- ``nonfinite``: the fraction of inf/NaN entries.

The hooks exist only during monitored steps, so other steps run exactly the code
they ran before (cost: one modulo per step; benchmarks/bench_monitor.py). The values
go to metrics.jsonl as ``{"kind": "monitor", "step": s, "<layer>/post_rms": ...}``
(TensorBoard under ``monitor/``), and at the end of the run to ``monitor.png``.

Warning rule (each (layer, quantity, rule) warned once per run; a ``monitor_warning``
record is logged too), with factor F = ``growth_factor`` (default 10):

- non-finite: any inf/NaN in a layer's pre- or post-activation;
- growth over steps: a layer's RMS > F x its RMS at the first monitored step;
- growth over depth: a layer's RMS > F x the first MLP layer's RMS at the same step.

A fixed low-degree polynomial (x^2) without normalisation squares the scale at every
layer and escapes over depth; PolyNorm normalises each power (N(x^i) has RMS 1), so
its output scale is set by its coefficients alone (Zhuo et al. 2025, Section 3).
Only the main rank monitors, on its own micro-batches.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from ..models.structure import mlp_activations
from .config import ConfigError

__all__ = ["ActivationMonitor", "tensor_stats", "plot_monitor"]

QUANTITIES = ("pre", "post")


def tensor_stats(x: torch.Tensor) -> torch.Tensor:
    """[max |x|, sum of (x / max |x|)^2, finite entries, non-finite entries] over the finite entries
    of ``x``, in float32 and on x's device (no host sync). Squares are taken after dividing by the
    maximum, so a float32 sum of squares cannot overflow however large the activations get."""
    x = x.detach().float()
    finite = torch.isfinite(x)
    xf = torch.where(finite, x, torch.zeros((), device=x.device)).abs()
    peak = xf.amax() if x.numel() else xf.sum()
    n_finite = finite.sum().float()
    return torch.stack([peak, (xf / peak.clamp_min(torch.finfo(torch.float32).tiny)).square().sum(), n_finite,
                        x.numel() - n_finite])


def _combine(calls: list[list[float]]) -> tuple[float, float, float]:
    """(rms, max, non-finite fraction) of one tensor seen over several calls, in float64 on the host."""
    peak = max(c[0] for c in calls)
    sum_sq = sum(c[1] * c[0] ** 2 for c in calls)  # inf only beyond float64's range
    n, bad = sum(c[2] for c in calls), sum(c[3] for c in calls)
    return math.sqrt(sum_sq / n) if n else math.nan, peak, bad / (n + bad) if n + bad else 0.0


def _first(t):
    return t[0] if isinstance(t, (tuple, list)) else t


class ActivationMonitor:
    """``begin(step)`` / ``collect()`` around a training step; see the module docstring."""

    def __init__(self, model: nn.Module, every: int, growth_factor: float = 10.0, enabled: bool = True):
        if not isinstance(every, int) or every < 0:
            raise ConfigError(f"train.monitor_every: must be an integer >= 0 (0 = off), got {every!r}")
        self.every, self.growth_factor = every, growth_factor
        self.active = enabled and every > 0
        self.layers = [(a.name, a.module) for a in mlp_activations(model)] if self.active else []
        self.handles: list = []
        self.step = 0
        self.sums: dict[str, list[torch.Tensor]] = {}  # (layer/quantity) -> per-call stats
        self.reference: dict[str, float] = {}  # (layer/quantity) -> RMS at the first monitored step
        self.warned: set[tuple[str, str]] = set()

    def begin(self, step: int) -> None:
        """Install the hooks if ``step`` (1-based, the step being run) is a monitored one."""
        if not self.active or step % self.every:
            return
        self.step, self.sums = step, {}
        for name, module in self.layers:
            self.handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def record(_module, inputs, output):
            self.sums.setdefault(f"{name}/pre", []).append(tensor_stats(_first(inputs)))
            self.sums.setdefault(f"{name}/post", []).append(tensor_stats(_first(output)))
        return record

    def collect(self) -> tuple[dict | None, list[str]]:
        """Remove the hooks; (the monitor record, new warnings), or (None, []) after an unmonitored step."""
        if not self.handles:
            return None, []
        for h in self.handles:
            h.remove()
        self.handles = []
        if not self.sums:
            return None, []
        keys = list(self.sums)
        stats = torch.stack([torch.stack(self.sums[k]) for k in keys]).tolist()  # (keys, calls, 4): one sync
        record: dict = {"kind": "monitor", "step": self.step}
        for k, calls in zip(keys, stats):
            rms, peak, frac = _combine(calls)
            record.update({f"{k}_rms": rms, f"{k}_max": peak, f"{k}_nonfinite": frac})
        return record, self._warnings(record)

    def _warnings(self, record: dict) -> list[str]:
        out, F = [], self.growth_factor
        first_layer = self.layers[0][0]
        for name, _ in self.layers:
            for q in QUANTITIES:
                key = f"{name}/{q}"
                rms, frac = record[f"{key}_rms"], record[f"{key}_nonfinite"]
                self.reference.setdefault(key, rms)
                ref, depth_ref = self.reference[key], record[f"{first_layer}/{q}_rms"]
                checks = [("non-finite", frac > 0, f"{frac:.2%} of the {q}-activation values are inf/NaN"),
                          ("steps", ref > 0 and rms > F * ref,
                           f"{q}-activation RMS {rms:.3g} is {rms / ref if ref else 0:.3g}x its value at the first "
                           f"monitored step ({ref:.3g})"),
                          ("depth", name != first_layer and depth_ref > 0 and rms > F * depth_ref,
                           f"{q}-activation RMS {rms:.3g} is {rms / depth_ref if depth_ref else 0:.3g}x the first "
                           f"MLP's ({first_layer}: {depth_ref:.3g})")]
                for rule, fired, text in checks:
                    if fired and (key, rule) not in self.warned:
                        self.warned.add((key, rule))
                        why = "" if rule == "non-finite" else f" (rule: growth over {rule} > {F:g}x)"
                        out.append(f"escaping activations at step {self.step} in {name}: {text}{why}")
        return out

    def end(self, logger, write=print) -> None:
        """``collect`` and log: the record and each warning to metrics.jsonl, warnings also to ``write``."""
        record, warnings = self.collect()
        if record is None:
            return
        logger.log(record)
        for w in warnings:
            write(f"warning: {w}")
            logger.log({"kind": "monitor_warning", "step": record["step"], "message": w})

    def finish(self, out_dir: Path) -> Path | None:
        """Draw monitor.png from every monitor record of the run's metrics.jsonl (resumes included)."""
        if not self.active:
            return None
        return plot_monitor(Path(out_dir) / "metrics.jsonl", Path(out_dir) / "monitor.png")


def plot_monitor(metrics: Path, path: Path) -> Path | None:
    """RMS of the pre- and post-activation per layer vs step, log scale; None without monitor records."""
    records = []
    for line in metrics.read_text().splitlines() if metrics.exists() else []:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a torn last line after a crash
            continue
        if rec.get("kind") == "monitor":
            records.append(rec)
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    steps = [r["step"] for r in records]
    layers = [k[: -len("/post_rms")] for k in records[0] if k.endswith("/post_rms")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, q in zip(axes, QUANTITIES):
        for i, layer in enumerate(layers):
            y = [float(r.get(f"{layer}/{q}_rms", "nan")) for r in records]
            ax.plot(steps, y, "o-", ms=3, color=plt.cm.viridis(i / max(1, len(layers) - 1)), label=layer)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{q}-activation RMS per MLP layer", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("RMS (finite entries)")
    axes[1].legend(fontsize=7, ncol=1 + len(layers) // 12)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
