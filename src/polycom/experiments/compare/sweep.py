"""``compare(spec, out)``: plan, run, measure, analyse and report one sweep.

    from polycom.experiments.compare.sweep import compare
    from polycom.experiments.compare.spec import SweepSpec
    result = compare(SweepSpec(activations=["gelu", "polynorm"], seeds=2), "reports/mine")
    result.summary["comparisons"]["polynorm"]["verdict"]

Order of work: validate everything (spec, overrides, output folder, data budget)
before any training; prepare the corpus and tokenizer once in this process (parallel
runs then only read the cache); the LR phase; the main phase; the side-by-side
throughput measurement; the analysis and the report. Rerunning the same command
skips finished runs and resumes partial ones. One process writes a sweep folder at a time
(``OUT/.lock``), and the corpus it began with (``sweep.json``'s ``corpus_hash``) is the one
it ends with.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ...train.config import Config, ConfigError, check_paths
from ...train.eval_sets import prepare_eval_sets
from ...train.run_folder import RunFolderError, RunFolderLock
from .analysis import analyse
from .downstream import check_eval_tasks, evaluate_runs
from .execute import execute_all
from ...train.files import write_json_atomic
from .lr_policy import choose_lrs, interpolate_lrs, next_grid_point
from .plan import (RunPlan, base_config, initial_lr_grids, lr_tuned_sizes, plan_runs, same_sweep, scaling_steps,
                   size_params, sweep_key)
from .records import RunRecord, load_record
from .spec import SweepSpec

__all__ = ["CompareResult", "compare"]


@dataclass
class CompareResult:
    out: Path
    records: list[RunRecord]  # main phase
    lr_records: list[RunRecord]
    summary: dict
    states: dict[str, str]  # run_id -> skipped | done | failed (this invocation)
    timings: dict[str, float]  # seconds: planning, training, throughput, report


def _check_out_folder(out: Path, key: dict) -> None:
    meta = out / "sweep.json"
    if meta.exists():
        old = json.loads(meta.read_text()).get("key")
        if not same_sweep(old or {}, key):
            raise ConfigError(f"--out: {out} holds a different sweep (other settings; see {meta}); "
                              "use a new --out folder, or delete that one")
    elif out.exists() and any(p.name != ".lock" for p in out.iterdir()):
        raise ConfigError(f"--out: {out} exists and is not a polycom compare folder; choose another --out")


def _lock_out_folder(out: Path, say) -> RunFolderLock:
    """One writer per sweep folder, with the run folder's lock (``OUT/.lock``, dropped by the
    system when its process dies): a second ``polycom compare`` into ``out`` is refused."""
    lock = RunFolderLock(out)
    try:
        stale = lock.acquire()
    except RunFolderError:
        holder = lock.path.read_text().strip() if lock.path.exists() else ""
        raise ConfigError(f"--out: {out} is in use by another polycom compare ({holder or 'unknown pid'}); "
                          "wait for it to finish or choose another --out") from None
    if stale:
        say(f"{out}: taking over the lock of a sweep that ended without releasing it ({stale})")
    return lock


def _check_corpus(out: Path, cfg: Config, corpus_hash: str) -> None:
    """The corpus is part of the sweep's identity: runs trained on different data are never paired."""
    meta = out / "sweep.json"
    old = json.loads(meta.read_text()).get("corpus_hash") if meta.exists() else None
    if old and old != corpus_hash:
        raise ConfigError(f"data.source: {cfg.data.source} changed since the sweep in {out} began (corpus hash "
                          f"{old[:12]}... then, {corpus_hash[:12]}... now); restore the file, or use a new --out")


