"""Sharded checkpoints (train/sharded_checkpoint.py): written by every rank with DCP, atomic under
SIGKILL, resumed under another world size or wrapping, read by export/analyze/generate; and written
in the background (train/async_checkpoint.py, ``train.checkpoint_async``), in one process and on
two ranks: the state of the save's step although training goes on during the write, bit-exact
resume, a failed write raised, a SIGKILL during the write leaving the previous checkpoint.

One torchrun job of two gloo ranks runs every multi-process scenario in one process group
(``_JOB`` below: ``run()`` joins the group it finds), so the test pays for one launch.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import threading

import pytest
import torch
from torch.distributed.checkpoint import FileSystemWriter

from polycom.train import run
from polycom.train.checkpoint import DiskFullError, checkpoint_step, latest_checkpoint, load_weights
from polycom.train.loop import Trainer
from polycom.train.sharded_checkpoint import is_sharded

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")

_JOB = r'''
import json, os, shutil, signal, sys
from pathlib import Path
import pytest
import torch.distributed as dist
from polycom.train import run
from polycom.train import sharded_checkpoint as S

root, args = Path(sys.argv[1]), json.loads(sys.argv[2])
sys.path.insert(0, sys.argv[3])
from test_sharded_checkpoint import hold_write_until_a_step_ends
dist.init_process_group("gloo")
rank = dist.get_rank()
fsdp = ["train.parallel=fsdp"]

def train(name, *extra):
    run("tiny", [*args, f"train.out_dir={root / name}", *fsdp, *extra])

# Bit-exact resume, layout unchanged: stopped at step 2, resumed to 4, against one go.
train("fsdp_ref")
train("fsdp", "train.stop_at_step=2")
if rank == 0:
    shutil.copytree(root / "fsdp", root / "fsdp_at2")  # resumed by one process in the test
dist.barrier()
train("fsdp", "train.resume=true")
# Today's format (one process, full files) resumed by 2 ranks FSDP2; saved sharded at step 4.
train("mixed", "train.steps=6", "train.stop_at_step=4", "train.resume=true")
# ... and by 2 ranks of tensor parallelism (a (data 1, tensor 2) mesh, FSDP2 over data).
train("tp", "train.steps=6", "train.stop_at_step=4", "train.resume=true", "train.tensor_parallel=2")
# Activation checkpointing on every block under FSDP2: the same losses, to the last bit.
train("fsdp_ac", "train.activation_checkpointing=1")
# FSDP2 mixed precision: bf16 matmul weights; the activation's unit computes in fp32, hands on bf16.
seen = {}
def matmul(m, i, o):
    seen.setdefault("matmul", str(m.weight.dtype))
def activation(m, i, o):
    seen.setdefault("activation", [str(i[0].dtype), str(m.weight.dtype), str(o.dtype)])
def watch(model):
    model.layers[0].attn.q_proj.register_forward_hook(matmul)
    model.layers[0].mlp.act.register_forward_hook(activation)
run("tiny", [*args, f"train.out_dir={root / 'bf16'}", *fsdp, "train.precision=bf16-fsdp", "train.steps=2"],
    setup_hook=watch)
if rank == 0:
    (root / "dtypes.json").write_text(json.dumps(seen))
# Asynchronous saves: step 2's files are written only once step 3 has changed the weights; then a
# resume from step 2 (the copy without step 4).
held = pytest.MonkeyPatch()
hold_write_until_a_step_ends(held, 2)
train("async", "train.checkpoint_async=true")
held.undo()
if rank == 0:
    shutil.copytree(root / "async", root / "async_at2")
    shutil.rmtree(root / "async_at2" / "checkpoints" / "step_00000004")
    (root / "async_at2" / "checkpoints" / "latest").write_text("step_00000002")
dist.barrier()
train("async_at2", "train.resume=true", "train.checkpoint_async=true")
if rank == 0:
    (root / "done.txt").write_text("ok")
dist.barrier()
# An I/O error on rank 1 while it hashes step 4's shards: every rank raises (rank 0 names rank 1)
# instead of waiting at the next collective for it; step 2 stays the latest checkpoint.
own_files = S._own_files
def failing(tmp, r):
    if r == 1 and "step_00000004" in tmp.name:
        raise OSError(5, "Input/output error", str(tmp))
    return own_files(tmp, r)
S._own_files = failing
try:
    train("io_error")
    raised = "nothing"
except Exception as e:
    raised = f"{type(e).__name__}: {e}"
(root / f"io_error_rank{rank}.txt").write_text(raised)
dist.barrier()
# SIGKILL of rank 1 while it writes step 4's shards: step 2 must stay the latest checkpoint.
def dying(tmp, r):
    if r == 1 and "step_00000004" in tmp.name:
        os.kill(os.getpid(), signal.SIGKILL)
    return own_files(tmp, r)
S._own_files = dying
train("killed")
'''


def _args(tmp_path):
    return ["train.device=cpu", "model.preset=debug", "model.activation=polynorm", "data.tokenizer=byte",
            "data.max_documents=300", f"data.cache_dir={tmp_path / 'cache'}", "data.seq_len=32",
            "train.batch_size=8", "train.micro_batch_size=4", "train.steps=4", "train.eval_every=2",
            "train.eval_batches=1", "train.checkpoint_every=2", "train.keep_checkpoints=3", "train.progress=false"]


def _losses(folder) -> dict[int, float]:
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}


def _train(tmp_path, name, *extra):
    return run("tiny", [*_args(tmp_path), f"train.out_dir={tmp_path / name}", *extra])


def hold_write_until_a_step_ends(monkeypatch, step: int) -> None:
    """Checkpoint ``step``'s file writes wait until a training step has ended after they began, so
    the optimizer has changed the live weights before anything of that checkpoint is written."""
    ended, change = [0], threading.Condition()
    train_step, write_data = Trainer.train_step, FileSystemWriter.write_data

    def counted_step(self, *args):
        record = train_step(self, *args)
        with change:
            ended[0] += 1
            change.notify_all()
        return record

    def held_write(self, plan, planner):
        if f"step_{step:08d}" in str(self.path):
            with change:
                before = ended[0]
                assert change.wait_for(lambda: ended[0] > before, timeout=120)
        return write_data(self, plan, planner)

    monkeypatch.setattr(Trainer, "train_step", counted_step)
    monkeypatch.setattr(FileSystemWriter, "write_data", held_write)


def _disk_full_at(monkeypatch, step: int) -> None:
    """Checkpoint ``step``'s shard writes fail with ENOSPC."""
    write_data = FileSystemWriter.write_data

    def failing(self, plan, planner):
        if f"step_{step:08d}" in str(self.path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_data(self, plan, planner)

    monkeypatch.setattr(FileSystemWriter, "write_data", failing)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    # One job per test session: pytest-xdist's workers share the base folder's parent and the
    # session's PYTEST_XDIST_TESTRUNUID; the first to take the lock trains, the tests write to
    # distinct run folders.
    from filelock import FileLock

    uid = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if uid is None:
        tmp_path = tmp_path_factory.mktemp("sharded")
        _launch(tmp_path)
        return tmp_path
    shared = tmp_path_factory.getbasetemp().parent
    with FileLock(str(shared / f"sharded-{uid}.lock")):
        tmp_path = shared / f"sharded-{uid}"
        if not (tmp_path / "done.txt").exists():
            shutil.rmtree(tmp_path, ignore_errors=True)
            tmp_path.mkdir()
            _launch(tmp_path)
    return tmp_path


def _launch(tmp_path):
    # One process, today's format: stopped at step 2 (copied for the 2-rank resume), then on to 6.
    _train(tmp_path, "one", "train.steps=6", "train.stop_at_step=2")
    shutil.copytree(tmp_path / "one", tmp_path / "mixed")
    shutil.copytree(tmp_path / "one", tmp_path / "tp")
    _train(tmp_path, "one", "train.steps=6", "train.resume=true")
    script = tmp_path / "job.py"
    script.write_text(_JOB)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(tmp_path), json.dumps(_args(tmp_path)), os.path.dirname(__file__)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert (tmp_path / "done.txt").exists(), proc.stdout[-2000:] + proc.stderr[-5000:]
    assert proc.returncode != 0 and "SIGKILL" in proc.stderr, proc.stderr[-3000:]  # the last scenario dies


def test_every_rank_writes_its_own_shards_and_resume_is_bit_exact(runs):
    step4 = runs / "fsdp" / "checkpoints" / "step_00000004"
    assert is_sharded(step4) and not (step4 / "model.safetensors").exists()
    for sub in ("model", "optimizer"):
        assert sorted(f.name for f in (step4 / sub).glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    sums = json.loads((step4 / "checksums.json").read_text())
    assert {"model/__1_0.distcp", "optimizer/__0_0.distcp", "state.pt", "config.yaml"} <= set(sums)
    # Same layout, same reduction order: resuming changes nothing, to the last bit.
    assert _losses(runs / "fsdp") == _losses(runs / "fsdp_ref")


def test_resume_under_another_world_size_continues_the_loss_curve(runs):
    one = _losses(runs / "one")
    # 1 process -> 2 ranks FSDP2 (steps 3-4) -> 1 process (steps 5-6). The weights are moved exactly;
    # what differs is the order of the gradient sums (two ranks' halves, then all-reduce), a few
    # float32 ulps per step, which 1e-6 relative bounds over these 4 steps.
    _train(runs, "mixed", "train.steps=6", "train.resume=true")
    mixed = _losses(runs / "mixed")
    assert sorted(mixed) == sorted(one) == [1, 2, 3, 4, 5, 6]
    assert [mixed[s] for s in range(1, 7)] == pytest.approx([one[s] for s in range(1, 7)], rel=1e-6, abs=0)
    # 1 process -> 2 ranks tensor parallel (steps 3-4) -> 1 process (steps 5-6): the same curve.
    _train(runs, "tp", "train.steps=6", "train.resume=true")
    tp = _losses(runs / "tp")
    assert [tp[s] for s in range(1, 7)] == pytest.approx([one[s] for s in range(1, 7)], rel=1e-6, abs=0)
    # 2 ranks FSDP2 -> 1 process: the steps after 2 follow the 2-rank run's curve.
    _train(runs, "fsdp_at2", "train.resume=true")
    ref = _losses(runs / "fsdp_ref")
    assert [_losses(runs / "fsdp_at2")[s] for s in (3, 4)] == pytest.approx([ref[3], ref[4]], rel=1e-6, abs=0)


def test_activation_checkpointing_and_mixed_precision_under_fsdp2(runs):
    assert _losses(runs / "fsdp_ac") == _losses(runs / "fsdp_ref")  # recomputation is the same arithmetic
    assert json.loads((runs / "dtypes.json").read_text()) == {
        "matmul": "torch.bfloat16", "activation": ["torch.float32", "torch.float32", "torch.bfloat16"]}
    bf16, ref = _losses(runs / "bf16"), _losses(runs / "fsdp_ref")
    # bf16 weights and matmul inputs carry 8 bits of mantissa (relative rounding 2^-9 = 2e-3 per
    # value); over a few layers the loss of these two steps moves by well under 1%.
    assert [bf16[1], bf16[2]] == pytest.approx([ref[1], ref[2]], rel=1e-2)
    assert [bf16[1], bf16[2]] != [ref[1], ref[2]]  # bf16 really was in use


def test_tensor_parallelism_in_one_process_is_refused_naming_the_key(tmp_path):
    from polycom.errors import UsageError

    with pytest.raises(UsageError, match=r"^train\.tensor_parallel=2 needs 2 processes"):
        _train(tmp_path, "alone", "train.tensor_parallel=2")


def test_a_save_killed_midway_leaves_the_last_good_checkpoint(runs):
    folder = runs / "killed"
    assert checkpoint_step(latest_checkpoint(folder)) == 2
    assert not (folder / "checkpoints" / "step_00000004").exists()
    resumed = _train(runs, "killed", "train.resume=true")  # the torn temporary folder is no obstacle
    assert resumed.final_step == 4 and resumed.status == "completed"
    ref = _losses(runs / "fsdp_ref")
    assert [_losses(folder)[s] for s in (3, 4)] == pytest.approx([ref[3], ref[4]], rel=1e-6, abs=0)


def test_a_failure_on_one_rank_while_committing_is_raised_on_every_rank(runs):
    # Before: rank 0 waited at the checksum gather for rank 1, which had given up (a hang until
    # the process group's timeout, 30 minutes by default).
    assert (runs / "io_error_rank1.txt").read_text().startswith("OSError: [Errno 5] Input/output error")
    rank0 = (runs / "io_error_rank0.txt").read_text()
    assert rank0.startswith("CheckpointError: checkpoint step 4: rank 1 failed while committing it (OSError: [Errno 5]")
    assert checkpoint_step(latest_checkpoint(runs / "io_error")) == 2


def test_export_analyze_and_generate_read_sharded_checkpoints(runs, capsys):
    from polycom.analysis.load import load_model, resolve_run
    from polycom.cli import main
    from polycom.evaluation.load import load_run

    folder = runs / "fsdp"
    step4 = latest_checkpoint(folder)
    weights, metadata = load_weights(step4)
    assert metadata["step"] == "4"
    loaded = load_run(folder)  # what export and generate read
    assert loaded.step == 4
    assert all(torch.equal(t, weights[k]) for k, t in loaded.model.state_dict().items() if k in weights)
    assert set(weights) <= set(loaded.model.state_dict())
    files = resolve_run(folder)  # analyze
    assert [f.name for f in files.checkpoints] == ["step_00000002", "step_00000004"]
    model = load_model(step4, files.config)
    assert all(torch.equal(t, weights[k]) for k, t in model.state_dict().items() if k in weights)
    assert main(["generate", str(folder), "--prompt", "the", "--max-new-tokens", "4", "--seed", "0"]) == 0
    assert main(["export", str(folder), "--out", str(runs / "hf")]) == 0
    assert (runs / "hf" / "config.json").is_file()


def test_a_full_disk_during_the_shard_writes_raises_disk_full_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    # DCP wraps the writer's OSError in a CheckpointException, a BaseException: save_sharded must
    # still recognise the full disk. One process, no group: the collectives are no-ops.
    from polycom.train.sharded_checkpoint import save_sharded

    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    save_sharded(tmp_path, 2, model, optimizer, {}, "")
    _disk_full_at(monkeypatch, 4)
    with pytest.raises(DiskFullError, match=r"while writing .*step_00000004.*/model; the last good checkpoint step 2"):
        save_sharded(tmp_path, 4, model, optimizer, {}, "")
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step_00000002"]


# --- train.checkpoint_async -----------------------------------------------------------------

ASYNC = "train.checkpoint_async=true"


def test_asynchronous_saves_on_two_ranks_hold_their_steps_state_and_resume_bit_exact(runs):
    ref = _losses(runs / "fsdp_ref")
    assert _losses(runs / "async") == ref  # the background writes leave training as it was
    for step in (2, 4):  # step 2's files were written after step 3's update
        name = f"checkpoints/step_{step:08d}"
        written, expected = load_weights(runs / "async" / name)[0], load_weights(runs / "fsdp_ref" / name)[0]
        assert written.keys() == expected.keys() and all(torch.equal(written[k], expected[k]) for k in expected)
    assert _losses(runs / "async_at2") == ref  # resumed from step 2: the same steps 3-4 to the last bit


def test_asynchronous_saves_in_one_process_hold_their_steps_state_and_resume_bit_exact(runs, monkeypatch):
    one = _losses(runs / "one")  # the same 6 steps saved synchronously, in one process
    hold_write_until_a_step_ends(monkeypatch, 2)  # steps 3 and 4 run while step 2 is written
    stopped = _train(runs, "async_one", ASYNC, "train.steps=6", "train.stop_at_step=4")
    assert stopped.status == "stopped" and _losses(runs / "async_one") == {s: one[s] for s in (1, 2, 3, 4)}
    step2 = runs / "async_one" / "checkpoints" / "step_00000002"
    assert is_sharded(step2)  # the DCP format, also in one process
    written, expected = load_weights(step2)[0], load_weights(runs / "one" / "checkpoints" / "step_00000002")[0]
    assert written.keys() == expected.keys() and all(torch.equal(written[k], expected[k]) for k in expected)
    # Resumed from step 2 (weights, AdamW's moments, scheduler, RNG): steps 3-6 as in one go.
    shutil.rmtree(runs / "async_one" / "checkpoints" / "step_00000004")
    (runs / "async_one" / "checkpoints" / "latest").write_text("step_00000002")
    resumed = _train(runs, "async_one", ASYNC, "train.steps=6", "train.resume=true")
    assert resumed.final_step == 6 and resumed.train_losses == [one[s] for s in (3, 4, 5, 6)]


def test_a_failed_background_write_is_raised_and_the_last_checkpoint_kept(tmp_path, monkeypatch):
    _disk_full_at(monkeypatch, 4)
    with pytest.raises(DiskFullError, match=r"no space left on device while writing .*step_00000004.*/model; "
                                            r"the last good checkpoint step 2 is kept"):
        _train(tmp_path, "full", ASYNC)
    assert sorted(p.name for p in (tmp_path / "full" / "checkpoints").iterdir()) == ["latest", "step_00000002"]


_KILLED = r'''
import os, signal, sys
from torch.distributed.checkpoint import FileSystemWriter
from polycom.train import run

write_data = FileSystemWriter.write_data
def dying(self, plan, planner):  # on the background thread, while the loop trains step 3
    if "step_00000002" in str(self.path):
        os.kill(os.getpid(), signal.SIGKILL)
    return write_data(self, plan, planner)
FileSystemWriter.write_data = dying
run("tiny", sys.argv[1:])
'''


def test_a_sigkill_during_the_background_write_leaves_the_last_good_checkpoint(runs):
    folder = runs / "async_killed"
    args = [*_args(runs), f"train.out_dir={folder}", "train.steps=6", "train.checkpoint_every=1", ASYNC]
    proc = subprocess.run([sys.executable, "-c", _KILLED, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert checkpoint_step(latest_checkpoint(folder)) == 1
    assert not (folder / "checkpoints" / "step_00000002").exists()
    # Resumed with synchronous saves (train.checkpoint_async may change on resume); the torn
    # temporary folder is no obstacle.
    resumed = _train(runs, "async_killed", "train.steps=6", "train.stop_at_step=3", "train.resume=true")
    one = _losses(runs / "one")
    assert resumed.final_step == 3 and resumed.train_losses == [one[2], one[3]]


def test_checkpoint_async_without_async_save_is_refused_naming_the_key(monkeypatch):
    import torch.distributed.checkpoint as dcp

    from polycom.errors import UsageError
    from polycom.train.async_checkpoint import AsyncCheckpointer

    import torch.distributed._state_dict_utils as utils

    refusal = r"^train\.checkpoint_async=true needs torch\.distributed\.checkpoint\.async_save and its host-copy helpers"
    with monkeypatch.context() as patch:
        patch.delattr(dcp, "async_save")
        with pytest.raises(UsageError, match=refusal):
            AsyncCheckpointer()
    monkeypatch.delattr(utils, "_create_cpu_state_dict")  # a torch with async_save but not the private helper
    with pytest.raises(UsageError, match=refusal):
        AsyncCheckpointer()
