"""``train.parallel=fsdp`` in one process: a process group of one, FSDP2 and its mixed precision.

One GPU gets FSDP2's ``MixedPrecisionPolicy`` (``train.precision=bf16-fsdp``) this way, on the code
path a cluster runs (``benchmarks/device_check.sh`` trains ``small`` so). Checked on CPU: fp32
FSDP2 on a group of one trains the same losses as the plain model, its checkpoint is the
one-process format with every tensor in fp32 and resumes bit-exactly, bf16-fsdp trains with
fp32 master weights, the group is gone afterwards, and DDP in one process is still refused.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.distributed as dist

from polycom.errors import UsageError
from polycom.train import run
from polycom.train.checkpoint import latest_checkpoint, load_checkpoint

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")


def _args(tmp_path, name, *extra):
    return ["train.device=cpu", "model.preset=debug", "model.activation=polynorm", "data.tokenizer=byte",
            "data.max_documents=200", f"data.cache_dir={tmp_path / 'cache'}", "data.seq_len=32",
            "train.batch_size=4", "train.micro_batch_size=4", "train.steps=4", "train.eval_every=0",
            "train.eval_batches=1", "train.checkpoint_every=2", "train.progress=false",
            f"train.out_dir={tmp_path / name}", *extra]


def _losses(folder):
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["kind"] == "train"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fsdp1")
    run("tiny", _args(tmp, "plain", "train.parallel=none"))
    run("tiny", _args(tmp, "fsdp", "train.parallel=fsdp", "train.precision=fp32"))
    assert not dist.is_initialized()  # the run formed its group of one and took it down
    run("tiny", _args(tmp, "fsdp_resumed", "train.parallel=fsdp", "train.precision=fp32", "train.stop_at_step=2"))
    run("tiny", _args(tmp, "fsdp_resumed", "train.parallel=fsdp", "train.precision=fp32", "train.resume=true"))
    run("tiny", _args(tmp, "bf16", "train.parallel=fsdp", "train.precision=bf16-fsdp"))
    return tmp


def test_fsdp2_on_a_group_of_one_trains_the_plain_models_losses(runs):
    plain, fsdp = _losses(runs / "plain"), _losses(runs / "fsdp")
    assert len(fsdp) == 4
    # One rank: no reduction to reorder. FSDP2's optimizer over DTensors may still round
    # differently from the plain model's parameters (measured: the losses are equal to the bit
    # here); 1e-6 is far below a wrong step (one step of lr 1e-3 moves the loss by ~0.1).
    assert fsdp == pytest.approx(plain, rel=1e-6)


def test_its_checkpoint_is_the_one_process_format_and_resumes_bit_exactly(runs):
    ckpt = load_checkpoint(latest_checkpoint(runs / "fsdp"))
    assert not ckpt["sharded"]
    assert {t.dtype for t in ckpt["model"].values()} == {torch.float32}
    assert _losses(runs / "fsdp_resumed") == _losses(runs / "fsdp")


def test_bf16_fsdp_keeps_fp32_master_weights(runs):
    losses = _losses(runs / "bf16")
    assert len(losses) == 4 and all(map(torch.isfinite, torch.tensor(losses)))
    # bf16 compute differs from fp32 by bf16 rounding (8 bits of mantissa: ~4e-3 relative per
    # op, averaged down over the loss's many tokens): measured at most 2.5e-4 relative over the 4
    # steps; bound 8x that.
    assert losses == pytest.approx(_losses(runs / "fsdp"), rel=2e-3)
    assert losses != _losses(runs / "fsdp")  # bf16 really computed: the check can fail
    model = load_checkpoint(latest_checkpoint(runs / "bf16"))["model"]
    assert {t.dtype for t in model.values()} == {torch.float32}


def test_ddp_in_one_process_is_still_refused(tmp_path):
    with pytest.raises(UsageError, match="train.parallel=ddp needs several processes"):
        run("tiny", _args(tmp_path, "ddp", "train.parallel=ddp"))