def _prepare_data(cfg: Config, say) -> tuple[int, str]:
    """Tokenize once, here; check the budget fits the corpus; returns the vocabulary size and
    the corpus content hash."""
    from ...data import prepare_data
    from ...train.preflight import check as preflight

    check_paths(cfg)
    preflight(cfg)  # device, folders, tokenizer: one-line errors before the first data preparation
    data = prepare_data(cfg.data.corpus_spec(), cfg.data.tokenizer, cfg.data.vocab_size, cfg.data.cache_dir, log=say)
    prepare_eval_sets(cfg, data.tokenizer, say)  # eval.sets: tokenised here once, the runs read the cache
    need = cfg.train.steps * cfg.train.batch_size * (cfg.data.seq_len + 1)
    have = len(data.stream("train"))
    if need > have:
        raise ConfigError(f"train.steps: {cfg.train.steps} steps of {cfg.train.batch_size} x {cfg.data.seq_len} tokens "
                          f"need {need:,} training tokens, but data.source={cfg.data.source!r} has {have:,}; "
                          "a comparison that repeats data measures memorisation: lower train.steps or use more data")
    return data.tokenizer.vocab_size, data.corpus_hash


def _run_phase(plans: list[RunPlan], spec: SweepSpec, out: Path, device: str, say) -> dict[str, str]:
    done, by_id = [0], {p.run_id: p for p in plans}

    def on_done(plan, state):
        done[0] += 1
        rec = load_record(by_id[plan["run_id"]])
        loss = f"val loss {rec.val_loss:.4f}" if rec.ok else rec.status + (f": {rec.error}" if rec.error else "")
        say(f"  [{done[0]}/{len(plans)}] {plan['run_id']}: {state}, {loss}")

    return execute_all([p.to_dict() for p in plans], spec.jobs, spec.launcher, device, out, spec.slurm, on_done,
                       shape=(spec.nodes, spec.tasks_per_node))


def compare(spec: SweepSpec, out: str | Path, say=print) -> CompareResult:
    t0 = time.perf_counter()
    out = Path(out)
    spec.validate()
    spec.validate_launch()
    base = base_config(spec)
    # The runs write under out/runs, never to the preset's train.out_dir: preflight checks that folder.
    base.train.out_dir = str(out / "runs")
    key = sweep_key(spec)
    _check_out_folder(out, key)
    plans = plan_runs(spec, out)  # validates every run's config before anything runs
    tasks = check_eval_tasks(spec)  # lm-eval installed and the task names known, before any training
    vocab, corpus = _prepare_data(base, say)
    lock = _lock_out_folder(out, say)  # nothing above writes into out
    try:
        _check_out_folder(out, key)  # again, under the lock: another writer may have begun meanwhile
        _check_corpus(out, base, corpus)
        return _compare_locked(spec, out, base, key, plans, tasks, vocab, corpus, t0, say)
    finally:
        lock.release()


