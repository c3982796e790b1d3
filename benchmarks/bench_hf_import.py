"""What registering polycom with transformers' Auto classes would cost ``import polycom``.

Each statement runs in a fresh interpreter (so nothing is cached in ``sys.modules``), the
statements interleaved round by round; the median wall time of each and its ratio to
``import polycom`` are printed side by side. The question (docs/evaluation.md): may
``import polycom`` import ``polycom.hf`` (which imports transformers' modeling code), or
must the registration wait until the program imports transformers' Auto model classes
(``polycom.import_hooks``; the chosen way)?

    PYTHONPATH=src python benchmarks/bench_hf_import.py --rounds 7
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

STATEMENTS = {
    "import polycom": "import polycom",
    "import polycom, polycom.hf (eager registration, not chosen)": "import polycom, polycom.hf",
    "import polycom; import transformers (lazy: hook waits)": "import polycom, transformers",
    "import polycom; from transformers import AutoModelForCausalLM (lazy: hook registers)":
        "import polycom; from transformers import AutoModelForCausalLM",
    "import polycom; from transformers import AutoModelForCausalLM, PreTrainedModel (from_pretrained's imports)":
        "import polycom; from transformers import AutoModelForCausalLM, PreTrainedModel",
}


def measure(rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in STATEMENTS}
    for _ in range(rounds):
        for name, stmt in STATEMENTS.items():
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", stmt], check=True)
            times[name].append(time.perf_counter() - t0)
    return times


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    times = measure(args.rounds)
    ref = statistics.median(times["import polycom"])
    print(f"| statement (fresh interpreter, median of {args.rounds}) | seconds | vs import polycom |")
    print("|---|---|---|")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"| {name} | {m:.3f} | {m / ref:.2f} |")


if __name__ == "__main__":
    main()
