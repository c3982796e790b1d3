"""How long a checkpoint save blocks the training loop: synchronous vs ``train.checkpoint_async``.

One process, CPU, fp32, a polycom model of a few tens of millions of parameters with AdamW's
state filled by one step. Each round saves once in each way, in turn (round-robin, so a busy
neighbour slows all alike):

- ``single-file``: the one-process default (``checkpoint.save_checkpoint``: safetensors + torch.save);
- ``DCP sync``: ``sharded_checkpoint.save_sharded``, the multi-process default;
- ``DCP async``: ``async_checkpoint.AsyncCheckpointer.save`` (``train.checkpoint_async=true``); the
  loop then trains steps until the background write is published, as the trainer does.

Per save: *blocked*, the seconds the loop waits; for the async save also *published after* (until
the checkpoint is on disk and ``latest`` names it), the steps trained meanwhile and their time
against a step with no write in flight. Ratios are per round (median and interquartile range).

    python benchmarks/bench_checkpoint_save.py                    # ~50M parameters, 5 rounds
    python benchmarks/bench_checkpoint_save.py --layers 2 --rounds 3
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
from harness import machine_description, markdown_table, paired_ratio  # noqa: E402

from polycom.models import build_model  # noqa: E402
from polycom.train.async_checkpoint import AsyncCheckpointer  # noqa: E402
from polycom.train.checkpoint import save_checkpoint  # noqa: E402
from polycom.train.config import load_config  # noqa: E402
from polycom.train.sharded_checkpoint import save_sharded  # noqa: E402


def build(layers: int, vocab: int, seq: int):
    cfg = load_config("tiny", ["model.preset=small", f"model.n_layers={layers}", f"model.max_seq_len={seq}",
                              f"data.seq_len={seq}"])
    torch.manual_seed(0)
    model = build_model(cfg.model_config(vocab))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = torch.randint(0, vocab, (1, seq + 1))

    def train_step() -> float:
        t0 = time.perf_counter()
        model(batch[:, :-1], targets=batch[:, 1:]).loss.backward()  # inputs, next-token targets: (1, T)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    train_step()  # AdamW's moments exist from here on: the checkpoint holds them
    return model, optimizer, train_step, cfg.to_yaml()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=6, help="transformer blocks of the small preset (d_model 768)")
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--seq", type=int, default=64, help="tokens per training step (batch of one sequence)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    args = p.parse_args()
    model, optimizer, train_step, config_yaml = build(args.layers, args.vocab, args.seq)
    n_params = sum(t.numel() for t in model.parameters())
    checkpointer = AsyncCheckpointer()
    for _ in range(2):
        train_step()  # warm-up: the first steps allocate
    alone = []  # step time with no write in flight, one per round
    blocked = {"single-file": [], "DCP sync": [], "DCP async": []}
    published, steps_meanwhile, step_during = [], [], []
    with tempfile.TemporaryDirectory(dir=args.dir) as root:
        root = Path(root)
        for step in range(1, args.rounds + 1):
            t0 = time.perf_counter()
            save_checkpoint(root / "single", step, model.state_dict(), optimizer.state_dict(), {}, config_yaml, keep=1)
            blocked["single-file"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            save_sharded(root / "sync", step, model, optimizer, {}, config_yaml, keep=1)
            blocked["DCP sync"].append(time.perf_counter() - t0)
            alone.append(train_step())
            t0, done_at = time.perf_counter(), []
            checkpointer.save(root / "async", step, model, optimizer, {}, config_yaml, keep=1)
            blocked["DCP async"].append(time.perf_counter() - t0)
            checkpointer.pending.add_done_callback(lambda _: done_at.append(time.perf_counter()))
            times = []
            while not checkpointer.pending.done():  # the loop trains on while the write runs
                times.append(train_step())
            checkpointer.wait()
            published.append(done_at[0] - t0)
            steps_meanwhile.append(len(times))
            step_during += times
        checkpointer.close()
        size = sum(f.stat().st_size for f in (root / "async" / "checkpoints").rglob("*") if f.is_file())
    med = {k: statistics.median(v) for k, v in blocked.items()}
    spread = {k: f"{min(v):.2f}-{max(v):.2f}" for k, v in blocked.items()}
    rows = [[k, f"{med[k]:.2f}", spread[k], "1.00" if k == "DCP sync" else
             "{:.2f} ({:.2f}-{:.2f})".format(*paired_ratio(blocked[k], blocked["DCP sync"]))] for k in blocked]
    machine = machine_description(torch.device("cpu"))
    print(f"{datetime.date.today()}, {machine}; {n_params / 1e6:.1f}M parameters, "
          f"checkpoint {size / 2**20:.0f} MiB (weights + AdamW moments), fp32, {args.rounds} rounds\n")
    print(markdown_table(["save", "blocked s (median)", "min-max", "blocked / DCP sync (IQR)"], rows))
    step_alone = statistics.median(alone)
    step_overlap = f"{statistics.median(step_during):.2f}" if step_during else "-"
    print(f"\nDCP async: published {statistics.median(published):.2f} s after the call (median; "
          f"{min(published):.2f}-{max(published):.2f}), {statistics.median(steps_meanwhile):.0f} training steps "
          f"meanwhile (median); a step took {step_overlap} s during the write, {step_alone:.2f} s alone")


if __name__ == "__main__":
    main()
