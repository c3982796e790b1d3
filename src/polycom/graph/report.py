"""The graph comparison's report folder, in the LM comparison's layout: REPORT.md (verdicts, setting,
main table first), PNG figures, runs.csv, summary.json. Every number comes from ``compare.analyse``."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..environment import git_commit, package_versions  # noqa: E402
from ..experiments.compare import plots as compare_plots  # noqa: E402
from ..experiments.compare.markdown import markdown_table  # noqa: E402
from ..train.files import write_json_atomic, write_text_atomic  # noqa: E402
from .compare import GraphComparison, save_runs  # noqa: E402

__all__ = ["write_report", "plot_accuracy", "plot_differences", "plot_curves", "plot_homophily"]


def _f(v, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def _ci(d: dict) -> str:
    return f"[{_f(d['ci_low'])}, {_f(d['ci_high'])}]"


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main_table(summary: dict) -> str:
    base, rows = summary["baseline"], []
    for arm, d in summary["per_arm"].items():
        c = summary["comparisons"].get(arm)
        acc = d["test_acc"]
        if acc is None:
            rows.append([arm, "no completed run", "", "", "", f"0/{d['n_runs']}", "", ""])
            continue
        diff = "reference" if c is None else f"{_f(c['test_acc']['mean_diff'])} {_ci(c['test_acc'])}"
        p = "" if c is None else _f(c["test_acc"]["p_holm"])
        verdict = "" if c is None else c["verdict"]
        rows.append([arm, f"{_f(acc['mean'])} ± {_f(acc['std'])} {_ci(acc)}", diff, p, verdict,
                     f"{d['n_ok']}/{d['n_runs']}", f"{d['num_params']:,}", _f(d["seconds_per_run"], 1)])
    header = ["arm", "test accuracy: mean ± std [95% CI]", f"Δ accuracy vs {base} [95% CI]", "p (Holm)", "verdict",
              "runs ok", "parameters", "s/run"]
    return markdown_table(header, rows)


def sweep_table(summary: dict) -> str:
    sw = summary["sweep"]
    hs = [str(h) for h in sw["homophily"]]
    header = ["arm"] + [f"h = {h} (measured {sw['measured_homophily'][h]:.2f})" for h in hs]
    rows = [[arm] + [_f(per[h]["mean"]) for h in hs] for arm, per in sw["test_acc"].items()]
    return markdown_table(header, rows)


def plot_accuracy(comparison: GraphComparison, path: Path) -> Path:
    """Test accuracy per arm: the mean with its 95% t-interval, the seeds as dots."""
    s = comparison.summary
    arms = [a for a, d in s["per_arm"].items() if d["test_acc"]]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(arms) + 1.5))
    for i, arm in enumerate(arms):
        d = s["per_arm"][arm]["test_acc"]
        err = None if math.isnan(d["ci_low"]) else [[d["mean"] - d["ci_low"]], [d["ci_high"] - d["mean"]]]
        colour = "C3" if arm == s["baseline"] else ("C7" if arm in comparison.spec.baselines else "C0")
        ax.errorbar(d["mean"], i, xerr=err, fmt="o", capsize=4, color=colour)
        seeds = [r.result.test_acc for r in comparison.main if r.arm == arm and r.result.ok]
        ax.plot(seeds, [i + 0.18] * len(seeds), "|", color=colour, alpha=0.6, ms=8)
    ax.set_yticks(range(len(arms)), [a + (" (reference)" if a == s["baseline"] else "") for a in arms])
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy at the best-validation epoch (mean, 95% CI; ticks: seeds)")
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def plot_differences(summary: dict, path: Path) -> Path:
    """Paired difference to the reference arm with its 95% CI; right of zero = more accurate."""
    return compare_plots.plot_differences(summary["comparisons"], path, summary["baseline"], metric="test_acc",
                                          what="test accuracy")


def plot_curves(comparison: GraphComparison, path: Path) -> Path:
    """Validation accuracy per epoch: mean over seeds, min-max band; the dotted line is the switch to global."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm in comparison.spec.arms:
        curves = [r.result.val_curve for r in comparison.main if r.arm == arm and r.result.ok and r.result.val_curve]
        if not curves:
            continue
        n = min(map(len, curves))
        y = np.array([c[:n] for c in curves])  # (seeds, epochs)
        line, = ax.plot(np.arange(1, n + 1), y.mean(0), label=f"{arm} ({len(curves)} seeds)",
                        ls="--" if arm in comparison.spec.baselines else "-")
        ax.fill_between(np.arange(1, n + 1), y.min(0), y.max(0), color=line.get_color(), alpha=0.12, lw=0)
    local = comparison.summary.get("train_config", {}).get("local_epochs")
    if local:
        ax.axvline(local + 0.5, color="k", lw=1, ls=":")
    ax.set_xlabel("epoch (full batch)")
    ax.set_ylabel("validation accuracy")
    ax.set_title("Validation accuracy (mean over seeds; band: min-max; dotted: global phase starts)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_homophily(summary: dict, baselines, path: Path) -> Path:
    """Test accuracy vs the CSBM's homophily per arm (mean over the sweep's seeds, min-max as error bars)."""
    sw = summary["sweep"]
    hs = sw["homophily"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (arm, per) in enumerate(sw["test_acc"].items()):
        mean = np.array([per[str(h)]["mean"] for h in hs])
        ax.plot(hs, mean, marker="o", label=arm, ls="--" if arm in baselines else "-",
                color="k" if arm in baselines and arm == "gcn" else None)
    ax.axvline(1 / summary["graph"]["classes"], color="grey", lw=1, ls=":")
    ax.text(1 / summary["graph"]["classes"], ax.get_ylim()[0], " 1/classes: edges ignore labels", fontsize=7,
            color="grey", va="bottom")
    ax.set_xlabel("CSBM homophily (share of a node's edges inside its class)")
    ax.set_ylabel(f"test accuracy (mean of {sw['seeds']} seeds)")
    ax.set_title("Accuracy vs homophily: Polynormer per activation, GCN/GAT dashed", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _verdict_lines(summary: dict) -> list[str]:
    lines = []
    for arm, c in summary["comparisons"].items():
        t = c["test_acc"]
        detail = (f"{_f(t['mean_diff'])} accuracy vs {summary['baseline']}, 95% CI {_ci(t)}, Holm-adjusted "
                  f"p = {_f(t['p_holm'])}, {c['n_pairs']} seeds paired by {c['paired']}")
        if c["verdict"].startswith("no significant"):
            detail += f"; detects |difference| >= {_f(c['min_detectable_diff'])} with 80% power"
        lines.append(f"- **{arm}: {c['verdict']}** ({detail})")
    return lines


def write_report(comparison: GraphComparison, out: Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    s, spec = comparison.summary, comparison.spec
    figures = [plot_accuracy(comparison, out / "accuracy.png"), plot_differences(s, out / "differences.png"),
               plot_curves(comparison, out / "curves.png")]
    if "sweep" in s:
        figures.append(plot_homophily(s, spec.baselines, out / "homophily.png"))
    g, t = s.get("graph", {}), s.get("train_config", {})
    lines = [f"# Polynormer activation comparison on `{spec.data}`", "", *_verdict_lines(s), "",
             "## Setting", "",
             f"- graph: {g.get('nodes')} nodes, {g.get('edges_directed')} directed edges, {g.get('features')} "
             f"features, {g.get('classes')} classes, edge homophily {_f(g.get('edge_homophily'))}; "
             f"split train/val/test {g.get('split')} nodes (seed 0)",
             f"- training: full batch, Adam lr {t.get('lr')}, weight decay {t.get('weight_decay')}; Polynormer "
             f"{t.get('local_epochs')} local-phase epochs then {t.get('global_epochs')} with the global blocks "
             f"({t.get('local_layers')} local {t.get('local_conv')} layers, {t.get('global_layers')} global, width "
             f"{t.get('hidden')} x {t.get('heads')} heads, beta {'learnable' if t.get('beta') is None else t.get('beta')}); "
             "GCN/GAT: 2 layers, the same epochs in total",
             f"- number: {s['selection']}",
             f"- seeds: {spec.seeds} per arm; seed k fixes the split for every arm and the initial shared weights "
             "and dropout masks for every Polynormer activation",
             f"- reference: {s['baseline']}; Holm's adjustment over the {len(s['comparisons'])} other arms",
             f"- {len(comparison.main) + len(comparison.sweep)} runs in {comparison.seconds:.0f} s wall "
             f"({spec.jobs} worker processes, one thread each; {s.get('cpu_seconds', math.nan):.0f} CPU-seconds)", "",
             "## Results", "", main_table(s), "",
             *[f"![{p.stem}]({p.name})" for p in figures[:3]], ""]
    if "sweep" in s:
        lines += ["## Homophily sweep (CSBM)", "",
                  f"Test accuracy, mean of {s['sweep']['seeds']} seeds per point (too few for intervals: a "
                  "picture of the trend, not a test).", "", sweep_table(s), "", "![homophily](homophily.png)", ""]
    lines += ["## Reproduce", "", f"- polycom commit {s.get('commit') or git_commit() or 'unknown'} (at the start); versions "
              + ", ".join(f"{k} {v}" for k, v in package_versions(("polycom", "torch", "torch_geometric")).items()), ""]
    write_text_atomic(out / "REPORT.md", "\n".join(lines))
    write_json_atomic(out / "summary.json", s)
    save_runs(comparison, out)
    return out / "REPORT.md"
