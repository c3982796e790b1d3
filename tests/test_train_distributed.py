"""Two gloo processes under torchrun (DDP and FSDP2) match one process on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from polycom.train import run

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")


def _held_out(tmp_path):
    """An extra validation set (eval.sets): its numbers must not depend on the world size either."""
    path = tmp_path / "held_out.txt"
    path.write_text("".join(f"line {i}: the quick brown fox jumps over {i} lazy dogs\n" for i in range(60)))
    return path


def _args(tmp_path, name, *extra):
    return [f"eval.sets.fox={_held_out(tmp_path)}", "train.device=cpu",
            "model.preset=debug", "model.activation=polynorm", "data.tokenizer=byte",
            "data.max_documents=300",
            f"data.cache_dir={tmp_path / 'cache'}", "data.seq_len=32", "train.batch_size=8",
            "train.micro_batch_size=4", "train.steps=4", "train.eval_every=2", "train.eval_batches=1",
            "train.checkpoint_every=2", "train.progress=false", f"train.out_dir={tmp_path / name}", *extra]


def _train_losses(folder):
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return ([r["loss"] for r in records if r["kind"] == "train"],
            [r["val_loss"] for r in records if r["kind"] == "val"]
            + [r["sets"]["fox"][k] for r in records if r["kind"] == "val" for k in ("loss", "bpb")])


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("single")
    run("tiny", _args(tmp_path, "single", "train.micro_batch_size=2"))  # grad accum 4 on one process
    return tmp_path, _train_losses(tmp_path / "single")


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_gloo_processes_match_one(single, mode):
    tmp_path, (ref_train, ref_val) = single
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "polycom.cli", "train", *_args(tmp_path, mode, f"train.parallel={mode}")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.count("final: step 4") == 1  # rank-aware printing
    train, val = _train_losses(tmp_path / mode)
    # Same samples per step; only the summation order of the gradient differs.
    assert train == pytest.approx(ref_train, rel=1e-4)
    assert val == pytest.approx(ref_val, rel=1e-4)
    ckpts = sorted(p.name for p in (tmp_path / mode / "checkpoints").glob("step_*"))
    assert ckpts == ["step_00000002", "step_00000004"]
    # A distributed checkpoint (DCP shards, one per rank) resumes in one process.
    resumed = run("tiny", _args(tmp_path, mode, "train.micro_batch_size=2", "train.steps=6", "train.resume=true"))
    assert resumed.final_step == 6 and resumed.status == "completed"


def test_a_data_error_on_rank_0_is_reported_by_every_rank(tmp_path):
    """Rank 0 prepares the data; its error must reach rank 1 as the same message, not as a gloo crash."""
    (tmp_path / "empty.jsonl").write_text("")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "polycom.cli", "train", *_args(tmp_path, "bad", "train.parallel=ddp",
                                                f"data.source={tmp_path / 'empty.jsonl'}")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0
    message = f"polycom train: error: data file '{tmp_path / 'empty.jsonl'}' is empty"
    # Once per rank, word for word, each with its newline: the ranks share one stderr, and a
    # report written as text + newline in two writes interleaves ("...emptypolycom train: ...").
    # Counted in the whole text because torchrun may prefix lines with "[rankN]:".
    assert proc.stderr.count(message + "\n") == 2, proc.stderr[-4000:]
    assert not any(t in proc.stderr for t in ("Connection closed", "Gloo", "gloo")), proc.stderr[-4000:]
