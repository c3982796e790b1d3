"""The training memory estimate of train/memory_estimate.py: a floor, checked against a real
model's parameters and what autograd really saves for one micro-batch."""

from __future__ import annotations

import pytest
import torch

from polycom.memory import saved_tensor_bytes
from polycom.models import build_model
from polycom.train.config import load_config
from polycom.train.memory_estimate import estimate_memory, format_bytes, meta_model


def _config(*overrides):
    return load_config("tiny", ["model.preset=debug", "data.seq_len=32", "train.batch_size=4",
                                "train.micro_batch_size=4", "data.tokenizer=byte", *overrides])


@pytest.mark.parametrize("activation", ["gelu", "polynorm", "swiglu"])
def test_state_counts_every_parameter_16_bytes(activation):
    cfg = _config(f"model.activation={activation}")
    real = sum(p.numel() for p in build_model(cfg.model_config()).parameters())
    estimate = estimate_memory(cfg, meta_model(cfg))
    assert estimate.state_bytes == 16 * real  # fp32 weight + gradient + AdamW's two moments
    assert estimate.weight_bytes == 4 * real


@pytest.mark.parametrize("activation", ["gelu", "polynorm", "swiglu"])
def test_activations_are_a_floor_of_what_autograd_saves(activation):
    # fp32 on CPU saves at least twice the 16-bit count the estimate assumes; the floor must hold.
    cfg = _config(f"model.activation={activation}")
    torch.manual_seed(0)
    model = build_model(cfg.model_config())
    tokens = torch.randint(0, 256, (cfg.train.micro_batch_size, cfg.data.seq_len + 1))
    saved = saved_tensor_bytes(lambda: model(tokens[:, :-1], targets=tokens[:, 1:]).loss)
    estimate = estimate_memory(cfg, meta_model(cfg))
    assert 0 < estimate.activation_bytes <= saved


def test_fsdp_shards_the_state_over_the_world_size():
    cfg = _config("train.parallel=fsdp")
    one, four = (estimate_memory(cfg, meta_model(cfg), world) for world in (1, 4))
    assert four.state_bytes == one.state_bytes // 4 and four.activation_bytes == one.activation_bytes


def test_format_bytes():
    assert [format_bytes(n) for n in (0, 999, 9.6e12, 21e9, 768e12)] == ["0 B", "999 B", "9.6 TB", "21 GB", "768 TB"]
