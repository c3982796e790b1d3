"""The report folder: REPORT.md (verdict, setting and main table on the first screen),
PNG figures, runs.csv, summary.json, every run's resolved config, versions and machine.

Only formatting happens here: every number comes from ``analysis.analyse`` and is in
summary.json too. Files are written atomically.
"""

from __future__ import annotations

import csv
import io
import math
import platform

import torch

from ...data.tokenizer import ByteTokenizer
from ...environment import git_commit, machine_description, package_versions
from . import inside, plots
from .markdown import markdown_table
from .scaling_report import scaling_section, scaling_verdict
from ...train.files import write_json_atomic, write_text_atomic
from .records import csv_header

__all__ = ["write_report", "write_summary_json"]


def _f(v, digits: int = 4, kind: str = "f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}{kind}}"


def _ci(d: dict, digits: int = 4) -> str:
    return f"[{_f(d['ci_low'], digits)}, {_f(d['ci_high'], digits)}]"


def _verdict_lines(summary: dict) -> list[str]:
    base, lines = summary["baseline"], []
    if summary["main_size"] != "base":
        lines.append(f"At the largest size ({summary['main_size']}):")
    for act, c in summary["comparisons"].items():
        loss = c["val_loss"]
        what = c["verdict"]
        detail = (f"{_f(loss['mean_diff'])} nats/token vs {base}, 95% CI {_ci(loss)}, "
                  f"Holm-adjusted p = {_f(loss['p_holm'], 3)}, {c['n_pairs']} paired seeds")
        if what.startswith("no significant"):
            detail += f"; the sweep detects |difference| >= {_f(c['min_detectable_diff'])} with 80% power"
        lines.append(f"- **{act}: {what}** ({detail})")
    return lines


def _main_table(summary: dict) -> str:
    base, rows = summary["baseline"], []
    tp = summary.get("throughput") or {}
    for act, d in summary["per_activation"].items():
        c = summary["comparisons"].get(act)
        loss, bpb = d["val_loss"], d["val_bpb"]
        speed = _f(tp[act]["ratio"], 3) if act in tp else "n/a"
        if loss is None:
            rows.append([act, "no completed run", "", "", "", "", "", speed])
            continue
        diff = "baseline" if c is None else f"{_f(c['val_loss']['mean_diff'])} {_ci(c['val_loss'])}"
        p = "" if c is None else _f(c["val_loss"]["p_holm"], 3)
        tm = "" if c is None else _token_multiplier(c["token_multiplier"])
        rows.append([act, f"{_f(loss['mean'])} ± {_f(loss['std'])} {_ci(loss)}",
                     f"{_f(bpb['mean'])} {_ci(bpb)}", diff, p, tm, f"{d['n_ok']}/{d['n_runs']}", speed])
    header = ["activation", "val loss: mean ± std [95% CI]", "val bpb [95% CI]", f"Δ loss vs {base} [95% CI]",
              "p (Holm)", "tokens to baseline's loss", "runs ok", "tokens/s vs " + (
                  next(iter(tp.values()))["reference"] if tp else "ref")]
    return markdown_table(header, rows)


def _token_multiplier(t: dict) -> str:
    if t["n"] == 0:
        return "n/a"
    if t["n_reached"] < t["n"]:
        return f"> 1x ({t['n'] - t['n_reached']} of {t['n']} seeds never reach it)"
    ci = f" [{_f(t['ci_low'], 2)}, {_f(t['ci_high'], 2)}]" if math.isfinite(t["ci_low"]) else ""
    return f"{_f(t['value'], 2)}x{ci}"


def _vocabulary(data) -> str:
    """The vocabulary the runs used: data.vocab_size is the BPE target only (the byte tokenizer has 256)."""
    if data.tokenizer == ByteTokenizer.name:
        return f"vocab {ByteTokenizer.vocab_size}"
    if data.tokenizer == "bpe":
        return f"vocab {data.vocab_size}"
    return "the Hugging Face tokenizer's vocabulary"


def _setting(result, spec, base) -> list[str]:
    """The first screen's description of the main table's runs (in scaling mode: the largest size's)."""
    s = result.summary
    at_size = [r for r in result.records if r.size == s["main_size"]]
    any_rec = next((r for r in at_size if r.ok), at_size[0] if at_size else None)
    steps = any_rec.steps if any_rec else base.train.steps
    tokens = f"{steps * base.train.batch_size * base.data.seq_len:,}"
    size = f" (size {s['main_size']}, the largest of the ladder)" if spec.scaling else ""
    params = ", ".join(f"{a} {d['num_params']:,}" for a, d in s["per_activation"].items())
    return [
        f"- data: `{base.data.source}`, tokenizer `{base.data.tokenizer}` ({_vocabulary(base.data)}), "
        f"sequence {base.data.seq_len}",
        f"- budget{size}: {tokens} tokens per run ({steps} steps x {base.train.batch_size} x "
        f"{base.data.seq_len}); every run stops at that step (no best-checkpoint selection)",
        f"- parameters (matched; gated MLPs get 2/3 of the width): {params}",
        f"- learning rate: {_lr_line(s, spec, base)}",
        f"- seeds: {spec.seeds} per activation, paired (seed k: same data order and same initial shared weights "
        "for every activation)",
        f"- baseline: {s['baseline']} ({s['baseline_rule']})",
    ]


def _lr_line(s: dict, spec, base) -> str:
    if not spec.lr_sweep:
        return f"**shared** (optim.lr = {base.optim.lr:g} for every activation; not tuned)"
    used = ", ".join(f"{a} {_f(d['lr'], 3, 'g')}" for a, d in s["per_activation"].items())
    sweep = s["lr_sweep"]
    runs = sum(len(d["grid"]) for per_act in sweep["by_size"].values() for d in per_act.values())
    return (f"**{s['lr_policy']}**: {used}; from {runs} LR-phase runs on a x{sweep['grid_ratio']:.3g} grid "
            f"({_lr_edges(sweep)})")


def _lr_edges(sweep: dict) -> str:
    """Whether every chosen LR is interior to its (extended) grid, in words."""
    edge = [f"{a}{'' if size == 'base' else ' at ' + size} ({d['at_edge']} edge)"
            for size, per_act in sweep["by_size"].items() for a, d in per_act.items() if d["at_edge"]]
    failed = [a for per_act in sweep["by_size"].values() for a, d in per_act.items() if d["best_lr"] is None]
    words = []
    if edge:
        words.append(f"at the grid's edge after {sweep['extension_limit']} extension(s), the optimum may lie beyond: "
                     + ", ".join(edge))
    if failed:
        words.append("every LR failed, shared LR used: " + ", ".join(failed))
    return "; ".join(words) or "every optimum interior to its grid"


def write_report(result, spec, base) -> None:
    out, s = result.out, result.summary
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    base_name = s["baseline"]
    main_size = [r for r in result.records if r.size == s["main_size"]]
    figs = [plots.plot_curves(main_size, figures / "loss_curves.png", base_name),
            plots.plot_final(s["per_activation"], figures / "final_loss.png", base_name)]
    if s["comparisons"]:
        figs.append(plots.plot_differences(s["comparisons"], figures / "paired_differences.png", base_name))
    if s.get("lr_sweep"):
        figs.append(plots.plot_lr(s["lr_sweep"], figures / "lr_sweep.png"))
    if s.get("scaling"):
        figs += [plots.plot_scaling(s["scaling"], figures / "scaling.png", base_name),
                 plots.plot_scaling_residuals(s["scaling"], figures / "scaling_residuals.png", base_name),
                 plots.plot_scaling_multiplier(s["scaling"], figures / "scaling_multiplier.png", base_name)]
    if s.get("throughput"):
        figs.append(plots.plot_throughput(s["throughput"], figures / "throughput.png"))
    if s.get("eval_sets"):
        plots.plot_eval_sets(s["eval_sets"], figures / "eval_sets.png", base_name)  # shown in its own section

    across = (["", f"Across the {len(s['scaling']['sizes'])} sizes (loss vs training compute):",
               *scaling_verdict(s["scaling"], base_name)] if s.get("scaling") else [])
    md = ["# polycom compare", "", "## Verdict", "", *_verdict_lines(s), *across, "",
          "Lower loss is better. A verdict is 'better' or 'worse' only when the paired t-test, "
          "Holm-adjusted for the number of activations compared with the baseline, gives p < 0.05.", "",
          "## Setting", "", *_setting(result, spec, base), "", "## Main table", "", _main_table(s), "",
          "![validation loss](figures/loss_curves.png)", ""]
    md += _detail_sections(result, spec)
    md += inside.section(result, figures)  # effective rank and layer similarity (inside.py)
    md += ["## Figures", ""] + [f"![{p.stem}](figures/{p.name})" for p in figs[1:]] + [""]
    md += ["## Reproduce", "", f"- machine: {machine_description(torch.device('cpu'))}; {platform.node() or ''}",
           f"- git: {git_commit() or 'not a git checkout'}",
           f"- versions: {', '.join(f'{k} {v}' for k, v in package_versions().items() if v)}",
           "- every run's resolved config: `runs/<run>/config.yaml`; raw numbers: `runs.csv`, `summary.json`", ""]
    write_text_atomic(out / "REPORT.md", "\n".join(md))
    buf = io.StringIO()
    writer = csv.writer(buf)
    set_names = list(s.get("eval_sets") or {})
    downstream_keys = list(s.get("downstream") or {})
    writer.writerow(csv_header(set_names, downstream_keys))
    for r in result.lr_records + result.records:
        writer.writerow(r.csv_row(set_names, downstream_keys))
    write_text_atomic(out / "runs.csv", buf.getvalue())


def write_summary_json(result, spec, base) -> None:
    """Every number of the report, and the sweep's timings; written last, once the report's own time is known."""
    s = result.summary
    write_json_atomic(result.out / "summary.json", {
        "summary": s, "timings": result.timings, "states": result.states, "spec": spec.to_dict(),
        "base_config": base.to_dict(), "versions": package_versions(), "git": git_commit(),
        "machine": machine_description(torch.device("cpu")),
        "runs": [r.to_dict() for r in result.lr_records + result.records]})


def _noise_floor(tp: dict) -> list[str]:
    control = next((t for t in tp.values() if t.get("control")), None)
    if control is None:
        return []
    floor = max(abs(control["ratio"] - 1), abs(control["ratio_q25"] - 1), abs(control["ratio_q75"] - 1))
    return ["", f"Noise floor: a second, independently built copy of {control['reference']} measured "
                f"{control['ratio']:.3f} [{control['ratio_q25']:.3f}, {control['ratio_q75']:.3f}] of the first. Speed "
                f"ratios within about ±{floor:.3f} of 1 cannot be told apart from equal speed on this machine."]


def _detail_sections(result, spec) -> list[str]:
    s, base = result.summary, result.summary["baseline"]
    rows = []
    for act, c in s["comparisons"].items():
        loss = c["val_loss"]
        rows.append([act, _f(loss["mean_diff"]), _f(loss["se_paired"]), _f(loss["se_unpaired"]),
                     _f(loss["p_value"], 3), _f(loss["p_permutation"], 3), _f(loss["prob_improvement"], 2),
                     _f(c["min_detectable_diff"]), c["seeds_needed_for_observed"]])
    out = ["## Paired statistics", "",
           markdown_table(["activation", f"Δ vs {base}", "SE paired", "SE unpaired", "p (t, raw)", "p (sign-flip, exact)",
                   "P(improvement)", "min. detectable Δ (80% power)", "seeds for observed Δ"], rows), "",
           "SE paired vs unpaired: how much of the seed noise the paired design removed. The exact sign-flip "
           f"test cannot go below 2/2^n (= {2 / 2 ** spec.seeds:.3f} with {spec.seeds} seeds): a robustness check, "
           "not the test behind the verdict. 'seeds for observed Δ': seeds the paired t-test would need to detect "
           "the observed difference with 80% power (-1: not computable).", ""]
    tp = s.get("throughput")
    if tp:
        out += ["## Speed and memory (measured side by side)", "",
                markdown_table(["activation", "tokens/s", "ratio [IQR]", "memory", "params", "MFLOPs/token"],
                       [[a, f"{t['tokens_per_s']:,.0f}", f"{t['ratio']:.3f} [{t['ratio_q25']:.3f}, {t['ratio_q75']:.3f}]",
                         f"{t['memory_bytes'] / 2**20:.1f} MiB", f"{t['num_params']:,}",
                         f"{t['flops_per_token'] / 1e6:.2f}"] for a, t in tp.items()]), "",
                f"{spec.throughput_rounds} interleaved train steps per activation in one process; memory is "
                f"{next(iter(tp.values()))['memory_kind']}.", *_noise_floor(tp), ""]
    if s.get("lr_sweep"):
        out += _lr_section(s["lr_sweep"])
    if s.get("scaling"):
        out += scaling_section(s["scaling"], base)
    out += _eval_sets_section(s) + _downstream_section(s)
    failed = [(a, f) for a, d in s["per_activation"].items() for f in d["not_ok"]]
    if failed:
        out += ["## Runs that did not complete", ""] + [f"- {a} seed {f['seed']}: {f['status']} {f['error']}"
                                                         for a, f in failed] + [""]
    return out


def _schedule(fraction: float) -> str:
    return "its size's full schedule (that of the main runs)" if fraction == 1 else \
        f"{fraction:g} of its size's schedule (a shortened proxy)"


def _lr_section(sweep: dict) -> list[str]:
    rows = [[a, size, _f(d["best_lr"], 3, "g"), _f(d["lowest_loss_lr"], 3, "g"), _f(d["lr_used"], 3, "g"),
             len(d["grid"]),
             f"{_f(min(d['grid']), 3, 'g')}-{_f(max(d['grid']), 3, 'g')}", d["at_edge"] or "interior",
             _f(d["sensitivity"])]
            for size, per_act in sweep["by_size"].items() for a, d in per_act.items()]
    lines = ["## Learning rates", "",
             markdown_table(["activation", "size", "chosen LR", "lowest loss at", "LR of the main runs", "grid points",
                     "grid range",
                     "chosen LR at", "sensitivity (Δ loss one grid step away)"], rows), "",
             f"Each LR-phase run trains {_schedule(sweep['schedule_fraction'])} with seed "
             f"{sweep['tune_seed']}; a best LR on the grid's edge extends the grid by one x{sweep['grid_ratio']:.3g} "
             f"step, up to {sweep['extension_limit']} per side. The chosen LR is the smallest within "
             f"{sweep['tie_tolerance']:g} nats of the lowest loss (one seed cannot separate closer LRs, and above the "
             "optimum the next seed may spike); 'lowest loss at' is the plain argmin. Sensitivity: the mean extra "
             "final loss at the chosen LR's grid neighbours, one run each (seed noise included)."]
    if sweep.get("interpolated"):
        lines += ["", "Sizes not tuned, LR interpolated in log-size: " + "; ".join(
            f"{size}: " + ", ".join(f"{a} {_f(lr, 3, 'g')}" for a, lr in lrs.items())
            for size, lrs in sweep["interpolated"].items())]
    return lines + [""]


def _mean_ci(d: dict | None) -> str:
    return "n/a" if d is None else f"{_f(d['mean'])} ± {_f(d['std'])} {_ci(d)}"


def _diff(c: dict | None) -> str:
    return "baseline" if c is None else f"{_f(c['mean_diff'])} {_ci(c)}"


def _eval_sets_section(s: dict) -> list[str]:
    """The extra validation sets: one row per set with every activation's Δ loss, then the details."""
    sets, base = s.get("eval_sets"), s["baseline"]
    if not sets:
        return []
    others = [a for a in s["per_activation"] if a != base]
    marks = {"better": " **better**", "worse": " **worse**"}
    rows = []
    for name, t in sets.items():
        loss = t["loss"]
        rows.append([name, _mean_ci(loss["per_activation"][base])]
                    + [f"{_diff(loss['comparisons'][a])}, p {_f(loss['comparisons'][a]['p_holm'], 3)}"
                       f"{marks.get(loss['comparisons'][a]['verdict'], '')}" for a in others])
    tally = s["eval_sets_tally"]
    rows.append(["**better / worse on**", ""] + [f"{tally[a]['better']} / {tally[a]['worse']} of {tally[a]['n_sets']} sets"
                                                 for a in others])
    detail = [[name, act, _mean_ci(t["loss"]["per_activation"][act]), _mean_ci(t["bpb"]["per_activation"][act]),
               _diff(t["loss"]["comparisons"].get(act)), _diff(t["bpb"]["comparisons"].get(act)),
               "" if act == base else _f(t["loss"]["comparisons"][act]["p_holm"], 3)]
              for name, t in sets.items() for act in s["per_activation"]]
    return ["## Extra validation sets (eval.sets)", "",
            markdown_table(["set", f"{base} (baseline) loss [95% CI]"]
                           + [f"{a}: Δ loss vs {base} [95% CI], p (Holm)" for a in others], rows), "",
            "Each set is held out whole (never trained on) and scored at the last step on the same windows by every "
            "run. Δ is paired by seed; Holm's adjustment is over the activations compared on that set, so 'better on "
            "every set' needs each set's test at p < 0.05 (an intersection-union test: no correction across sets is "
            "needed for an 'all sets' claim, but 'better on some set' would need one).", "",
            markdown_table(["set", "activation", "loss: mean ± std [95% CI]", "bpb: mean ± std [95% CI]",
                    f"Δ loss vs {base} [95% CI]", f"Δ bpb vs {base} [95% CI]", "p loss (Holm)"], detail), "",
            "![extra validation sets](figures/eval_sets.png)", ""]


def _downstream_section(s: dict) -> list[str]:
    tables, base = s.get("downstream"), s["baseline"]
    if not tables:
        return []
    rows = [[key, act, _mean_ci(t["per_activation"][act]), _diff(t["comparisons"].get(act)),
             "" if act == base else _f(t["comparisons"][act]["p_holm"], 3)]
            for key, t in tables.items() for act in s["per_activation"]]
    return ["## Downstream tasks (--eval-tasks)", "",
            markdown_table(["task / metric", "activation", "mean ± std [95% CI over seeds]", f"Δ vs {base} [95% CI]",
                    "p (Holm)"], rows), "",
            "lm-evaluation-harness on every run's final checkpoint (each run folder's eval.json). Higher is better "
            "for accuracies, lower for perplexities and bits per byte; Δ is paired by seed, Holm over the "
            "activations per task and metric.", ""]
