"""``polycom compare``: the seeded, paired activation comparison and its report."""

from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    from ..experiments.compare.spec import list_sweep_presets

    p = sub.add_parser(
        "compare", help="compare activations: seeded, paired, parameter-matched sweep with a report",
        description="Train every activation x seed on the same data, token budget and parameter count, then "
                    "write REPORT.md, figures, runs.csv and summary.json to --out. Rerun the same command to "
                    "resume. KEY=VALUE overrides apply to every run, as in `polycom train`. See docs/compare.md.")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every run (before or after flags)")
    p.add_argument("--preset", default="tiny", help=f"sweep preset ({', '.join(list_sweep_presets())}) or YAML path")
    p.add_argument("--out", help="report folder (default reports/compare-PRESET)")
    p.add_argument("--activations", help="comma-separated registry names (default: the preset's)")
    p.add_argument("--seeds", type=int, help="seeds per activation")
    p.add_argument("--baseline", help="reference activation (default auto: best of relu/gelu/swiglu/relu2)")
    p.add_argument("--data", help="corpus for every run (same as data.source=...)")
    p.add_argument("--lr-sweep", action=argparse.BooleanOptionalAction, default=None,
                   help="tune each activation's LR on a grid first (default: the preset's; tiny and scaling do); "
                        "--no-lr-sweep: one shared LR (optim.lr)")
    p.add_argument("--lr-grid", help="comma-separated LRs for --lr-sweep")
    p.add_argument("--scaling", action="store_true", help="train at the preset's model sizes; fit loss vs compute "
                                                          "(the study: --preset scaling)")
    p.add_argument("--jobs", type=int, help="runs at once (CPU threads or GPUs split between them)")
    p.add_argument("--launcher", help="local (default), submitit (Slurm) or submitit-local")
    p.add_argument("--nodes", type=int, help="machines per run (default: the preset's, else 1; needs --launcher submitit)")
    p.add_argument("--tasks-per-node", type=int, help="processes per run and machine, one per GPU (default: the "
                                                      "preset's, else 1; several need a submitit launcher)")
    p.add_argument("--throughput-rounds", type=int, help="interleaved steps per activation (0 = skip)")
    p.add_argument("--eval-tasks", help="comma-separated lm-eval tasks run on every run after training, e.g. "
                                        "polycom_cloze,polycom_bpb (needs polycom[eval]); adds a downstream table")
    p.add_argument("--eval-limit", type=int, help="documents per task for --eval-tasks (default: all)")
    p.add_argument("--dry-run", action="store_true", help="print every run's config, size and cost; train nothing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..experiments.compare.spec import SweepSpec, load_sweep_preset
    from .errors import USER_ERRORS, report

    try:
        settings = load_sweep_preset(args.preset)
        overrides = list(settings.pop("overrides", [])) + list(args.overrides)
        if args.data:
            overrides.append(f"data.source={args.data}")
        flags = {"activations": args.activations.split(",") if args.activations is not None else None,
                 "seeds": args.seeds, "baseline": args.baseline, "lr_sweep": args.lr_sweep,
                 "lr_grid": _floats(args.lr_grid, "--lr-grid") if args.lr_grid else None,
                 "scaling": args.scaling or None, "jobs": args.jobs, "launcher": args.launcher,
                 "nodes": args.nodes, "tasks_per_node": args.tasks_per_node,
                 "throughput_rounds": args.throughput_rounds, "eval_limit": args.eval_limit,
                 "eval_tasks": [t.strip() for t in args.eval_tasks.split(",")] if args.eval_tasks is not None else None}
        settings.update({k: v for k, v in flags.items() if v is not None})
        if settings.get("activations") == [""]:
            settings["activations"] = []
        spec = SweepSpec(overrides=overrides, **settings)
        out = args.out or f"reports/compare-{args.preset}"
        if args.dry_run:
            from ..experiments.compare.dry_run import format_dry_run

            print(format_dry_run(spec, out))
            return 0
        from ..experiments.compare.sweep import compare

        result = compare(spec, out)
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: finished runs are kept, the same command continues
        print(f"polycom compare: {str(e) or 'interrupted'}; rerun the same command to continue the sweep "
              "(finished runs are kept)", file=sys.stderr)
        return 130
    except USER_ERRORS as e:  # config, data, path and launch mistakes: one line, no traceback
        return report("polycom compare", e, {args.preset: "--preset", args.out: "--out"})
    t = result.timings
    print(f"report: {result.out / 'REPORT.md'} (runs trained {t['runs_training_s']:.0f}s in all; planning and "
          f"report {100 * t['overhead_share']:.1f}% of that, throughput measurement {100 * t['throughput_share']:.1f}%)")
    for act, c in result.summary["comparisons"].items():
        print(f"  {act} vs {result.summary['baseline']}: {c['verdict']} "
              f"(delta {c['val_loss']['mean_diff']:+.4f}, Holm p {c['val_loss']['p_holm']:.3g})")
    return 0


def _floats(text: str, flag: str) -> list[float]:
    from ..train import ConfigError

    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"{flag}: expected comma-separated numbers, got {text!r}") from None
