"""The ``polycom`` command. Thin: it parses arguments and calls the library.

Each subcommand lives in its own module here and exposes ``register(subparsers)``, which adds its parser
and sets ``func``; a new command is one module plus one line in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import signal
import sys
import threading

from ..extras import MissingExtraError, missing_extra
from .errors import report

# Module names under polycom.cli, in the order `polycom --help` lists them.
COMMANDS = ("activations", "models", "train", "compare", "analyze", "approx", "export", "generate", "eval", "graph")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polycom", description="Polynomial composition activations for PyTorch")
    parser.add_argument("--version", action="version", version=f"polycom {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            importlib.import_module(f"{__name__}.{name}").register(sub)
        except ImportError as e:  # a core install without the extra this command needs
            error = missing_extra(e, "this command")
            if error is None:
                raise
            _register_unavailable(sub, name, error)
    for command in sub.choices.values():
        command.set_defaults(command_parser=command)  # main() reports stray arguments with its usage
    return parser


def _register_unavailable(sub, name: str, error: MissingExtraError) -> None:
    """``polycom NAME ...`` for a command whose extra is missing: any arguments, one line, exit status 2."""
    command = sub.add_parser(name, help=f"(needs pip install 'polycom[{error.extra}]')", add_help=False)
    command.set_defaults(func=lambda args: report(f"polycom {name}", error), unavailable=True)


def version() -> str:
    """The installed distribution's version; the package's own when run from a source tree."""
    try:
        return importlib.metadata.version("polycom")
    except importlib.metadata.PackageNotFoundError:
        from .. import __version__

        return __version__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "unavailable", False):  # its own arguments are unknown here: name the extra instead
        return args.func(args)
    # KEY=VALUE overrides may come after flags (`polycom train train.steps=10 --dry-run train.seed=1`):
    # argparse fills the positional list once, so the ones after a flag come back as extras.
    overrides = [t for t in extra if _is_override(t)]
    unknown = [t for t in extra if not _is_override(t)]
    if unknown or (overrides and not hasattr(args, "overrides")):
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown or overrides)}")
    if overrides:
        args.overrides = list(args.overrides) + overrides
    # SIGTERM (Slurm's and Kubernetes' stop, torchrun's teardown) is handled as Ctrl-C: the trainer
    # checkpoints the last completed step, the run folder's lock is released, and one line is printed.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
    try:
        return args.func(args)
    except ImportError as e:  # a feature that imports an extra's module only when it runs
        error = missing_extra(e, "this command")
        if error is None:
            raise
        return report(f"polycom {args.command}", error)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


def _is_override(token: str) -> bool:
    return not token.startswith("-") and "=" in token


if __name__ == "__main__":
    sys.exit(main())
