"""From run records to the numbers of the report: one ``analyse`` call, plain dicts out.

Everything the report prints is computed here and nowhere else, and lands in
``summary.json``; the report only formats it. Only runs that completed their pre-set
steps count; a failed, diverged or stopped run is listed, and its seed is dropped
from the paired statistics of that activation (never imputed).
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict

import numpy as np

from . import stats
from .efficiency import token_multiplier
from .lr_policy import choose_lrs, grid_ratio
from .metric_tables import metric_table
from .records import RunRecord
from .scaling import scaling_comparison, wall_clock_speedup
from .spec import BASELINE_CANDIDATES, SweepSpec

__all__ = ["analyse", "choose_baseline"]

EXTRAPOLATE = (10.0, 100.0)  # compute multipliers read this far beyond the largest size, labelled extrapolation


def _by(records, *keys) -> dict:
    out = defaultdict(list)
    for r in records:
        out[tuple(getattr(r, k) for k in keys) if len(keys) > 1 else getattr(r, keys[0])].append(r)
    return dict(out)


def choose_baseline(spec: SweepSpec, per_activation: dict[str, dict]) -> str:
    """``--baseline`` as given, or the baseline activation (relu/gelu/swiglu/relu2) with the
    lowest mean validation loss: the strongest baseline, so a win is a win over the best."""
    if spec.baseline != "auto":
        return spec.baseline
    scored = [(d["val_loss"]["mean"], a) for a, d in per_activation.items()
              if a in BASELINE_CANDIDATES and d["n_ok"] > 0]
    if not scored:  # no baseline finished: compare with the first one anyway (every test is then 'not testable')
        return next(a for a in per_activation if a in BASELINE_CANDIDATES)
    return min(scored)[1]


def _paired(recs_a: list[RunRecord], recs_b: list[RunRecord]) -> list[tuple[RunRecord, RunRecord]]:
    b_by_seed = {r.seed: r for r in recs_b if r.ok}
    return [(a, b_by_seed[a.seed]) for a in sorted(recs_a, key=lambda r: r.seed) if a.ok and a.seed in b_by_seed]


def _token_efficiency(pairs) -> dict:
    per_seed = [token_multiplier(a.curve_tokens, a.curve_val_loss, b.curve_tokens, b.curve_val_loss) for a, b in pairs]
    values = [m.value for m in per_seed]
    reached = [m.reached for m in per_seed]
    out = {"per_seed": values, "reached": reached, "n": len(values), "n_reached": int(sum(reached))}
    if values and all(reached):
        # Multipliers are ratios: average and bound them on the log scale (a geometric mean).
        d = stats.describe(np.log(values))
        out.update(value=math.exp(d.mean), ci_low=math.exp(d.ci_low) if d.n > 1 else math.nan,
                   ci_high=math.exp(d.ci_high) if d.n > 1 else math.nan)
    else:
        out.update(value=math.nan, ci_low=math.nan, ci_high=math.nan)
    return out


def _scaling(spec, main, activations, baseline, throughput) -> dict:
    """Loss vs compute per activation, the law (``scaling.scaling_comparison``: E + A C^-b with E
    shared at 4+ sizes, else a C^-b), its lack of fit, the compute multiplier at the largest size and
    extrapolated beyond it, and the wall-clock time to the baseline's loss (with the speed measured at
    the largest size, side by side). The multiplier is also read along a compute grid from the
    smallest size to 100x the largest, for the multiplier-vs-compute figure."""
    sizes = [s["label"] for s in spec.scaling_sizes]
    grid = {}
    for act in activations:
        points = np.full((spec.seeds, len(sizes), 2), np.nan)  # (seed, size, [compute, loss])
        for r in main:
            if r.activation == act and r.ok:
                points[r.seed, sizes.index(r.size)] = (r.flops, r.val_loss)
        grid[act] = points
    out = {"sizes": sizes, "points": {a: p.tolist() for a, p in grid.items()}, "comparisons": {}, "laws": {}}
    computes = grid[baseline][..., 0]
    if not np.isfinite(computes).any():
        return out
    c_min, c_max = float(np.nanmin(computes)), float(np.nanmax(computes))
    curve = tuple(float(f) for f in np.geomspace(c_min / c_max, EXTRAPOLATE[-1], 13)
                  if not np.isclose(f, 1.0)) + EXTRAPOLATE
    for act in activations:
        if act == baseline or not np.isfinite(grid[act]).all(axis=2).any():
            continue
        others = {a: grid[a] for a in activations if a not in (act, baseline)}
        try:
            res = scaling_comparison(grid[act], grid[baseline], others, extrapolate=tuple(sorted(set(curve))))
        except ValueError as exc:  # too few completed sizes for any law
            out["comparisons"][act] = {"error": str(exc)}
            continue
        entry = {k: v for k, v in res.to_dict().items() if k not in ("replicates", "extrapolated")}
        entry["extrapolated"] = [dataclasses.asdict(m) for m in res.extrapolated if m.factor in EXTRAPOLATE]
        entry["curve"] = [dataclasses.asdict(m) for m in (res.at_c_max, *res.extrapolated)]
        entry["describe"] = res.describe()
        entry["fit_check_words"] = {act: res.act_fit_check.describe(), baseline: res.base_fit_check.describe()}
        speed = (throughput or {}).get(act, {}).get("round_ratios"), (throughput or {}).get(baseline, {}).get("round_ratios")
        if speed[0] and speed[1] and len(speed[0]) == len(speed[1]):
            entry["wall_clock"] = wall_clock_speedup(res.replicates, res.at_c_max.value, *speed).to_dict()
        out["comparisons"][act] = entry
        out["laws"][act] = dataclasses.asdict(res.act_law) | {"kind": res.law}
        out["laws"][baseline] = dataclasses.asdict(res.base_law) | {"kind": res.law}
    return out


def _lr_policy(spec: SweepSpec) -> str:
    if not spec.lr_sweep:
        return "shared"
    sizes = " at every size" if spec.scaling and spec.lr_tune_sizes == "each" else (
        " at the smallest and largest size, interpolated in log-size between them" if spec.scaling else "")
    schedule = "the full schedule" if spec.lr_sweep_fraction == 1 else f"{spec.lr_sweep_fraction:g} of the schedule"
    return f"tuned per activation{sizes} (seed {spec.lr_tune_seed}, {schedule})"


def _lr_sweep(spec: SweepSpec, main: list[RunRecord], lr_records: list[RunRecord]) -> dict:
    """The LR phase per size and activation: its grid and losses, the best LR, whether it sits on
    the grid's edge after the extensions, its sensitivity, and the LR the main runs used."""
    used = {(r.activation, r.size): r.lr for r in main}
    by_size: dict[str, dict] = {}
    for (act, size), choice in choose_lrs(lr_records, spec.lr_tie_tolerance).items():
        by_size.setdefault(size, {})[act] = dict(choice, lr_used=used.get((act, size), math.nan))
    interpolated = {size: {a: lr for (a, s), lr in used.items() if s == size}
                    for size in dict.fromkeys(r.size for r in main) if size not in by_size}
    return {"by_size": by_size, "interpolated": interpolated, "initial_grid": list(spec.lr_grid),
            "grid_ratio": grid_ratio(spec.lr_grid), "extension_limit": spec.lr_grid_extensions,
            "tune_seed": spec.lr_tune_seed, "schedule_fraction": spec.lr_sweep_fraction,
            "tie_tolerance": spec.lr_tie_tolerance}


