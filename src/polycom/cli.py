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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polycom", description="Polynomial composition activations for PyTorch")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("activations", help="list the registered activations")
    p.set_defaults(func=_cmd_activations)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
