"""`polycom compare --jobs N`: does running N runs at once beat running them one after another?

    python benchmarks/bench_compare_jobs.py [--jobs 1,2] [--repeats 2] [--steps 60] [KEY=VALUE ...]

The same small sweep (the tiny preset's model, 2 activations x 2 seeds, ``--steps`` steps, no
throughput measurement) is trained into a fresh folder once per ``--jobs`` value, the values
alternated ``--repeats`` times in the order A B B A ... so a drift of the machine's load hits both
alike. Prints the wall time of the training phase per setting (median over repeats) and its ratio
to the first setting, with the machine. With jobs > 1 the CPU threads are split between the runs
(``execute.worker_resources``); on a GPU machine each run gets a GPU instead.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from polycom.environment import machine_description
from polycom.experiments.compare.spec import SweepSpec, load_sweep_preset
from polycom.experiments.compare.sweep import compare


def sweep_seconds(jobs: int, steps: int, extra: list[str], cache: Path) -> float:
    preset = load_sweep_preset("tiny")
    overrides = [*preset["overrides"], f"train.steps={steps}", f"data.cache_dir={cache}", *extra]
    spec = SweepSpec(train_config=preset["train_config"], overrides=overrides, activations=["gelu", "polynorm"],
                     seeds=2, eval_points=2, throughput_rounds=0, jobs=jobs)
    with tempfile.TemporaryDirectory() as out:
        result = compare(spec, Path(out) / "sweep", say=lambda *a: None)
    assert all(s == "done" for s in result.states.values()), result.states
    return result.timings["training_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", default="1,2", help="comma-separated --jobs values to compare")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("overrides", nargs="*", help="extra KEY=VALUE overrides for every run")
    args = p.parse_args()
    settings = [int(j) for j in args.jobs.split(",")]
    print(f"machine: {machine_description(torch.device('cpu'))}; torch {torch.__version__}")
    times: dict[int, list[float]] = {j: [] for j in settings}
    with tempfile.TemporaryDirectory() as cache:
        sweep_seconds(1, 2, args.overrides, Path(cache))  # tokenizer and shards built once, outside the timing
        for r in range(args.repeats):
            for jobs in (settings if r % 2 == 0 else settings[::-1]):  # A B, then B A: drift hits both alike
                times[jobs].append(sweep_seconds(jobs, args.steps, args.overrides, Path(cache)))
                print(f"  repeat {r + 1}: --jobs {jobs}: {times[jobs][-1]:.1f}s", flush=True)
    ref = statistics.median(times[settings[0]])
    print(f"\n4 runs (gelu, polynorm x 2 seeds), {args.steps} steps each; training-phase wall time, "
          f"median of {args.repeats}:")
    for jobs in settings:
        t = statistics.median(times[jobs])
        print(f"  --jobs {jobs}: {t:7.1f}s  ({t / ref:.2f}x the time of --jobs {settings[0]}; "
              f"all: {', '.join(f'{x:.1f}' for x in times[jobs])})")


if __name__ == "__main__":
    main()