def _eval_sets(names: list[str], at_size: dict, activations: list[str], baseline: str) -> dict:
    """Per extra validation set: the loss and bpb tables, and each activation's verdict on the
    set's loss (the main table's rule: Holm over the activations compared on that set)."""
    out = {}
    for name in names:
        tables = {metric: metric_table(at_size, activations, baseline,
                                       lambda r, m=metric: r.val_sets.get(name, {}).get(m))
                  for metric in ("loss", "bpb")}
        for act, c in tables["loss"]["comparisons"].items():
            c["verdict"] = stats.verdict(stats.PairedComparison(**c))
        out[name] = tables
    return out


def analyse(spec: SweepSpec, records: list[RunRecord], lr_records: list[RunRecord],
            throughput: dict | None) -> dict:
    main_size = spec.scaling_sizes[-1]["label"] if spec.scaling else "base"
    main = [r for r in records if r.phase == "main"]
    at_size = _by([r for r in main if r.size == main_size], "activation")
    per_activation = {}
    for act in spec.activations:
        recs = at_size.get(act, [])
        ok = [r for r in recs if r.ok]
        per_activation[act] = {
            "n_runs": len(recs), "n_ok": len(ok),
            "not_ok": [{"seed": r.seed, "status": r.status, "error": r.error} for r in recs if not r.ok],
            "val_loss": stats.describe([r.val_loss for r in ok]).to_dict() if ok else None,
            "val_bpb": stats.describe([r.val_bpb for r in ok]).to_dict() if ok else None,
            "num_params": ok[0].num_params if ok else (recs[0].num_params if recs else 0),
            "flops_per_token": ok[0].flops_per_token if ok else math.nan,
            "lr": recs[0].lr if recs else math.nan,
        }
    baseline = choose_baseline(spec, per_activation)
    comparisons, raw = {}, {}
    for act in spec.activations:
        if act == baseline:
            continue
        pairs = _paired(at_size.get(act, []), at_size.get(baseline, []))
        loss = stats.paired_comparison([a.val_loss for a, _ in pairs], [b.val_loss for _, b in pairs])
        bpb = stats.paired_comparison([a.val_bpb for a, _ in pairs], [b.val_bpb for _, b in pairs])
        raw[act] = loss
        comparisons[act] = {"n_pairs": len(pairs), "val_loss": loss, "val_bpb": bpb.to_dict(),
                            "token_multiplier": _token_efficiency(pairs)}
    adjusted = stats.holm({a: c.p_value for a, c in raw.items()})
    for act, c in comparisons.items():
        loss = dataclasses.replace(c["val_loss"], p_holm=adjusted[act])
        sd = loss.std_diff
        c["val_loss"] = loss.to_dict()
        c["verdict"] = stats.verdict(loss)
        c["min_detectable_diff"] = stats.minimum_detectable_difference(sd, loss.n)
        c["seeds_needed_for_observed"] = stats.seeds_needed(loss.mean_diff, sd)
        if throughput and act in throughput and baseline in throughput:
            speed = throughput[act]["ratio"] / throughput[baseline]["ratio"]  # act tokens/s over baseline's
            c["speed_vs_baseline"] = speed
            tm = c["token_multiplier"]["value"]
            # Wall-clock time to the baseline's final loss, as a share of the baseline's time.
            c["time_to_baseline_loss"] = tm / speed if math.isfinite(tm) else math.nan
    summary = {"baseline": baseline, "baseline_rule": "given" if spec.baseline != "auto" else
               "auto: the best of " + "/".join(a for a in BASELINE_CANDIDATES if a in spec.activations),
               "main_size": main_size, "per_activation": per_activation, "comparisons": comparisons,
               "lr_policy": _lr_policy(spec), "throughput": throughput}
    set_names = list(dict.fromkeys(n for r in main for n in r.val_sets))
    if set_names:
        summary["eval_sets"] = _eval_sets(set_names, at_size, spec.activations, baseline)
        summary["eval_sets_tally"] = {  # per activation: on how many sets it is better / worse (Holm, per set)
            act: {v: sum(t["loss"]["comparisons"][act]["verdict"] == v for t in summary["eval_sets"].values())
                  for v in ("better", "worse")} | {"n_sets": len(set_names)}
            for act in spec.activations if act != baseline}
    downstream_keys = sorted({k for r in main for k in r.downstream})
    if downstream_keys:
        summary["downstream"] = {k: metric_table(at_size, spec.activations, baseline,
                                                 lambda r, k=k: r.downstream.get(k)) for k in downstream_keys}
    if spec.lr_sweep:
        summary["lr_sweep"] = _lr_sweep(spec, main, lr_records)
    if spec.scaling:
        summary["scaling"] = _scaling(spec, main, spec.activations, baseline, throughput)
    return summary
