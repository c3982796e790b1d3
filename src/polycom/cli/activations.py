"""``polycom activations``: list the registered activations."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("activations", help="list the registered activations")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..registry import _REGISTRY

    for name in sorted(_REGISTRY):
        info = _REGISTRY[name]
        kind = "gated" if info.gated else "plain"
        print(f"{name:16s} {kind:6s} {info.description}")
    return 0
