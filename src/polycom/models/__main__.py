"""Print the presets with their sizes: ``python -m polycom.models [preset ...] [--activations a,b]``."""

from __future__ import annotations

import argparse

import torch

from .presets import PRESETS, model_config
from .transformer import build_model

DEFAULT_ACTIVATIONS = "relu,gelu,swiglu,polyrelu,polynorm,gated_polynorm"


def preset_table(presets: list[str], activations: list[str]) -> str:
    """Markdown table of width, parameters and FLOPs/token per preset and activation."""
    rows = ["| preset | activation | MLP width | params | non-embedding | active/token | FLOPs/token |",
            "|---|---|---|---|---|---|---|"]
    for name in presets:
        for act in activations:
            cfg = model_config(name, activation=act)
            with torch.device("meta"):  # sizes only: no memory, no init
                model = build_model(cfg)
            width = f"{cfg.expert_hidden}/expert" if cfg.moe else str(cfg.mlp_hidden)
            rows.append(f"| {name} | {act} | {width} | {model.num_params():,} | "
                        f"{model.num_params(exclude_embeddings=True):,} | {model.num_active_params():,} | "
                        f"{model.flops_per_token():.3g} |")
    return "\n".join(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m polycom.models", description=__doc__)
    parser.add_argument("presets", nargs="*", default=list(PRESETS), help=f"any of {list(PRESETS)}")
    parser.add_argument("--activations", default=DEFAULT_ACTIVATIONS, help="comma-separated registry names")
    args = parser.parse_args(argv)
    print(preset_table(args.presets, args.activations.split(",")))


if __name__ == "__main__":
    main()
