"""``polycom graph compare``: Polynormer's activations x seeds on one graph, paired by seed, with the LM
comparison's statistics (``experiments.compare.stats``), plus the CSBM homophily sweep.

Arms: every activation of Polynormer (``none`` is the paper's activation-free model) and the GCN/GAT
baselines. Seed k gives every arm the same split; the Polynormer arms also share their initial
weights and dropout masks (``train.py``); the baselines are different models, paired by split only.
The reported number is the test accuracy at the best-validation epoch; differences are taken per
seed against the reference arm (``baseline``), t-interval and paired t-test with Holm's adjustment
over the other arms, and a verdict only where the adjusted p-value is below 0.05.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import math
import multiprocessing
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..experiments.compare import stats
from .data import _csbm_args, load_graph
from .train import BASELINE_MODELS, GraphRunResult, GraphTrainConfig, train_node_classifier

__all__ = ["GraphCompareSpec", "GraphComparison", "run_comparison", "analyse", "DEFAULT_ACTIVATIONS"]

DEFAULT_ACTIVATIONS = ("none", "relu", "gelu", "polynorm")
DEFAULT_SWEEP = (0.1, 0.3, 0.5, 0.7, 0.9)


@dataclass(frozen=True)
class GraphCompareSpec:
    data: str = "csbm"
    activations: tuple[str, ...] = DEFAULT_ACTIVATIONS
    baselines: tuple[str, ...] = BASELINE_MODELS  # GCN/GAT arms; () for none
    seeds: int = 5
    baseline: str = "relu"  # the reference arm of the paired differences (the paper's Polynormer uses ReLU)
    sweep: tuple[float, ...] = DEFAULT_SWEEP  # CSBM homophilies for the sweep figure; () skips it (csbm data only)
    sweep_seeds: int = 2
    jobs: int = 2  # worker processes, one thread each
    train: dict = field(default_factory=dict)  # GraphTrainConfig fields for every run

    def __post_init__(self):
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise UsageError(f"seeds: expected a positive integer, got {self.seeds!r}")
        if not isinstance(self.jobs, int) or self.jobs < 1:
            raise UsageError(f"jobs: expected a positive integer, got {self.jobs!r}")
        if not self.activations:
            raise UsageError("activations: expected at least one")
        bad = [b for b in self.baselines if b not in BASELINE_MODELS]
        if bad:
            raise UsageError(f"baselines: expected some of {', '.join(BASELINE_MODELS)}, got {bad}")
        if self.baseline not in self.arms:
            raise UsageError(f"baseline: {self.baseline!r} is not one of the arms ({', '.join(self.arms)})")
        if self.sweep and not self.data.startswith("csbm"):
            raise UsageError("sweep: the homophily sweep needs --data csbm[...]; pass --sweep none for other data")
        if any(not 0 <= h <= 1 for h in self.sweep):
            raise UsageError(f"sweep: homophilies must lie in [0, 1], got {list(self.sweep)}")
        unknown = set(self.train) - {f.name for f in dataclasses.fields(GraphTrainConfig)}
        if unknown:
            raise UsageError(f"train: unknown GraphTrainConfig fields {sorted(unknown)}")
        for arm in self.arms:  # every run's config validates before anything trains
            self.config(arm, 0)

    @property
    def arms(self) -> tuple[str, ...]:
        return tuple(self.activations) + tuple(self.baselines)

    def config(self, arm: str, seed: int, data: str | None = None) -> GraphTrainConfig:
        model = arm if arm in self.baselines else "polynormer"
        activation = "relu" if model != "polynormer" else arm
        settings = {k: v for k, v in self.train.items() if k not in ("activation", "model", "seed", "data")}
        return GraphTrainConfig(data=data or self.data, model=model, activation=activation, seed=seed, threads=1,
                                **settings)


@dataclass
class RunRecord:
    arm: str
    seed: int
    data: str
    homophily: float | None
    result: GraphRunResult


@dataclass
class GraphComparison:
    spec: GraphCompareSpec
    main: list[RunRecord]
    sweep: list[RunRecord]
    summary: dict
    seconds: float


def _run(job: tuple[str, int, str, float | None, GraphTrainConfig]) -> RunRecord:
    arm, seed, data, h, cfg = job
    try:
        return RunRecord(arm, seed, data, h, train_node_classifier(cfg))
    except (RuntimeError, FloatingPointError) as e:  # a diverged or failing run is listed, never imputed
        return RunRecord(arm, seed, data, h, GraphRunResult(dataclasses.asdict(cfg), math.nan, math.nan, -1, math.nan,
                                                            0, 0.0, ok=False, error=f"{type(e).__name__}: {e}"))


def _sweep_source(data: str, h: float) -> str:
    args = _csbm_args(data.partition(":")[2]) | {"homophily": h}
    return "csbm:" + ",".join(f"{k}={v}" for k, v in args.items())


def run_comparison(spec: GraphCompareSpec) -> GraphComparison:
    """Train every (arm, seed) on ``spec.data`` and every (arm, sweep seed) at each sweep homophily."""
    load_graph(spec.data, 0)  # a bad source fails here, once, with its one-line error
    jobs = [(arm, s, spec.data, None, spec.config(arm, s)) for s in range(spec.seeds) for arm in spec.arms]
    for h in spec.sweep:
        source = _sweep_source(spec.data, h)
        jobs += [(arm, s, source, h, spec.config(arm, s, source)) for s in range(spec.sweep_seeds) for arm in spec.arms]
    from ..environment import git_commit

    commit, start, cpu_start = git_commit(), time.perf_counter(), _cpu_seconds()
    if spec.jobs == 1:
        records = [_run(j) for j in jobs]
    else:
        with cf.ProcessPoolExecutor(spec.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            records = list(pool.map(_run, jobs))
    main = [r for r in records if r.homophily is None]
    sweep = [r for r in records if r.homophily is not None]
    summary = analyse(spec, main, sweep)
    summary["commit"], summary["cpu_seconds"] = commit, _cpu_seconds() - cpu_start
    return GraphComparison(spec, main, sweep, summary, time.perf_counter() - start)


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished workers."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def _verdict(c: stats.PairedComparison) -> str:
    """The LM comparison's rule (``stats.verdict``) for a higher-is-better number."""
    if c.n < 2 or math.isnan(c.p_holm):
        return "not testable (fewer than 2 paired seeds)"
    if c.p_holm < stats.ALPHA:
        return "better" if c.mean_diff > 0 else "worse"
    return "no significant difference at this budget"


