"""Trainer overhead and data-pipeline stalls, measured side by side in one process.

    python benchmarks/bench_trainer.py [--steps 40] [--repeats 3] [KEY=VALUE ...]

1. Step time of ``polycom.train.run`` versus a bare hand-written loop doing the
   same work (same model, data, AdamW groups, LR schedule, clipping, loss read
   back every step), alternated ``--repeats`` times; per run the median of the
   steady-state steps (the first 3 are dropped: compilation, allocator warm-up),
   then the best and the median run of each.
2. Data pipeline: the time the trainer spent waiting for batches (the prefetcher
   builds the next micro-batch while the current one runs), and the cost of
   building one micro-batch from the memory-mapped shards.
Prints ratios and the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import torch

from polycom.data import BatchSampler, prepare_data
from polycom.models import build_model
from polycom.train import load_config, run
from polycom.train.distributed import resolve_device
from polycom.train.optim import build_optimizer, build_scheduler


def bare_loop(cfg, steps: int) -> list[float]:
    """The same training work, written out by hand without the trainer."""
    data = prepare_data(cfg.data.corpus_spec(), cfg.data.tokenizer, cfg.data.vocab_size, cfg.data.cache_dir,
                        log=lambda *a: None)
    sampler = BatchSampler(data.stream("train"), cfg.data.seq_len, seed=cfg.train.seed)
    device = resolve_device(cfg.train.device)
    bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and device.type == "cuda")
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model.build_config(data.tokenizer.vocab_size, cfg.data.seq_len)).to(device)
    if cfg.train.compile:
        model.compile()
    opt = build_optimizer(model, cfg.optim, device.type)
    sched = build_scheduler(opt, cfg.optim, steps)
    accum = cfg.grad_accum()
    times = []
    for step in range(steps):
        t0 = time.perf_counter()
        for micro in range(accum):
            batch = sampler.micro_batch(step, micro, 0, 1, cfg.train.micro_batch_size, accum)
            if device.type == "cuda":  # the same pinned, asynchronous copy as the trainer
                batch = batch.pin_memory()
            batch = batch.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out = model(batch[:, :-1], targets=batch[:, 1:])
            (out.loss / accum).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        out.ce_loss.item()
        times.append(time.perf_counter() - t0)
    return times


def trainer_steps(cfg) -> tuple[list[float], float]:
    metrics = run(cfg)
    return metrics.step_times_s, metrics.data_wait_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    out = tempfile.mkdtemp(prefix="bench-trainer-")
    cfg = load_config("tiny", [f"train.steps={args.steps}", "train.eval_every=0", "train.checkpoint_every=0",
                               "train.progress=false", f"train.out_dir={out}",
                               "train.overwrite=true",  # each repeat replaces the previous repeat's run
                               *args.overrides])
    device = resolve_device(cfg.train.device)
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs{gpu}, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}")
    print(f"model: preset {cfg.model.preset} + overrides {cfg.model.overrides()}, batch {cfg.train.batch_size} x "
          f"seq {cfg.data.seq_len}, {args.steps} steps x {args.repeats} repeats")
    bare, trainer, waits = [], [], []
    for _ in range(args.repeats):
        bare.append(statistics.median(bare_loop(cfg, args.steps)[3:]))
        steps, wait = trainer_steps(cfg)
        trainer.append(statistics.median(steps[3:]))
        waits.append(wait / sum(steps))
        print(f"  run medians: bare {bare[-1] * 1e3:.1f} ms, trainer {trainer[-1] * 1e3:.1f} ms", flush=True)
    # On a shared machine other load only ever adds time: the fastest run of each is the
    # least disturbed estimate; the median over runs is printed beside it.
    for label, pick in (("best run", min), ("median run", statistics.median)):
        b, t = pick(bare), pick(trainer)
        print(f"step time, {label}: bare loop {b * 1e3:.1f} ms, trainer {t * 1e3:.1f} ms, "
              f"ratio trainer/bare {t / b:.3f} ({(t / b - 1) * 100:+.1f}%)")
    t = min(trainer)
    print(f"trainer time waiting for data: {100 * max(waits):.2f}% of step time (max over repeats)")
    data = prepare_data(cfg.data.corpus_spec(), cfg.data.tokenizer, cfg.data.vocab_size, cfg.data.cache_dir,
                        log=lambda *a: None)
    sampler = BatchSampler(data.stream("train"), cfg.data.seq_len)
    t0 = time.perf_counter()
    n = 200
    for i in range(n):
        sampler.micro_batch(i, 0, 0, 1, cfg.train.micro_batch_size, 1)
    build = (time.perf_counter() - t0) / n
    print(f"building one micro-batch from the memmap shards: {build * 1e3:.3f} ms "
          f"({100 * build / t:.2f}% of a step); {cfg.train.micro_batch_size * cfg.data.seq_len / build:,.0f} tokens/s")


if __name__ == "__main__":
    main()
