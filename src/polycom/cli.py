"""The ``polycom`` command. Thin: it parses arguments and calls the library."""

from __future__ import annotations

import argparse
import sys


def _cmd_activations(args: argparse.Namespace) -> int:
    from .registry import _REGISTRY

    for name in sorted(_REGISTRY):
        info = _REGISTRY[name]
        kind = "gated" if info.gated else "plain"
        print(f"{name:16s} {kind:6s} {info.description}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import ConfigError, load_config

    overrides = list(args.overrides)
    if args.resume:
        overrides.append("train.resume=true")
    try:
        cfg = load_config(args.config or args.preset or "tiny", overrides)
        if args.dry_run:
            from .train.summary import dry_run, format_dry_run

            print(format_dry_run(cfg, dry_run(cfg)))
            return 0
        from .train import run

        metrics = run(cfg)
    except ConfigError as e:
        print(f"polycom train: config error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # DataError and other input problems: report, no traceback
        print(f"polycom train: error: {e}", file=sys.stderr)
        return 2
    if metrics.status == "diverged":
        print(f"polycom train: stopped, non-finite values at step {metrics.nan_report['step']} "
              f"(report in {metrics.out_dir}/nan_report.json)", file=sys.stderr)
        return 3
    if metrics.val_loss is not None and (not metrics.info.get("world_size") or _is_main()):
        print(f"final: step {metrics.final_step}, val loss {metrics.val_loss:.4f}, "
              f"val bpb {metrics.val_bpb:.4f}, {metrics.tokens_per_s:,.0f} tokens/s, "
              f"{metrics.elapsed_s:.0f}s; run folder {metrics.out_dir}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .experiments.compare.spec import SweepSpec, load_sweep_preset
    from .train import ConfigError

    try:
        settings = load_sweep_preset(args.preset)
        overrides = list(settings.pop("overrides", [])) + list(args.overrides)
        if args.data:
            overrides.append(f"data.source={args.data}")
        flags = {"activations": args.activations.split(",") if args.activations is not None else None,
                 "seeds": args.seeds, "baseline": args.baseline, "lr_sweep": args.lr_sweep or None,
                 "lr_grid": _floats(args.lr_grid, "--lr-grid") if args.lr_grid else None,
                 "scaling": args.scaling or None, "jobs": args.jobs, "launcher": args.launcher,
                 "throughput_rounds": args.throughput_rounds}
        settings.update({k: v for k, v in flags.items() if v is not None})
        if settings.get("activations") == [""]:
            settings["activations"] = []
        spec = SweepSpec(overrides=overrides, **settings)
        out = args.out or f"reports/compare-{args.preset}"
        if args.dry_run:
            from .experiments.compare.dry_run import format_dry_run

            print(format_dry_run(spec, out))
            return 0
        from .experiments.compare.sweep import compare

        result = compare(spec, out)
    except ConfigError as e:
        print(f"polycom compare: config error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"polycom compare: error: {e}", file=sys.stderr)
        return 2
    print(f"report: {result.out / 'REPORT.md'}")
    for act, c in result.summary["comparisons"].items():
        print(f"  {act} vs {result.summary['baseline']}: {c['verdict']} "
              f"(delta {c['val_loss']['mean_diff']:+.4f}, Holm p {c['val_loss']['p_holm']:.3g})")
    return 0


def _floats(text: str, flag: str) -> list[float]:
    from .train import ConfigError

    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"{flag}: expected comma-separated numbers, got {text!r}") from None


def _is_main() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polycom", description="Polynomial composition activations for PyTorch")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("activations", help="list the registered activations")
    p.set_defaults(func=_cmd_activations)

    from .train.config import config_help, list_presets

    p = sub.add_parser(
        "train",
        help="train a language model (single process, or under torchrun with DDP/FSDP2)",
        description="Train a decoder LM with a polycom activation. Settings come from a preset or YAML file, "
                    "then KEY=VALUE overrides (e.g. model.activation=polynorm optim.lr=3e-4). "
                    "Multi-process: torchrun --nproc_per_node N -m polycom.cli train ...",
        epilog="config keys (defaults of the dataclasses; a preset overrides some, --dry-run shows the result):\n"
               + config_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    p.add_argument("--config", "-c", help="a YAML config file or preset name")
    p.add_argument("--preset", choices=list_presets(), help="a packaged preset (default: tiny)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved config, parameter count and tokens per step, then exit")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in train.out_dir")
    p.set_defaults(func=_cmd_train)

    from .experiments.compare.spec import list_sweep_presets

    p = sub.add_parser(
        "compare", help="compare activations: seeded, paired, parameter-matched sweep with a report",
        description="Train every activation x seed on the same data, token budget and parameter count, then "
                    "write REPORT.md, figures, runs.csv and summary.json to --out. Rerun the same command to "
                    "resume. KEY=VALUE overrides apply to every run, as in `polycom train`. See docs/compare.md.")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every run")
    p.add_argument("--preset", default="tiny", help=f"sweep preset ({', '.join(list_sweep_presets())}) or YAML path")
    p.add_argument("--out", help="report folder (default reports/compare-PRESET)")
    p.add_argument("--activations", help="comma-separated registry names (default: the preset's)")
    p.add_argument("--seeds", type=int, help="seeds per activation")
    p.add_argument("--baseline", help="reference activation (default auto: best of relu/gelu/swiglu/relu2)")
    p.add_argument("--data", help="corpus for every run (same as data.source=...)")
    p.add_argument("--lr-sweep", action="store_true", help="tune each activation's LR on a grid first")
    p.add_argument("--lr-grid", help="comma-separated LRs for --lr-sweep")
    p.add_argument("--scaling", action="store_true", help="train at the preset's model sizes; fit loss vs compute")
    p.add_argument("--jobs", type=int, help="runs at once (CPU threads or GPUs split between them)")
    p.add_argument("--launcher", help="local (default), submitit (Slurm) or submitit-local")
    p.add_argument("--throughput-rounds", type=int, help="interleaved steps per activation (0 = skip)")
    p.add_argument("--dry-run", action="store_true", help="print every run's config, size and cost; train nothing")
    p.set_defaults(func=_cmd_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
