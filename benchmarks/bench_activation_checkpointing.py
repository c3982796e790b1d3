"""Bytes one transformer block saves for backward, without and with activation checkpointing.

Measured on CPU in fp32 with ``torch.autograd.graph.saved_tensors_hooks``: the distinct
storages autograd keeps over one block's forward, parameters left out (they are held anyway).
A checkpointed block (``train.activation_checkpointing``, torch's non-reentrant
``checkpoint_wrapper``) keeps its inputs and recomputes the rest in backward.

    python benchmarks/bench_activation_checkpointing.py                 # debug and small presets
    python benchmarks/bench_activation_checkpointing.py --batch 1 --seq 2048 --presets small
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from harness import machine_description, markdown_table  # noqa: E402

from polycom.memory import saved_tensor_bytes  # noqa: E402
from polycom.models import build_model  # noqa: E402
from polycom.train import distributed as D  # noqa: E402
from polycom.train.config import load_config  # noqa: E402

ACTIVATIONS = ("gelu", "swiglu", "polyrelu", "polynorm", "gated_polynorm")


def saved_block_bytes(model: torch.nn.Module, batch: int, seq: int) -> int:
    x = torch.randn(batch, seq, model.config.d_model, requires_grad=True)  # (B, T, d)
    cos, sin = model.rope(seq, 0)
    return saved_tensor_bytes(lambda: model.layers[0](x, cos, sin, None), exclude=model.parameters())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default="debug,small")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=512)
    args = p.parse_args()
    rows = []
    for preset in args.presets.split(","):
        for activation in ACTIVATIONS:
            cfg = load_config("tiny", [f"model.preset={preset}", f"model.activation={activation}", "model.n_layers=1",
                                       f"model.max_seq_len={args.seq}"])
            torch.manual_seed(0)
            model = build_model(cfg.model_config(256))
            plain = saved_block_bytes(model, args.batch, args.seq)
            D.apply_activation_checkpointing(model, 1)
            kept = saved_block_bytes(model, args.batch, args.seq)
            tokens = args.batch * args.seq
            rows.append([preset, activation, f"{plain / 2**20:.2f}", f"{kept / 2**20:.2f}",
                         f"{plain / tokens:,.0f}", f"{kept / tokens:,.0f}", f"{plain / kept:.1f}x"])
    machine = machine_description(torch.device("cpu"))
    print(f"{datetime.date.today()}, {machine}; B={args.batch}, T={args.seq}, fp32, one block\n")
    print(markdown_table(["preset", "activation", "saved MiB", "checkpointed MiB", "bytes/token", "checkpointed "
                          "bytes/token", "ratio"], rows))


if __name__ == "__main__":
    main()
