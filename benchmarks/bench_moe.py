"""The MoE layer without host synchronisation against the layer it replaced, side by side.

Three variants of one ``MoE`` module (the same weights, the same input), forward + backward:

- ``old``: the previous layer, kept here as the baseline: group sizes read on the host
  (``counts.tolist()``, one sync per grouped matmul), a zero-padded (E, C, d) buffer with
  C = the largest group and one ``torch.bmm``, and a per-expert activation other than
  PolyNorm run on each expert's rows split out by those sizes (PolyReLU per expert here);
- ``new``: the layer as it is (``models/grouped.py``): ``torch._grouped_mm`` where it runs
  (float32 on CPU, eager);
- ``new, tiles``: the same layer forced onto its static-shape fallback (fixed-size tiles and
  one ``torch.bmm``), which runs under ``torch.compile`` and in float64.

Routing: ``balanced`` is the random router's own; ``skewed`` sends every token's first choice
to expert 0 (the padded buffer then has C = N rows per expert). All variants run round-robin
in one process, so the ratios are paired by round (median and interquartile range). Also
printed: the graph breaks Dynamo finds in the ``debug-moe`` model's loss with each layer.

    PYTHONPATH=src python benchmarks/bench_moe.py              # CPU, float32
    PYTHONPATH=src python benchmarks/bench_moe.py --rounds 5 --no-graph-breaks
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from harness import machine_description, markdown_table, paired_ratio, time_round_robin_samples  # noqa: E402

from polycom.models import MoE, MoEConfig, build_model, grouped, model_config  # noqa: E402
from polycom.models import moe as moe_module  # noqa: E402

# (name, d_model, expert hidden, experts, top-k, tokens)
SHAPES = [("d=64, h=96, E=4, k=2, N=1024", 64, 96, 4, 2, 1024),
          ("d=256, h=512, E=8, k=2, N=1024", 256, 512, 8, 2, 1024),
          ("d=256, h=128, E=32, k=4, N=1024", 256, 128, 32, 4, 1024)]
ACTIVATIONS = [("polynorm", "per_expert"), ("polyrelu", "per_expert"), ("swiglu", "per_layer")]


def padded_grouped_linear(x: torch.Tensor, weight: torch.Tensor, groups) -> torch.Tensor:
    """The previous grouped matmul: sizes read on the host, one (E, C, in) buffer, C = the largest group."""
    counts = groups.counts.tolist()  # the host sync this change removes
    start = groups.ends.to(torch.int64) - groups.counts
    slot = torch.arange(x.shape[0], device=x.device) - start[groups.expert]  # position inside its group
    padded = x.new_zeros(weight.shape[0], max(counts), weight.shape[2])  # (E, C, in)
    padded[groups.expert, slot] = x
    return torch.bmm(padded, weight.transpose(1, 2))[groups.expert, slot]  # (M, out)


def split_expert_activations(self, h: torch.Tensor, *rest) -> torch.Tensor:
    """The previous per-expert activation: PolyNorm as the grouped op, any other kind per split group."""
    if self.grouped:
        return NEW_EXPERT_ACTIVATIONS(self, h, *rest)
    *up, groups = rest
    counts = groups.counts.tolist()
    ups = up[0].split(counts) if up else [None] * len(counts)
    outs = [(act(hg, ug) if self.gated else act(hg)) if hg.shape[0] else hg
            for act, hg, ug in zip(self.experts, h.split(counts), ups)]
    return torch.cat(outs)


NEW_EXPERT_ACTIVATIONS = moe_module.ExpertActivations.forward


@contextlib.contextmanager
def variant(name: str):
    """Run the MoE layer as ``name`` (module docstring) inside the block."""
    saved = moe_module.grouped_linear, moe_module.ExpertActivations.forward, grouped._grouped_mm_runs
    if name == "old":
        moe_module.grouped_linear = padded_grouped_linear
        moe_module.ExpertActivations.forward = split_expert_activations
    elif name == "new, tiles":
        grouped._grouped_mm_runs = lambda *args: False
    try:
        yield
    finally:
        moe_module.grouped_linear, moe_module.ExpertActivations.forward, grouped._grouped_mm_runs = saved


def make_layer(d: int, hidden: int, experts: int, top_k: int, tokens: int, act: str, coefficients: str,
               routing: str) -> tuple[MoE, torch.Tensor]:
    torch.manual_seed(0)
    layer = MoE(d, hidden, act, MoEConfig(num_experts=experts, top_k=top_k, coefficients=coefficients))
    x = torch.randn(tokens, d)
    if routing == "skewed":  # a shared direction that only expert 0's score reads, far above the others
        with torch.no_grad():
            layer.router.gate.weight[:, 0] = 0.0
            layer.router.gate.weight[0, 0] = 10.0
        x[:, 0] = 3.0
    return layer, x.requires_grad_(True)


def step_of(layer: MoE, x: torch.Tensor, name: str):
    def step():
        with variant(name):
            y, aux = layer(x)
            (y.square().mean() + aux).backward()
    return step


def graph_breaks(name: str) -> int:
    """Graph breaks Dynamo finds in the debug-moe model's loss (per-expert PolyNorm) with layer ``name``."""
    torch.manual_seed(0)
    model = build_model(model_config("debug-moe", activation="polynorm", moe={"coefficients": "per_expert"}))
    ids = torch.randint(0, 256, (2, 64))
    torch._dynamo.reset()
    with variant(name):
        explained = torch._dynamo.explain(lambda ids: model(ids, targets=ids).loss)(ids)
    return explained.graph_break_count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared CPU)")
    parser.add_argument("--no-graph-breaks", action="store_true", help="skip the Dynamo explain of both layers")
    args = parser.parse_args()
    device = torch.device("cpu")
    torch.set_num_threads(args.threads)
    names = ["old", "new", "new, tiles"]
    print(f"MoE layer forward+backward, float32, {args.rounds} interleaved rounds; {datetime.date.today()}; "
          f"{machine_description(device)}", flush=True)
    rows = []
    for shape, d, hidden, experts, top_k, tokens in SHAPES:
        for act, coefficients in ACTIVATIONS:
            for routing in ("balanced", "skewed"):
                layer, x = make_layer(d, hidden, experts, top_k, tokens, act, coefficients, routing)
                samples = time_round_robin_samples({n: step_of(layer, x, n) for n in names}, device, args.rounds)
                ms = {n: 1e3 * sorted(s)[len(s) // 2] for n, s in samples.items()}
                ratios = [paired_ratio(samples["old"], samples[n]) for n in ("new", "new, tiles")]
                rows.append([shape, f"{act} ({coefficients})", routing, *(f"{ms[n]:.2f}" for n in names),
                             *(f"{r[0]:.2f} [{r[1]:.2f}, {r[2]:.2f}]" for r in ratios)])
                print(" | ".join(rows[-1]), flush=True)
    print()
    print(markdown_table(["shape", "activation", "routing", "old ms", "new ms",
                          "new, tiles ms", "old / new", "old / tiles"], rows))
    if not args.no_graph_breaks:
        print("\nGraph breaks, debug-moe model loss (torch._dynamo.explain): "
              + ", ".join(f"{n}: {graph_breaks(n)}" for n in ("old", "new")))


if __name__ == "__main__":
    main()
