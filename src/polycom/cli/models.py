"""``polycom models``: the model presets with their widths, parameter counts and FLOPs per token."""

from __future__ import annotations

import argparse

DEFAULT_ACTIVATIONS = "relu,gelu,swiglu,polyrelu,polynorm,gated_polynorm"


def register(sub) -> None:
    from ..models.presets import PRESETS

    p = sub.add_parser("models", help="list the model presets with their sizes per activation",
                       description="A markdown table: MLP width (parameter-matched per activation), "
                                   "parameters, non-embedding and active parameters, FLOPs per token.")
    p.add_argument("presets", nargs="*", default=list(PRESETS), help=f"any of {', '.join(PRESETS)}")
    p.add_argument("--activations", default=DEFAULT_ACTIVATIONS, help="comma-separated registry names")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from ..models.presets import preset_table

    try:  # unknown presets and activations raise ValueError naming the valid ones
        print(preset_table(args.presets, args.activations.split(",")))
    except ValueError as e:
        print(f"polycom models: error: {e}", file=sys.stderr)
        return 2
    return 0
