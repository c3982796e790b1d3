"""``polycom compare --dry-run``: every planned run with its size, budget and cost, nothing trained.

Models are sized on the meta device (``polycom.train.summary.dry_run``), so the paper's
1B and 1B/7B presets plan in seconds on any machine. The cost is the PaLM-style training
FLOPs; the GPU-hours assume 40% model-FLOPs utilisation of an H100's 989 dense bf16
TFLOP/s (an assumption, printed as such, not a measurement).
"""

from __future__ import annotations

from pathlib import Path

from ...train.config import Config
from ...train.summary import dry_run, memory_plan_lines
from .plan import lr_tuned_sizes, plan_runs, scaling_steps
from .spec import SweepSpec

__all__ = ["format_dry_run"]

ASSUMED_FLOPS_PER_S = 0.4 * 989e12


def format_dry_run(spec: SweepSpec, out: str | Path) -> str:
    spec.validate()
    steps = scaling_steps(spec) if spec.scaling else None
    plans = plan_runs(spec, Path(out), size_steps=steps)
    # With the LR sweep on the full schedule, the tuning seed's main run is its LR-phase run at the
    # chosen LR: it is not a run of its own. The other main runs' LRs are known once the LR phase ran.
    reused = spec.lr_sweep and spec.lr_sweep_fraction == 1
    tuned = set(lr_tuned_sizes(spec))
    lines, total, memory = [], 0.0, None
    job = (f"{spec.nodes} node(s) x {spec.tasks_per_node} task(s) = {spec.world_size} process(es)"
           + ("" if spec.world_size == 1 else f" under --launcher {spec.launcher}"
              if spec.launcher != "local" else " (needs --launcher submitit or submitit-local)"))
    for phase in ("lr", "main"):
        for plan in plans[phase]:
            if phase == "main" and reused and plan.seed == spec.lr_tune_seed and plan.size in tuned:
                continue
            info = dry_run(Config.from_dict(plan.config), spec.world_size)
            flops = info["flops_per_token"] * info["total_tokens"]
            total += flops
            if memory is None or info["memory"].total_bytes > memory[1].total_bytes:
                memory = (plan.run_id, info["memory"], Config.from_dict(plan.config), info["model"])
            lr = "tuned" if phase == "main" and spec.lr_sweep else f"{plan.lr:g}"
            lines.append(f"{phase:<4} {plan.run_id}: {info['num_params']:,} params, {info['total_tokens']:,} tokens, "
                         f"{flops:.3e} FLOPs, lr {lr}, job {job}")
    first = Config.from_dict(plans["main"][0].config)
    return "\n".join([
        "# shared config (first main run; per run: model.activation, train.seed, optim.lr, size overrides)",
        first.to_yaml().rstrip(), "# runs", *lines, "# cost",
        f"{len(lines)} runs, {total:.3e} training FLOPs in all = {total / ASSUMED_FLOPS_PER_S / 3600:.2f} GPU-hours "
        "at an assumed 40% MFU of an H100 (989 TFLOP/s bf16)",
        f"memory: the largest run ({memory[0]}) needs at least {memory[1].describe()} per process",
        *memory_plan_lines(memory[2], memory[3], spec.world_size),
        *_lr_phase_note(spec)])


def _lr_phase_note(spec: SweepSpec) -> list[str]:
    if not spec.lr_sweep:
        return []
    return [f"# the LR phase: its initial grid is listed; a grid whose best LR is on its edge grows by one step, up to "
            f"{spec.lr_grid_extensions} per side (one more run each); main runs get their activation's tuned LR"
            + (f" (their folder names show the shared LR until then); seed {spec.lr_tune_seed}'s main runs at a tuned "
               "size are its LR-phase runs at the chosen LRs, not listed again" if spec.lr_sweep_fraction == 1 else "")]
