"""The report's figures (matplotlib, Agg): one function per PNG."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_curves", "plot_final", "plot_differences", "plot_lr", "plot_scaling", "plot_throughput",
           "plot_eval_sets", "plain_log_axis", "plot_scaling_residuals", "plot_scaling_multiplier"]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_curves(records, path: Path, baseline: str) -> Path:
    """Validation loss vs tokens: the mean over seeds, with the seeds' min-max as a band."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for act in dict.fromkeys(r.activation for r in records):
        curves = [r for r in records if r.activation == act and r.ok and r.curve_tokens]
        if not curves:
            continue
        n = min(len(r.curve_tokens) for r in curves)
        x = np.array(curves[0].curve_tokens[:n])
        y = np.array([r.curve_val_loss[:n] for r in curves])  # (seeds, evals)
        line, = ax.plot(x, y.mean(0), label=f"{act} ({len(curves)} seeds)", lw=2.2 if act == baseline else 1.5,
                        ls="--" if act == baseline else "-")
        ax.fill_between(x, y.min(0), y.max(0), color=line.get_color(), alpha=0.18, lw=0)
    ax.set_xlabel("training tokens")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title("Validation loss (mean over seeds; band: min-max)")
    finals = [r.val_loss for r in records if r.ok]
    if finals:  # zoom on the part of the curves where activations differ
        lo, hi = min(finals), max(r.curve_val_loss[len(r.curve_val_loss) // 3] for r in records if r.ok and r.curve_val_loss)
        ax.set_ylim(lo - 0.1 * (hi - lo) - 1e-3, hi + 0.05 * (hi - lo) + 1e-3)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_final(per_activation: dict, path: Path, baseline: str) -> Path:
    """Final validation loss per activation: mean with its 95% t-interval, seeds as dots."""
    acts = [a for a, d in per_activation.items() if d["val_loss"]]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(acts) + 1.5))
    for i, act in enumerate(acts):
        d = per_activation[act]["val_loss"]
        err = None if math.isnan(d["ci_low"]) else [[d["mean"] - d["ci_low"]], [d["ci_high"] - d["mean"]]]
        ax.errorbar(d["mean"], i, xerr=err, fmt="o", capsize=4, color="C3" if act == baseline else "C0")
    ax.set_yticks(range(len(acts)), [a + (" (baseline)" if a == baseline else "") for a in acts])
    ax.invert_yaxis()
    ax.set_xlabel("final validation loss (mean, 95% CI over seeds)")
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def _ci_xerr(comparison: dict):
    """A paired comparison's 95% CI as errorbar's asymmetric ``xerr`` (None: no interval, one pair)."""
    c = comparison
    return None if math.isnan(c["ci_low"]) else [[c["mean_diff"] - c["ci_low"]], [c["ci_high"] - c["mean_diff"]]]


