"""What one finished (or failed) run contributed: ``RunRecord``, read back from its folder.

Reading results from the run folders, never from memory, means a resumed sweep, a
process pool and a Slurm array all produce the same report.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .execute import read_summary
from .plan import RunPlan

__all__ = ["RunRecord", "load_record", "read_downstream", "csv_header", "CSV_COLUMNS", "DOWNSTREAM_FILE"]

DOWNSTREAM_FILE = "eval.json"  # written into each run folder by --eval-tasks (as `polycom eval` does)

CSV_COLUMNS = ("run_id", "phase", "activation", "size", "seed", "lr", "status", "final_step", "steps",
               "tokens", "val_loss", "val_bpb", "train_loss", "num_params", "flops_per_token", "flops",
               "elapsed_s", "sequential_tokens_per_s", "run_hash", "error")


@dataclass
class RunRecord:
    run_id: str
    phase: str
    activation: str
    size: str
    seed: int
    lr: float
    status: str  # completed | diverged | stopped | failed | missing
    steps: int
    run_hash: str
    final_step: int = 0
    tokens: int = 0
    val_loss: float = math.nan
    val_bpb: float = math.nan
    train_loss: float = math.nan
    num_params: int = 0
    flops_per_token: float = math.nan
    flops: float = math.nan
    elapsed_s: float = math.nan
    sequential_tokens_per_s: float = math.nan  # measured alone, one run after another: not comparable
    error: str = ""
    curve_tokens: list[int] = field(default_factory=list)  # tokens trained at each validation
    curve_val_loss: list[float] = field(default_factory=list)
    val_sets: dict[str, dict] = field(default_factory=dict)  # eval.sets at the last step: name -> {loss, bpb, tokens}
    downstream: dict[str, float] = field(default_factory=dict)  # --eval-tasks: "task/metric" -> value (eval.json)

    @property
    def ok(self) -> bool:
        return self.status == "completed" and math.isfinite(self.val_loss)

    def csv_row(self, set_names=(), downstream_keys=()) -> list:
        """The CSV_COLUMNS, then ``val_loss[NAME]`` and ``val_bpb[NAME]`` per extra set, then one
        column per downstream "task/metric" (empty where this run has no such number)."""
        d = asdict(self)
        sets = [self.val_sets.get(n, {}).get(k, "") for n in set_names for k in ("loss", "bpb")]
        return [d[c] for c in CSV_COLUMNS] + sets + [self.downstream.get(k, "") for k in downstream_keys]

    def to_dict(self) -> dict:
        return asdict(self)


def _num(v) -> float:
    return math.nan if v is None else float(v)


def _val_curve(metrics: Path) -> dict[int, float]:
    """step -> validation loss from metrics.jsonl: the whole run, across resumes (the summary
    only holds the evaluations of the last process). A torn last line (a crash) is skipped."""
    curve: dict[int, float] = {}
    if not metrics.exists():
        return curve
    for line in metrics.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("kind") == "val" and rec.get("val_loss") is not None:
            curve[int(rec["step"])] = float(rec["val_loss"])
    return dict(sorted(curve.items()))


def csv_header(set_names=(), downstream_keys=()) -> list[str]:
    return (list(CSV_COLUMNS) + [f"val_{k}[{n}]" for n in set_names for k in ("loss", "bpb")]
            + list(downstream_keys))


def read_downstream(path: Path) -> dict[str, float]:
    """``"task/metric" -> value`` from an ``eval.json`` (lm-eval's results: keys like ``"acc,none"``;
    the standard errors and the alias are left out)."""
    if not path.exists():
        return {}
    out = {}
    for task, metrics in json.loads(path.read_text()).get("results", {}).items():
        for key, value in metrics.items():
            name = key.split(",")[0]
            if "_stderr" in name or name == "alias" or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            out[f"{task}/{name}"] = float(value)
    return out


def load_record(plan: RunPlan) -> RunRecord:
    cfg = plan.config
    tokens_per_step = cfg["train"]["batch_size"] * cfg["data"]["seq_len"]
    rec = RunRecord(plan.run_id, plan.phase, plan.activation, plan.size, plan.seed, plan.lr, "missing",
                    cfg["train"]["steps"], plan.run_hash)
    out = Path(cfg["train"]["out_dir"])
    failure, summary = out / "failure.json", out / "summary.json"
    if failure.exists():
        rec.status, rec.error = "failed", json.loads(failure.read_text()).get("error", "")
        return rec
    if not summary.exists():
        return rec
    s = read_summary(summary)
    if not s:
        rec.error = f"{summary} is unreadable"
        return rec
    evals = _val_curve(out / "metrics.jsonl")
    rec.status = s.get("status", "missing")
    rec.final_step = int(s.get("final_step") or 0)
    rec.tokens = rec.final_step * tokens_per_step
    rec.val_loss, rec.val_bpb, rec.train_loss = _num(s.get("val_loss")), _num(s.get("val_bpb")), _num(s.get("train_loss"))
    rec.num_params = int(s.get("num_params") or 0)
    rec.flops_per_token, rec.flops = _num(s.get("flops_per_token")), _num(s.get("flops"))
    rec.elapsed_s, rec.sequential_tokens_per_s = _num(s.get("elapsed_s")), _num(s.get("tokens_per_s"))
    rec.curve_tokens = [step * tokens_per_step for step in evals]
    rec.curve_val_loss = list(evals.values())
    rec.val_sets = s.get("val_sets") or {}
    rec.downstream = read_downstream(out / DOWNSTREAM_FILE)
    if rec.status == "diverged":
        rec.error = f"non-finite values at step {(s.get('nan_report') or {}).get('step')}"
    elif rec.status == "completed" and rec.final_step != rec.steps:
        rec.status = "stopped"  # every run must stop at the same pre-set step
    return rec
