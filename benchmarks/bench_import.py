"""How long ``import polycom`` takes against ``import torch`` (issue 21: at most 1.15x).

Every sample is a fresh interpreter that times its one import with ``perf_counter`` (the
interpreter's own start-up, the same for both, is left out). The two statements alternate
round by round, which one goes first alternating too, so a noisy neighbour slows both alike;
the median of each, and the median and interquartile range of the per-round ratios, are
printed with the machine.

    PYTHONPATH=src python benchmarks/bench_import.py --rounds 40
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys

STATEMENTS = {"import torch": "import torch", "import polycom": "import polycom"}
LIMIT = 1.15  # issue 21's bound on the ratio

_TIMED = "import time; t0 = time.perf_counter(); {stmt}; print(time.perf_counter() - t0)"


def import_seconds(stmt: str) -> float:
    """Seconds that ``stmt`` takes in a fresh interpreter, timed inside it."""
    out = subprocess.run([sys.executable, "-c", _TIMED.format(stmt=stmt)], check=True, capture_output=True,
                         text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    return float(out.stdout.strip().splitlines()[-1])


def measure(rounds: int) -> dict[str, list[float]]:
    """``rounds`` samples of each statement; sample i of both comes from round i."""
    times: dict[str, list[float]] = {name: [] for name in STATEMENTS}
    names = list(STATEMENTS)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(import_seconds(STATEMENTS[name]))
    return times


def ratio_summary(polycom: list[float], torch: list[float]) -> tuple[float, float, float]:
    """Median and quartiles of the per-round ratios polycom / torch."""
    ratios = [a / b for a, b in zip(polycom, torch)]
    if len(ratios) < 2:
        return ratios[0], ratios[0], ratios[0]
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return median, q1, q3


def report(times: dict[str, list[float]]) -> str:
    rounds = len(times["import torch"])
    median, q1, q3 = ratio_summary(times["import polycom"], times["import torch"])
    torch_version = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"],
                                   capture_output=True, text=True, check=True).stdout.strip()
    lines = [f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
             f"python {platform.python_version()}; torch {torch_version}; {rounds} interleaved rounds",
             "", "| statement (fresh interpreter) | median s | min s |", "|---|---|---|"]
    for name, ts in times.items():
        lines.append(f"| {name} | {statistics.median(ts):.3f} | {min(ts):.3f} |")
    verdict = "within" if median <= LIMIT else "over"
    lines += ["", f"import polycom / import torch: {median:.3f} (per-round ratios, quartiles [{q1:.3f}, {q3:.3f}]); "
              f"{verdict} the {LIMIT}x bound"]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=40)
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"argument --rounds must be >= 1, got {args.rounds}")
    print(report(measure(args.rounds)))


if __name__ == "__main__":
    main()
