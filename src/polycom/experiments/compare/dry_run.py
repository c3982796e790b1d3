"""``polycom compare --dry-run``: every planned run with its size, budget and cost, nothing trained.

Models are sized on the meta device (``polycom.train.summary.dry_run``), so the paper's
1B and 1B/7B presets plan in seconds on any machine. The cost is the PaLM-style training
FLOPs; the GPU-hours assume 40% model-FLOPs utilisation of an H100's 989 dense bf16
TFLOP/s (an assumption, printed as such, not a measurement).
"""

from __future__ import annotations

from pathlib import Path

from ...train.config import Config
from ...train.summary import dry_run
from .plan import plan_runs, scaling_steps
from .spec import SweepSpec

__all__ = ["format_dry_run"]

ASSUMED_FLOPS_PER_S = 0.4 * 989e12


def format_dry_run(spec: SweepSpec, out: str | Path) -> str:
    spec.validate()
    steps = scaling_steps(spec) if spec.scaling else None
    plans = plan_runs(spec, Path(out), size_steps=steps)
    lines, total, seen = [], 0.0, set()
    for phase in ("lr", "main"):
        for plan in plans[phase]:
            if plan.run_id in seen:  # a main run that is also an LR-phase run: one run, counted once
                continue
            seen.add(plan.run_id)
            cfg = Config.from_dict(plan.config)
            info = dry_run(cfg)
            flops = info["flops_per_token"] * info["total_tokens"]
            total += flops
            lines.append(f"{phase:<4} {plan.run_id}: {info['num_params']:,} params, {info['total_tokens']:,} tokens, "
                         f"{flops:.3e} FLOPs, lr {plan.lr:g}")
    first = Config.from_dict(plans["main"][0].config)
    return "\n".join([
        "# shared config (first main run; per run: model.activation, train.seed, optim.lr, size overrides)",
        first.to_yaml().rstrip(), "# runs", *lines, "# cost",
        f"{len(lines)} runs, {total:.3e} training FLOPs in all = {total / ASSUMED_FLOPS_PER_S / 3600:.2f} GPU-hours "
        "at an assumed 40% MFU of an H100 (989 TFLOP/s bf16)",
        *_lr_phase_note(spec)])


def _lr_phase_note(spec: SweepSpec) -> list[str]:
    if not spec.lr_sweep:
        return []
    return [f"# the LR phase: its initial grid is listed; a grid whose best LR is on its edge grows by one step, up to "
            f"{spec.lr_grid_extensions} per side (one more run each); main runs are listed at the shared LR, their "
            "tuned LRs are known once the LR phase has run"
            + ("; a main run that is also an LR-phase run is listed and counted once" if spec.lr_sweep_fraction == 1
               else "")]