def _compare_locked(spec: SweepSpec, out: Path, base: Config, key: dict, plans: dict, tasks, vocab: int,
                    corpus: str, t0: float, say) -> CompareResult:
    """The sweep's writing part, under its lock: the runs, the measurements and the report."""
    from .report import write_report, write_summary_json

    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "sweep.json", {"key": key, "corpus_hash": corpus, "spec": spec.to_dict()})
    timings = {"planning_s": time.perf_counter() - t0}
    states: dict[str, str] = {}
    t1 = time.perf_counter()
    steps = scaling_steps(spec) if spec.scaling else None
    lr_records, lrs = _tune_lrs(spec, out, base.train.device, steps, states, say) if spec.lr_sweep else ([], None)
    plans = plan_runs(spec, out, lr_grids={}, lrs=lrs, size_steps=steps)
    new = [p for p in plans["main"] if p.run_id not in states]  # the tuning seed's runs at the chosen LRs are done
    say(f"main comparison: {len(plans['main'])} runs ({len(spec.activations)} activations x {spec.seeds} seeds"
        + (f" x {len(spec.scaling_sizes)} sizes" if spec.scaling else "") + ")"
        + (f", {len(plans['main']) - len(new)} of them trained in the LR phase" if len(new) < len(plans["main"]) else ""))
    states.update(_run_phase(new, spec, out, base.train.device, say))
    timings["training_s"] = time.perf_counter() - t1
    if spec.eval_tasks:
        t_eval = time.perf_counter()
        say(f"downstream: {', '.join(spec.eval_tasks)} on {len(plans['main'])} runs")
        states.update({f"{k} (downstream)": v for k, v in evaluate_runs(plans["main"], spec, tasks, say).items()})
        timings["downstream_s"] = time.perf_counter() - t_eval
    records = [load_record(p) for p in plans["main"]]
    t2 = time.perf_counter()
    throughput = _throughput(spec, plans["main"], vocab, say)
    timings["throughput_s"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    summary = analyse(spec, records, lr_records, throughput)
    result = CompareResult(out, records, lr_records, summary, states, timings)
    write_report(result, spec, base)
    timings["report_s"] = time.perf_counter() - t3
    # The yardstick: bookkeeping (planning, analysis, report, plots) against the summed training
    # time of the runs themselves (what they took, whether trained now or by an earlier invocation).
    unique = {r.run_id: r for r in lr_records + records}  # a tuning-seed run is in both phases: count it once
    runs_s = sum(r.elapsed_s for r in unique.values() if math.isfinite(r.elapsed_s))
    timings["runs_training_s"] = runs_s
    timings["overhead_share"] = (timings["planning_s"] + timings["report_s"]) / runs_s if runs_s > 0 else math.nan
    timings["throughput_share"] = timings["throughput_s"] / runs_s if runs_s > 0 else math.nan
    write_summary_json(result, spec, base)
    return result


def _tune_lrs(spec: SweepSpec, out: Path, device: str, size_steps: dict | None, states: dict,
              say) -> tuple[list[RunRecord], dict[tuple[str, str], float]]:
    """The LR phase (``lr_policy``): train every grid LR, extend each grid whose best LR sits on
    its edge by one step and train that, until every best is interior or at its extension limit.
    Returns the LR-phase records and the main phase's LR per (activation, size)."""
    grids = initial_lr_grids(spec)
    while True:
        plans = plan_runs(spec, out, lr_grids=grids, size_steps=size_steps)["lr"]
        new = [p for p in plans if p.run_id not in states]
        say(f"LR phase: {len(new)} runs" + (f" ({len(plans) - len(new)} already run)" if len(new) < len(plans) else ""))
        states.update(_run_phase(new, spec, out, device, say))
        records = [load_record(p) for p in plans]
        choices = choose_lrs(records, spec.lr_tie_tolerance)
        extra = {key: lr for key, choice in choices.items()
                 if (lr := next_grid_point(choice, spec.lr_grid, spec.lr_grid_extensions)) is not None}
        if not extra:
            break
        say("LR grid extended past its edge: " + ", ".join(
            f"{act}{'' if size == 'base' else ' ' + size} {lr:g}" for (act, size), lr in extra.items()))
        for key, lr in extra.items():
            grids[key].append(lr)
    lrs = {key: c["best_lr"] for key, c in choices.items() if c["best_lr"] is not None}
    tuned = set(lr_tuned_sizes(spec))
    if spec.scaling and tuned != {s["label"] for s in spec.scaling_sizes}:
        params = size_params(spec)
        for act in spec.activations:
            known = {size: lr for (a, size), lr in lrs.items() if a == act}
            if known:
                lrs.update({(act, size): lr for size, lr in interpolate_lrs(params, known).items()
                            if size not in tuned})
    return records, lrs


def _throughput(spec: SweepSpec, main: list[RunPlan], vocab: int, say) -> dict | None:
    from .throughput import measure_throughput

    if spec.throughput_rounds == 0:
        return None
    largest = main[-1].size
    configs = {p.activation: Config.from_dict(p.config) for p in main if p.seed == 0 and p.size == largest}
    device_name = next(iter(configs.values())).train.device
    device = torch.device("cuda" if device_name == "auto" and torch.cuda.is_available() else
                          ("cpu" if device_name == "auto" else device_name))
    reference = "gelu" if "gelu" in configs else next(iter(configs))
    say(f"throughput: {spec.throughput_rounds} interleaved train steps per activation on {device}")
    return {a: t.to_dict() for a, t in measure_throughput(configs, vocab, device, spec.throughput_rounds,
                                                          reference).items()}
