"""``polycom train``: train one language model (single process, or under torchrun)."""

from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    from ..train.config import config_help, list_presets

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
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides (before or after flags)")
    source = p.add_mutually_exclusive_group()  # argparse names both flags if both are given
    source.add_argument("--config", "-c", help="a YAML config file or preset name")
    source.add_argument("--preset", choices=list_presets(), help="a packaged preset (default: tiny)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved config, parameter count, tokens per step and memory estimate, then exit")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in train.out_dir")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in train.out_dir instead of refusing to start")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..train import load_config
    from ..train.checkpoint import DiskFullError
    from .errors import USER_ERRORS, report

    overrides = list(args.overrides)
    if args.resume:
        overrides.append("train.resume=true")
    if args.overwrite:
        overrides.append("train.overwrite=true")
    try:
        cfg = load_config(args.config or args.preset or "tiny", overrides)
        if args.dry_run:
            from ..train.summary import dry_run, format_dry_run

            print(format_dry_run(cfg, dry_run(cfg)))
            return 0
        from ..train import run as train_run

        metrics = train_run(cfg)
    except KeyboardInterrupt as e:  # the trainer checkpointed and says how to resume
        print(f"polycom train: {str(e) or 'interrupted'}", file=sys.stderr)  # str(): an exception is always truthy
        return 130
    except DiskFullError as e:  # an OSError, not a user mistake: its own line and status
        print(f"polycom train: {e}", file=sys.stderr)
        return 1
    except USER_ERRORS as e:  # config, data, path and launch mistakes: one line, no traceback
        return report("polycom train", e, {args.config: "--config"})
    if metrics.status == "diverged":
        print(f"polycom train: stopped, non-finite values at step {metrics.nan_report['step']} "
              f"(report in {metrics.out_dir}/nan_report.json)", file=sys.stderr)
        return 3
    if metrics.val_loss is not None and (not metrics.info.get("world_size") or _is_main()):
        print(f"final: step {metrics.final_step}, val loss {metrics.val_loss:.4f}, "
              f"val bpb {metrics.val_bpb:.4f}, {metrics.tokens_per_s:,.0f} tokens/s, "
              f"{metrics.elapsed_s:.0f}s; run folder {metrics.out_dir}")
        for name, v in metrics.val_sets.items():
            print(f"  eval.sets.{name}: val loss {v['loss']:.4f}, val bpb {v['bpb']:.4f} ({v['tokens']:,} tokens)")
    return 0


def _is_main() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"
