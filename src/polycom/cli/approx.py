"""``polycom approx``: the approximation theory of PolyCom, measured (see docs/approx.md)."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "approx", help="approximation rates, exactness checks and width asymptotics of PolyCom networks",
        description="Fit MLPs with each activation to target functions and report test RMSE vs parameter count "
                    "with fitted log-log slopes (default part), check the exact constructions of the theory "
                    "(--theory), or measure weight/NTK change vs width (--width). Writes markdown, JSON and "
                    "PNGs to --out. See docs/approx.md.")
    p.add_argument("--theory", action="store_true", help="run the exactness checks and the sawtooth construction")
    p.add_argument("--width", action="store_true", help="run the width study (weight and NTK change vs width)")
    p.add_argument("--rates", action="store_true", help="run the rate sweep (the default when no part is named)")
    p.add_argument("--all", action="store_true", help="run all three parts")
    p.add_argument("--quick", action="store_true", help="small grids: a smoke run in under a minute")
    p.add_argument("--out", help="output folder (default reports/approx, or reports/approx-quick)")
    p.add_argument("--targets", help="comma-separated target names (rates)")
    p.add_argument("--activations", help="comma-separated registry names (rates)")
    p.add_argument("--dims", help="comma-separated input dimensions in 1..8 (rates)")
    p.add_argument("--widths", help="comma-separated hidden widths (rates)")
    p.add_argument("--depth", type=int, help="hidden layers of the rate-sweep MLP")
    p.add_argument("--steps", type=int, help="L-BFGS iterations (rates) and GD steps (width)")
    p.add_argument("--seeds", type=int, help="seeds per configuration")
    p.add_argument("--ntk-activations",
                   help="comma-separated activations for --width (monomial2, monomial3 or a plain registry name)")
    p.add_argument("--ntk-widths", help="comma-separated widths for --width")
    p.set_defaults(func=run)


def _names(text: str | None) -> tuple | None:
    return None if text is None else tuple(v.strip() for v in text.split(",") if v.strip())


def _ints(text: str | None, flag: str) -> tuple | None:
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{flag}: expected comma-separated integers, got {text!r}") from None


def _specs(args: argparse.Namespace):
    from ..experiments.approx.sweep import RateSpec, WidthSpec, quick

    rates, width = RateSpec(), WidthSpec()
    if args.quick:
        rates, width = quick(rates, width)
    given = {"targets": _names(args.targets), "activations": _names(args.activations),
             "dims": _ints(args.dims, "--dims"), "widths": _ints(args.widths, "--widths"), "seeds": args.seeds}
    rates = replace(rates, **{k: v for k, v in given.items() if v is not None})
    fit = {"depth": args.depth, "steps": args.steps}
    rates = replace(rates, fit=replace(rates.fit, **{k: v for k, v in fit.items() if v is not None}))
    given = {"activations": _names(args.ntk_activations), "widths": _ints(args.ntk_widths, "--ntk-widths"),
             "seeds": args.seeds}
    width = replace(width, **{k: v for k, v in given.items() if v is not None})
    if args.steps is not None:
        width = replace(width, settings=replace(width.settings, steps=args.steps))
    return rates, width


def run(args: argparse.Namespace) -> int:
    from ..experiments.approx import report, sweep

    parts = {"rates": args.rates or args.all, "theory": args.theory or args.all, "width": args.width or args.all}
    if not any(parts.values()):
        parts["rates"] = True
    try:
        rates, width = _specs(args)
        if parts["rates"]:
            sweep.validate_rates(rates)
        if parts["width"]:
            sweep.validate_width(width)
    except ValueError as e:
        print(f"polycom approx: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out or ("reports/approx-quick" if args.quick else "reports/approx"))
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    written = []
    if parts["theory"]:
        checks, saw = sweep.run_theory()
        written += report.write_theory(checks, saw, out)
        failed = [c.name for c in checks if not c.passed]
        print(f"theory: {len(checks) - len(failed)}/{len(checks)} exactness checks pass"
              + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    if parts["rates"]:
        written += report.write_rates(sweep.run_rates(rates), rates, out)
    if parts["width"]:
        written += report.write_width(sweep.run_width(width), width, out)
    print(f"wrote {', '.join(str(p) for p in written)} ({time.perf_counter() - start:.1f} s)")
    return 0 if not parts["theory"] or not failed else 1
