"""Speed and memory per activation, measured side by side.

Runs of a sweep train one after another (or several at once) on a machine whose load
changes, so their own tokens/s are not comparable. Instead every activation's train
step (forward, backward, the trainer's AdamW step) at the sweep's micro-batch is timed
round-robin in this one process (``polycom.timing``), and reported relative to a
reference activation (GELU when present) as the median of the per-round ratios with
their interquartile range. A second, independently built copy of the reference (the
*control*, keyed ``"<reference> (control)"``) runs in the same rounds: its ratio to the
reference would be 1 on a quiet machine, so its distance from 1 is the noise floor below
which a measured speed difference means nothing. Memory: on CUDA the peak allocated during one step; on CPU,
where no allocator statistic exists, the bytes autograd saves for backward in one step
(``polycom.memory.saved_tensor_bytes``): the activation memory, which is where
activations differ.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ...memory import saved_tensor_bytes
from ...timing import time_round_robin_samples
from ...train.config import Config

__all__ = ["Throughput", "measure_throughput"]


@dataclass(frozen=True)
class Throughput:
    activation: str
    tokens_per_s: float  # median over rounds
    ratio: float  # median per-round tokens/s ratio to the reference
    ratio_q25: float
    ratio_q75: float
    memory_bytes: int
    memory_kind: str  # "peak allocated (CUDA)" or "saved for backward (CPU)"
    num_params: int
    flops_per_token: float
    reference: str
    control: bool = False  # the second copy of the reference: measures the noise floor
    round_ratios: list[float] = field(default_factory=list)  # per round, tokens/s over the reference's

    def to_dict(self) -> dict:
        return asdict(self)


def _make_step(cfg: Config, vocab_size: int, device: torch.device):
    from ...models import build_model
    from ...train.optim import build_optimizer

    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model_config(vocab_size)).to(device)
    optimizer = build_optimizer(model, cfg.optim, device.type)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab_size, (cfg.train.micro_batch_size, cfg.data.seq_len + 1), generator=generator)
    ids = ids.to(device)
    bf16 = device.type == "cuda" and cfg.train.precision != "fp32" and torch.cuda.is_bf16_supported()

    def forward():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return model(ids[:, :-1], targets=ids[:, 1:]).loss

    def step():
        forward().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return model, forward, step


def control_name(reference: str) -> str:
    return f"{reference} (control)"


def measure_throughput(configs: dict[str, Config], vocab_size: int, device: torch.device, rounds: int,
                       reference: str) -> dict[str, Throughput]:
    """``configs``: activation -> the config of its main runs (same batch and sequence length).
    The result holds one entry per activation plus the reference's control copy."""
    configs = {**configs, control_name(reference): configs[reference]}
    steps, memory, models = {}, {}, {}
    for act, cfg in configs.items():
        model, forward, step = _make_step(cfg, vocab_size, device)
        steps[act], models[act] = step, model
        if device.type == "cuda":
            step()  # optimizer state allocated: measure the steady-state peak
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            step()
            memory[act] = int(torch.cuda.max_memory_allocated(device))
        else:
            memory[act] = saved_tensor_bytes(forward)
    samples = time_round_robin_samples(steps, device, rounds, warmup=2)
    out = {}
    for act, cfg in configs.items():
        ratios = np.array(samples[reference]) / np.array(samples[act])  # per round: act's speed / reference's
        q25, q50, q75 = np.percentile(ratios, [25, 50, 75])
        tokens = cfg.train.micro_batch_size * cfg.data.seq_len
        is_control = act == control_name(reference)
        out[act] = Throughput(
            activation=reference if is_control else act, tokens_per_s=tokens / statistics.median(samples[act]),
            ratio=float(q50),
            ratio_q25=float(q25), ratio_q75=float(q75), memory_bytes=memory[act],
            memory_kind="peak allocated (CUDA)" if device.type == "cuda" else "saved for backward (CPU)",
            num_params=models[act].num_params(), flops_per_token=float(models[act].flops_per_token(cfg.data.seq_len)),
            reference=reference, control=is_control, round_ratios=[float(r) for r in ratios])
    return out
