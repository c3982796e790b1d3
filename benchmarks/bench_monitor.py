"""Cost of the escaping-activation monitor in a training step, measured side by side.

One model and optimizer; every round runs one train step of each variant, in turn:

- no monitor: the step alone (and a second copy of it, the noise floor);
- monitor off: ``train.monitor_every=0``, the trainer's begin/end calls around the step;
- unmonitored step: ``monitor_every=1000`` on a step that is not a multiple of it;
- monitored step: ``monitor_every=1`` (hooks on every MLP activation, statistics, one host sync).

Prints the median step time and the median of the per-round ratios to "no monitor". The off path must stay
under 2% of a step (the monitor installs nothing on those steps); its own cost, the begin/end calls
alone, is also timed over many calls and printed as a share of the step.

Clock: on CPU the process's CPU time (``time.process_time``, all threads), so a shared, overloaded
machine that takes the CPU away from the process between steps does not enter the ratios; on CUDA
wall time with a device sync around each step. ``--clock wall`` forces wall time.

    python benchmarks/bench_monitor.py                   # CPU, "tiny" preset
    python benchmarks/bench_monitor.py --device cuda --preset small --batch 16 --seq 1024
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from harness import Report, machine_description, markdown_table, sync  # noqa: E402

from polycom.models import build_model, model_config  # noqa: E402
from polycom.train.monitor import ActivationMonitor  # noqa: E402


def round_robin(fns: dict, device: torch.device, rounds: int, clock, warmup: int = 3) -> dict[str, list[float]]:
    """Seconds per call of each function by ``clock``, interleaved in a shuffled order each round."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples, order, shuffler = {name: [] for name in fns}, list(fns), random.Random(0)
    for _ in range(rounds):
        shuffler.shuffle(order)
        for name in order:
            sync(device)
            start = clock()
            fns[name]()
            sync(device)
            samples[name].append(clock() - start)
    return samples


def off_path_seconds(monitor: ActivationMonitor, step: int, calls: int = 100_000) -> float:
    """Seconds per step of the trainer's two monitor calls on an unmonitored step."""
    start = time.perf_counter()
    for _ in range(calls):
        monitor.begin(step)
        monitor.end(_NoLog(), write=None)
    return (time.perf_counter() - start) / calls


class _NoLog:
    def log(self, record: dict) -> None:
        pass


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--activation", default="polynorm")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--clock", choices=("auto", "process", "wall"), default="auto")
    p.add_argument("--output")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    cfg = model_config(args.preset, activation=args.activation, max_seq_len=args.seq)
    model = build_model(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), device=device)
    bf16 = device.type == "cuda"

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(ids, targets=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        out.loss.item()  # the trainer reads the loss back every step

    def with_monitor(monitor: ActivationMonitor, step_number: int):
        def fn():
            monitor.begin(step_number)
            step()
            monitor.end(_NoLog(), write=lambda *a: None)
        return fn

    variants = {
        "no monitor": step,
        "no monitor (control: same step)": step,
        "monitor off (monitor_every=0)": with_monitor(ActivationMonitor(model, 0), 1),
        "unmonitored step (monitor_every=1000)": with_monitor(ActivationMonitor(model, 1000), 7),
        "monitored step (monitor_every=1)": with_monitor(ActivationMonitor(model, 1, growth_factor=float("inf")), 1),
    }
    use_process = args.clock == "process" or (args.clock == "auto" and device.type == "cpu")
    clock = time.process_time if use_process else time.perf_counter
    samples = round_robin(variants, device, args.rounds, clock)
    off_calls = {"monitor_every=0": off_path_seconds(ActivationMonitor(model, 0), 1),
                 "monitor_every=1000, step 7": off_path_seconds(ActivationMonitor(model, 1000), 7)}
    base = samples["no monitor"]
    rows = []
    for name, s in samples.items():
        ratios = [t / b for t, b in zip(s, base)]  # sample i of every variant comes from round i: paired
        q = statistics.quantiles(ratios, n=4)
        rows.append([name, f"{statistics.median(s) * 1e3:.2f}", f"{statistics.median(ratios):.3f}",
                     f"[{q[0]:.3f}, {q[2]:.3f}]"])
    report = Report(args.output)
    report.add(f"Machine: {machine_description(device)}. Date: {datetime.date.today()}. Preset {args.preset} "
               f"({args.activation}, {cfg.n_layers} layers), batch {args.batch} x seq {args.seq}"
               f"{', bf16 autocast' if bf16 else ''}; median of {args.rounds} interleaved train steps, "
               f"{'process CPU time' if use_process else 'wall time'}.\n\n"
               + markdown_table(["variant", "ms/step", "vs no monitor (median of per-round ratios)", "IQR of the ratios"], rows))
    step_s = statistics.median(samples["no monitor"])
    report.add("Off-path calls alone (begin + end on unmonitored steps, 100,000 calls, wall time): "
               + "; ".join(f"{k}: {v * 1e6:.2f} us per step = {v / step_s:.5%} of a step" for k, v in off_calls.items()))
    report.write()


if __name__ == "__main__":
    main()
