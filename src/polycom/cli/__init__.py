"""The ``polycom`` command. Thin: it parses arguments and calls the library.

Each subcommand lives in its own module here and exposes ``register(subparsers)``, which adds its parser
and sets ``func``; a new command is one module plus one line in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Module names under polycom.cli, in the order `polycom --help` lists them.
COMMANDS = ("activations", "models", "train", "compare")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polycom", description="Polynomial composition activations for PyTorch")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
