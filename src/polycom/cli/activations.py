"""``polycom activations``: list the registered activations."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("activations", help="list the registered activations")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..registry import registered

    for info in registered():
        print(f"{info.name:18s} {info.mlp_kind:6s} {info.description}")
    return 0
