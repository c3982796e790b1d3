"""Inside the compared models: effective rank and layer similarity side by side per activation.

Zhuo et al. (2025, Section 5) report that PolyCom models have a higher effective rank
of their weights and a lower cosine similarity between consecutive layers than the
baselines. This section checks both claims on the sweep's own runs: each completed
run's final checkpoint goes through ``polycom.analysis`` (effective rank of every
weight matrix, cosine similarity of the hidden states on the first validation
windows), and per activation the mean over seeds, its spread and the paired
difference to the baseline (same seeds, Holm-adjusted over the PolyCom activations)
are reported. The numbers say what these runs show, at their (small) budget; a
claim is "confirmed" or "refuted" only at Holm p < 0.05.

Metrics per run:
- ``rank_ratio``: mean over all attention and MLP matrices of erank / min(out, in)
  (a ratio, so gated MLPs' narrower matrices compare with non-gated ones);
- ``rank_attention``: mean erank of q, k, v, o (the same shapes for every activation);
- ``similarity``: mean over blocks of cos(h_{l-1}, h_l).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ...analysis import AnalysisError, analyze_model
from ...analysis.load import load_model, resolve_run, validation_inputs
from . import stats
from ...train.files import write_json_atomic

__all__ = ["METRICS", "run_metrics", "inside_summary", "plot_inside", "section"]

# metric -> (label, direction the paper claims for PolyCom vs the baseline: +1 higher, -1 lower)
METRICS = {"rank_ratio": ("effective rank / max rank, all matrices", +1),
           "rank_attention": ("effective rank of q, k, v, o", +1),
           "similarity": ("consecutive-layer cosine similarity", -1)}
POLYCOM = ("polyrelu", "polynorm", "polycom", "polyprelu", "gated_polynorm", "pnglu")
N_SEQUENCES = 8


def run_metrics(run_dir: Path, inputs_cache: dict) -> dict:
    """The three metrics of one run's final checkpoint; ``inputs_cache`` shares validation batches."""
    run = resolve_run(run_dir)
    key = json.dumps(run.config.to_dict()["data"], sort_keys=True)
    if key not in inputs_cache:  # every run of a sweep reads the same corpus: tokenize/hash it once
        inputs_cache[key] = validation_inputs(run.config, N_SEQUENCES)
    result = analyze_model(load_model(run.checkpoints[-1], run.config), inputs_cache[key])
    rows = result["effective_rank"]["matrices"]
    attention = [r["effective_rank"] for r in rows if r["kind"] in ("q", "k", "v", "o")]
    return {"rank_ratio": result["effective_rank"]["mean_ratio"],
            "rank_attention": float(np.mean(attention)) if attention else math.nan,
            "similarity": result["similarity"]["mean_consecutive"]}


def _claim(c: stats.PairedComparison, direction: int, p_holm: float) -> str:
    if not math.isfinite(p_holm) or p_holm >= 0.05:
        return f"not significant ({c.n} pairs)"
    return "confirmed" if c.mean_diff * direction > 0 else "refuted"


def inside_summary(result) -> dict:
    """Per activation: per-seed metrics, mean/std/CI; per PolyCom activation: paired difference to the baseline."""
    s = result.summary
    runs_dir, cache, per_run, notes = Path(result.out) / "runs", {}, {}, []
    for r in result.records:
        if r.size != s["main_size"] or not r.ok:
            continue
        try:
            per_run[(r.activation, r.seed)] = run_metrics(runs_dir / r.run_id, cache)
        except AnalysisError as e:
            notes.append(f"{r.run_id}: {e}")
    acts = list(dict.fromkeys(a for a, _ in per_run))
    out = {"per_activation": {}, "comparisons": {}, "notes": notes, "baseline": s["baseline"]}
    for act in acts:
        seeds = sorted(seed for a, seed in per_run if a == act)
        out["per_activation"][act] = {"seeds": seeds, **{
            m: {"values": [per_run[(act, k)][m] for k in seeds],
                **stats.describe([per_run[(act, k)][m] for k in seeds]).to_dict()} for m in METRICS}}
    base = s["baseline"]
    for m, (_, direction) in METRICS.items():
        raw = {}
        for act in acts:
            if act not in POLYCOM or base not in out["per_activation"]:
                continue
            seeds = [k for k in out["per_activation"][act]["seeds"] if (base, k) in per_run]
            raw[act] = stats.paired_comparison([per_run[(act, k)][m] for k in seeds],
                                               [per_run[(base, k)][m] for k in seeds])
        adjusted = stats.holm({a: c.p_value for a, c in raw.items()})
        for act, c in raw.items():
            out["comparisons"].setdefault(act, {})[m] = {**c.to_dict(), "p_holm": adjusted[act],
                                                         "claim": _claim(c, direction, adjusted[act])}
    return out


