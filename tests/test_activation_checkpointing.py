"""train.activation_checkpointing and train.precision: which blocks recompute, that recomputing
changes no number, how much less autograd keeps, and the config's refusals. Under FSDP2 (and
bf16-fsdp mixed precision) they are tested in tests/test_sharded_checkpoint.py's torchrun job."""

from __future__ import annotations

import pytest
import torch

from polycom.memory import saved_tensor_bytes
from polycom.models import build_model
from polycom.train import distributed as D
from polycom.train.config import ConfigError, load_config


def _model(activation: str, n_layers: int = 4):
    cfg = load_config("tiny", ["model.preset=debug", f"model.activation={activation}", "data.tokenizer=byte",
                               f"model.n_layers={n_layers}"])
    torch.manual_seed(0)
    return build_model(cfg.model_config(256))


def test_checkpointed_blocks():
    assert D.checkpointed_blocks(6, 0) == []
    assert D.checkpointed_blocks(6, 1) == [0, 1, 2, 3, 4, 5]
    assert D.checkpointed_blocks(6, 2) == [0, 2, 4]
    assert D.checkpointed_blocks(6, 4) == [0, 4]


@pytest.mark.parametrize("activation, every", [("polynorm", 1), ("swiglu", 3)])
def test_recomputation_changes_no_gradient_and_keeps_state_dict_keys(activation, every):
    tokens = torch.randint(0, 256, (2, 17), generator=torch.Generator().manual_seed(0))
    plain, wrapped = _model(activation), _model(activation)
    D.apply_activation_checkpointing(wrapped, every)
    assert sum(type(b).__name__ == "CheckpointWrapper" for b in wrapped.layers) == len(D.checkpointed_blocks(4, every))
    assert list(wrapped.state_dict()) == list(plain.state_dict())  # checkpoints load either way
    losses = []
    for model in (plain, wrapped):
        loss = model(tokens[:, :-1], targets=tokens[:, 1:]).loss
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == losses[1]
    grads = dict(wrapped.state_dict(keep_vars=True))
    for name, p in plain.named_parameters():
        assert torch.equal(p.grad, grads[name].grad), name  # the same arithmetic, run twice


@pytest.mark.parametrize("activation", ["polynorm", "swiglu"])
def test_a_checkpointed_block_keeps_little_more_than_its_input(activation):
    model = _model(activation, n_layers=1)
    x = torch.randn(4, 64, model.config.d_model, requires_grad=True)  # (B, T, d)
    cos, sin = model.rope(64, 0)
    kept = saved_tensor_bytes(lambda: model.layers[0](x, cos, sin, None)[0])
    D.apply_activation_checkpointing(model, 1)
    checkpointed = saved_tensor_bytes(lambda: model.layers[0](x, cos, sin, None)[0])
    # What the block keeps: its input x and the rotary tables cos and sin, nothing it computes.
    assert checkpointed == sum(t.untyped_storage().nbytes() for t in (x, cos, sin))
    assert kept > 10 * checkpointed


@pytest.mark.parametrize("override, key", [
    ("train.activation_checkpointing=-1", "train.activation_checkpointing"),
    ("train.activation_checkpointing=9", "train.activation_checkpointing"),
    ("train.precision=fp16", "train.precision"),
    ("train.precision=bf16-fsdp", "train.precision"),  # FSDP2's policy without train.parallel=fsdp
])
def test_a_bad_setting_is_one_line_naming_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config("tiny", ["model.preset=debug", override])
    assert str(e.value).startswith(key) and "\n" not in str(e.value)