def plot_differences(comparisons: dict, path: Path, baseline: str, metric: str = "val_loss",
                     what: str = "validation loss") -> Path:
    """Paired difference in ``metric`` to the baseline with its 95% CI, one row per arm, coloured by
    the Holm verdict (the node-classification report plots test accuracy with it)."""
    acts = list(comparisons)
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(acts) + 1.5))
    for i, act in enumerate(acts):
        c = comparisons[act][metric]
        err = _ci_xerr(c)
        colour = {"better": "C2", "worse": "C3"}.get(comparisons[act]["verdict"], "C7")
        ax.errorbar(c["mean_diff"], i, xerr=err, fmt="o", capsize=4, color=colour)
    ax.axvline(0, color="k", lw=1)
    ax.set_yticks(range(len(acts)), acts)
    ax.invert_yaxis()
    ax.set_xlabel(f"{what} minus {baseline}'s, paired by seed (95% CI)")
    ax.set_title("green: significantly better, red: worse, grey: no significant difference (Holm)", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def plain_log_axis(ax, axis: str = "x") -> None:
    """A log-scale axis with plain tick labels ("0.004", "5.4", "1e+15"), not matplotlib's
    mathtext powers ("5.4 x 10^0"), minor ticks labelled when the range spans under a decade."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    plain = FuncFormatter(lambda v, _: f"{v:.3g}")
    target.set_major_formatter(plain)
    low, high = (ax.get_xlim() if axis == "x" else ax.get_ylim())
    if high / low < 100:  # one decade tick or none inside: label minor ticks at 2 and 5 per decade
        target.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
        target.set_minor_formatter(plain)
    else:
        target.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def plot_lr(lr_sweep: dict, path: Path) -> Path:
    """Final loss vs LR, one panel per tuned size, one line per activation; the chosen LR is a
    filled marker, LRs added by the grid extension are hollow."""
    by_size = lr_sweep["by_size"]
    initial = lr_sweep["initial_grid"]
    lo, hi = min(initial) * (1 - 1e-9), max(initial) * (1 + 1e-9)
    cols = min(3, len(by_size))  # a ladder of sizes wraps into rows of 3 panels
    rows = math.ceil(len(by_size) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols + 1.5, 3.8 * rows + 0.4), squeeze=False)
    for ax in axes.flat[len(by_size):]:
        ax.set_visible(False)
    for ax, (size, per_act) in zip(axes.flat, by_size.items()):
        for i, (act, d) in enumerate(per_act.items()):
            grid, loss = np.array(d["grid"]), np.array(d["val_loss"], dtype=float)
            ax.plot(grid, loss, "-", color=f"C{i}", lw=1.2, label=act)
            inside = (grid >= lo) & (grid <= hi)
            ax.plot(grid[inside], loss[inside], "o", color=f"C{i}", ms=4)
            ax.plot(grid[~inside], loss[~inside], "o", color=f"C{i}", mfc="white", ms=5)
            if d["best_lr"] is not None:
                ax.plot([d["best_lr"]], [loss[d["grid"].index(d["best_lr"])]], "*", color=f"C{i}", ms=12)
        ax.set_xlabel("peak learning rate")
        plain_log_axis(ax, "x")
        ax.set_title("LR sweep" + ("" if size == "base" else f": {size}"), fontsize=10)
        ax.grid(alpha=0.3, which="both")
    fraction = lr_sweep["schedule_fraction"]
    schedule = "full schedule" if fraction == 1 else f"{fraction:g} of the schedule"
    for row in axes:
        row[0].set_ylabel(f"final val loss (seed {lr_sweep['tune_seed']}, {schedule})")
    axes[0][-1].legend(fontsize=8, title="star: chosen\nhollow: grid extension", title_fontsize=7, loc="upper left",
                       bbox_to_anchor=(1.02, 1.0))  # outside the axes: the curves fill them
    return _save(fig, path)


def _law_loss(law: dict, compute: np.ndarray) -> np.ndarray:
    if "E" in law:  # E + A C^-b
        return law["E"] + law["A"] * compute ** (-law["b"])
    return law["a"] * compute ** (-law["b"])


def plot_scaling(scaling: dict, path: Path, baseline: str) -> Path:
    """Final loss vs training compute (log-log): every seed's point, each activation's fitted law
    over the measured range (solid) and extrapolated to 100x the largest compute (dotted)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (act, pts) in enumerate(scaling["points"].items()):
        p = np.array(pts, dtype=float).reshape(-1, 2)  # (seeds * sizes, [compute, loss])
        p = p[~np.isnan(p).any(axis=1)]
        if not len(p):
            continue
        ax.scatter(p[:, 0], p[:, 1], s=12, color=f"C{i}", label=act + (" (baseline)" if act == baseline else ""))
        law = scaling.get("laws", {}).get(act)
        if law:
            inside = np.geomspace(p[:, 0].min(), p[:, 0].max(), 50)
            beyond = np.geomspace(p[:, 0].max(), 100 * p[:, 0].max(), 30)
            ax.plot(inside, _law_loss(law, inside), color=f"C{i}", lw=1.2)
            ax.plot(beyond, _law_loss(law, beyond), color=f"C{i}", lw=1, ls=":")
    kind = next(iter(scaling.get("laws", {}).values()), {}).get("kind", "")
    plain_log_axis(ax, "x")
    plain_log_axis(ax, "y")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("final validation loss")
    ax.set_title(f"Loss vs compute, fitted {kind} (dotted: extrapolation)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_scaling_residuals(scaling: dict, path: Path, baseline: str) -> Path:
    """Per size: each activation's mean residual (observed minus fitted loss) with +-2 seed
    standard errors: a law that fits lies within its bars at every size."""
    fig, ax = plt.subplots(figsize=(7, 4))
    shown = {}  # activation -> its lack-of-fit check (every comparison holds the same joint fit)
    for act, comparison in scaling["comparisons"].items():
        if "act_fit_check" in comparison:
            shown[act] = comparison["act_fit_check"]
            shown[baseline] = comparison["base_fit_check"]
    for i, act in enumerate(scaling["points"]):
        check = shown.get(act)
        if not check:
            continue
        x = np.array(check["compute"]) * (1 + 0.04 * (i - len(shown) / 2))  # side by side, not on top
        ax.errorbar(x, check["mean_residual"], yerr=2 * np.array(check["se"]), fmt="o", capsize=3, color=f"C{i}",
                    label=f"{act} (p = {check['p_value']:.2g})" if math.isfinite(check["p_value"]) else act)
    ax.axhline(0, color="k", lw=1)
    plain_log_axis(ax, "x")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("mean residual: observed - fitted loss")
    ax.set_title("Lack of fit: residuals per size, bars +-2 seed standard errors", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_scaling_multiplier(scaling: dict, path: Path, baseline: str) -> Path:
    """Compute multiplier vs the baseline's compute (log-log), with its 95% bootstrap band clipped to
    [1/30, 30] (a wider band says only "undetermined"); right of the largest measured size (the
    vertical line) it is extrapolation."""
    clip = 30.0
    fig, ax = plt.subplots(figsize=(7, 4))
    colours = {act: f"C{i}" for i, act in enumerate(scaling["points"])}  # as in scaling.png
    c_max, clipped = None, False
    for act, comparison in scaling["comparisons"].items():
        curve = sorted(comparison.get("curve", []), key=lambda m: m["compute"])
        if not curve:
            continue
        c_max = comparison["c_max"]
        x = np.array([m["compute"] for m in curve])
        value, low, high = (np.array([m[k] for m in curve], dtype=float) for k in ("value", "ci_low", "ci_high"))
        clipped |= bool(np.any(low < 1 / clip) or np.any(high > clip) or np.any(value > clip))
        ax.plot(x, np.clip(value, 1 / clip, clip), color=colours[act], label=f"{act} ({comparison['n_seeds']} seeds)")
        ax.fill_between(x, np.clip(low, 1 / clip, clip), np.clip(high, 1 / clip, clip), color=colours[act], alpha=0.2,
                        lw=0)
    ax.axhline(1, color="k", lw=1)
    plain_log_axis(ax, "x")
    plain_log_axis(ax, "y")
    if c_max:
        ax.axvline(c_max, color="0.4", lw=1, ls="--")
        ax.text(c_max, ax.get_ylim()[1], " extrapolation ->", va="top", fontsize=8, color="0.3")
    ax.set_xlabel(f"{baseline}'s training FLOPs")
    ax.set_ylabel(f"compute to reach {baseline}'s loss / {baseline}'s")
    ax.set_title("Compute multiplier (below 1: less compute than the baseline), 95% band"
                 + (f"; clipped at {clip:g}x" if clipped else ""), fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_throughput(throughput: dict, path: Path) -> Path:
    acts = list(throughput)
    ratios = [throughput[a]["ratio"] for a in acts]
    err = [[throughput[a]["ratio"] - throughput[a]["ratio_q25"] for a in acts],
           [throughput[a]["ratio_q75"] - throughput[a]["ratio"] for a in acts]]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(acts) + 1.5))
    colours = ["0.6" if throughput[a].get("control") else "C0" for a in acts]  # the noise-floor control in grey
    ax.barh(range(len(acts)), ratios, xerr=err, capsize=3, color=colours)
    ax.axvline(1, color="k", lw=1)
    ax.set_yticks(range(len(acts)), acts)
    ax.invert_yaxis()
    ref = next(iter(throughput.values()))["reference"]
    ax.set_xlabel(f"train-step tokens/s relative to {ref} (median, interquartile range)")
    return _save(fig, path)


def plot_eval_sets(eval_sets: dict, path: Path, baseline: str) -> Path:
    """Δ validation loss vs the baseline on each extra set (rows), one marker per activation with its
    paired 95% CI; filled: significant after Holm, hollow: not."""
    names = list(eval_sets)
    acts = list(next(iter(eval_sets.values()))["loss"]["comparisons"])
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) * max(1, len(acts)) ** 0.5 + 1.8))
    width = 0.7 / max(1, len(acts))
    for j, act in enumerate(acts):
        for i, name in enumerate(names):
            c = eval_sets[name]["loss"]["comparisons"][act]
            y = i + (j - (len(acts) - 1) / 2) * width
            err = _ci_xerr(c)
            significant = c["verdict"] in ("better", "worse")
            ax.errorbar(c["mean_diff"], y, xerr=err, fmt="o", capsize=3, color=f"C{j}",
                        mfc=f"C{j}" if significant else "white", label=act if i == 0 else None)
    ax.axvline(0, color="k", lw=1)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel(f"validation loss minus {baseline}'s on each set, paired by seed (95% CI)")
    ax.set_title("Extra validation sets (left of 0: lower loss; filled: significant, Holm)", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8)
    return _save(fig, path)