def _fmt(d: dict, digits: int = 3) -> str:
    if not math.isfinite(d["mean"]):
        return "n/a"
    spread = f" ± {d['std']:.{digits}f}" if math.isfinite(d["std"]) else ""
    return f"{d['mean']:.{digits}f}{spread} (n={d['n']})"


def section(result, figures: Path) -> list[str]:
    """REPORT.md lines of the analysis section; writes inside.json and figures/inside.png."""
    summary = inside_summary(result)
    write_json_atomic(Path(result.out) / "inside.json", summary)
    if not summary["per_activation"]:
        return ["## Inside the models", "", "No completed run with a checkpoint to analyse.", ""]
    plot_inside(summary, figures / "inside.png")
    base = summary["baseline"]
    header = ["activation"] + [label for label, _ in METRICS.values()]
    rows = [[act + (" (baseline)" if act == base else "")] + [_fmt(d[m]) for m in METRICS]
            for act, d in summary["per_activation"].items()]
    lines = ["## Inside the models: effective rank and layer similarity", "",
             "The paper (Zhuo et al. 2025, Section 5) reports a higher effective rank and a lower layer-to-layer "
             "similarity for PolyCom. Final checkpoints, mean ± std over seeds (docs/analysis.md):", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
             *["| " + " | ".join(r) + " |" for r in rows], ""]
    for act, by_metric in summary["comparisons"].items():
        parts = [f"{METRICS[m][0]} {c['mean_diff']:+.4f} [{c['ci_low']:.4f}, {c['ci_high']:.4f}], "
                 f"Holm p = {c['p_holm']:.3f}: **{c['claim']}**" for m, c in by_metric.items()]
        lines.append(f"- {act} vs {base}: " + "; ".join(parts))
    lines += [""] + [f"- not analysed: {n}" for n in summary["notes"]]
    return lines + ["", "![effective rank and layer similarity](figures/inside.png)", ""]


def plot_inside(summary: dict, path: Path) -> Path:
    """One panel per metric: each seed as a dot, the mean with its 95% t-interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acts = list(summary["per_activation"])
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 0.45 * len(acts) + 1.8), sharey=True)
    for ax, (m, (label, direction)) in zip(axes, METRICS.items()):
        for i, act in enumerate(acts):
            d = summary["per_activation"][act][m]
            colour = "C3" if act == summary["baseline"] else ("C0" if act in POLYCOM else "C7")
            ax.scatter(d["values"], [i] * len(d["values"]), s=14, color=colour, alpha=0.5)
            err = None if not math.isfinite(d["ci_low"]) else [[d["mean"] - d["ci_low"]], [d["ci_high"] - d["mean"]]]
            ax.errorbar(d["mean"], i, xerr=err, fmt="D", ms=5, capsize=3, color=colour)
        ax.set_xlabel(label, fontsize=9)
        ax.set_title(f"paper: PolyCom {'higher' if direction > 0 else 'lower'}", fontsize=9)
        ax.grid(alpha=0.3, axis="x")
    axes[0].set_yticks(range(len(acts)), acts)
    axes[0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
