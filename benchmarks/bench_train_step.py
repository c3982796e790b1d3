"""End-to-end training-step throughput of a small transformer per activation.

Every model has the same parameter count (gated MLPs get 2/3 of the width). A
step is forward + backward + AdamW update on random tokens; models run
round-robin in one process and tokens/s is reported relative to GELU, in eager
mode and under ``torch.compile``. A second, identical GELU model is measured as a
control: how far its ratio is from 1.000 shows the run's noise.

    python benchmarks/bench_train_step.py                    # CPU, "tiny" preset
    python benchmarks/bench_train_step.py --device cuda --preset small --batch 16 --seq 1024
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from harness import Report, machine_description, markdown_table, time_round_robin  # noqa: E402

from polycom.models import build_model, model_config  # noqa: E402

# (label, activation, activation kwargs). The control is a second, identical GELU
# model: its ratio to the first is the noise floor of that run.
VARIANTS = [
    ("gelu", "gelu", {}),
    ("gelu (control: identical copy)", "gelu", {}),
    ("swiglu", "swiglu", {}),
    ("polyrelu", "polyrelu", {}),
    ("polynorm", "polynorm", {}),
    ("polynorm (reference path)", "polynorm", {"implementation": "reference"}),
]


def make_step(label, activation, kwargs, args, device, compile_model):
    torch.manual_seed(0)
    cfg = model_config(args.preset, activation=activation, activation_kwargs=kwargs, max_seq_len=args.seq)
    model = build_model(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    fwd = torch.compile(model) if compile_model else model
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), device=device)

    def step():
        out = fwd(ids, targets=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, model.num_params()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--modes", default="eager,compile")
    p.add_argument("--output")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    tokens = args.batch * args.seq
    report = Report(args.output)
    report.add(
        f"Machine: {machine_description(device)}. Date: {datetime.date.today()}. Preset {args.preset}, "
        f"batch {args.batch} x seq {args.seq}; median of {args.rounds} interleaved steps."
    )
    for mode in args.modes.split(","):
        steps, params = {}, {}
        for label, act, kw in VARIANTS:
            if mode == "compile" and kw.get("implementation") == "reference":
                continue  # the reference path is the eager baseline only
            steps[label], params[label] = make_step(label, act, kw, args, device, mode == "compile")
        times = time_round_robin(steps, device, args.rounds, warmup=3)
        rows = [
            [label, f"{params[label] / 1e6:.3f}M", f"{tokens / times[label]:.0f}", f"{times['gelu'] / times[label]:.3f}"]
            for label in steps
        ]
        report.add(f"**{mode}**\n\n" + markdown_table(["activation", "params", "tokens/s", "vs GELU"], rows))
    report.write()


if __name__ == "__main__":
    main()