def analyse(spec: GraphCompareSpec, main: list[RunRecord], sweep: list[RunRecord]) -> dict:
    by_arm = {arm: {r.seed: r.result for r in main if r.arm == arm} for arm in spec.arms}
    per_arm = {}
    for arm, runs in by_arm.items():
        ok = [r for r in runs.values() if r.ok]
        per_arm[arm] = {
            "n_runs": len(runs), "n_ok": len(ok),
            "not_ok": [{"seed": s, "error": r.error} for s, r in runs.items() if not r.ok],
            "test_acc": stats.describe([r.test_acc for r in ok]).to_dict() if ok else None,
            "val_acc": stats.describe([r.val_acc for r in ok]).to_dict() if ok else None,
            "num_params": ok[0].num_params if ok else 0,
            "seconds_per_run": sum(r.seconds for r in ok) / len(ok) if ok else math.nan,
            "best_epoch_mean": sum(r.best_epoch for r in ok) / len(ok) if ok else math.nan,
        }
    raw = {}
    base = {s: r for s, r in by_arm[spec.baseline].items() if r.ok}
    for arm in spec.arms:
        if arm == spec.baseline:
            continue
        seeds = sorted(s for s, r in by_arm[arm].items() if r.ok and s in base)
        raw[arm] = stats.paired_comparison([by_arm[arm][s].test_acc for s in seeds], [base[s].test_acc for s in seeds])
    adjusted = stats.holm({a: c.p_value for a, c in raw.items()})
    comparisons = {}
    for arm, c in raw.items():
        c = dataclasses.replace(c, p_holm=adjusted[arm])
        comparisons[arm] = {"test_acc": c.to_dict(), "n_pairs": c.n, "verdict": _verdict(c),
                            "min_detectable_diff": stats.minimum_detectable_difference(c.std_diff, c.n),
                            "paired": "split, initial shared weights and dropout" if arm in spec.activations
                            else "split only (a different model)"}
    summary = {"baseline": spec.baseline, "data": spec.data, "seeds": spec.seeds, "per_arm": per_arm,
               "comparisons": comparisons, "selection": "test accuracy at the best-validation epoch"}
    if main:
        summary["train_config"] = {k: v for k, v in main[0].result.config.items()
                                   if k not in ("activation", "model", "seed", "threads")}
        summary["graph"] = _graph_facts(spec.data)
    if sweep:
        summary["sweep"] = {
            "homophily": sorted({r.homophily for r in sweep}), "seeds": spec.sweep_seeds,
            "measured_homophily": {str(h): _graph_facts(_sweep_source(spec.data, h))["edge_homophily"]
                                   for h in sorted({r.homophily for r in sweep})},
            "test_acc": {arm: {str(h): stats.describe([r.result.test_acc for r in sweep if r.arm == arm
                                                       and r.homophily == h and r.result.ok] or [math.nan]).to_dict()
                               for h in sorted({r.homophily for r in sweep})} for arm in spec.arms}}
    return summary


def _graph_facts(source: str) -> dict:
    from .data import edge_homophily

    data = load_graph(source, 0)
    return {"nodes": data.num_nodes, "edges_directed": int(data.edge_index.shape[1]), "features": data.x.shape[1],
            "classes": int(data.num_classes), "edge_homophily": edge_homophily(data),
            "split": [int(m.sum()) for m in (data.train_mask, data.val_mask, data.test_mask)]}


def save_runs(comparison: GraphComparison, out: Path) -> None:
    """runs.csv: one row per run of the main comparison and the sweep."""
    import csv
    import io

    from ..train.files import write_text_atomic

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["part", "arm", "seed", "data", "homophily", "ok", "test_acc", "val_acc", "best_epoch", "final_test_acc",
                "num_params", "seconds", "error"])
    for part, records in (("main", comparison.main), ("sweep", comparison.sweep)):
        for r in records:
            x = r.result
            w.writerow([part, r.arm, r.seed, r.data, "" if r.homophily is None else r.homophily, x.ok, x.test_acc,
                        x.val_acc, x.best_epoch, x.final_test_acc, x.num_params, f"{x.seconds:.3f}", x.error or ""])
    write_text_atomic(Path(out) / "runs.csv", buf.getvalue())
