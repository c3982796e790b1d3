"""The trainer on CPU: learning, exact resume, crash-safe checkpoints, NaN guard, optimizer groups."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch

from polycom.train import RunResult, load_config, run
from polycom.train.checkpoint import latest_checkpoint, load_checkpoint
from polycom.train.optim import lr_lambda, param_groups


def small_run(tmp_path, name, *extra):
    """A debug-size run on 300 documents of the embedded corpus with the byte tokenizer."""
    return [
        "model.preset=debug", "model.activation=polynorm", "data.tokenizer=byte", "data.max_documents=300",
        f"data.cache_dir={tmp_path / 'cache'}", "data.seq_len=32", "train.batch_size=8",
        "train.micro_batch_size=4", "train.steps=8", "train.eval_every=4", "train.checkpoint_every=4",
        "train.eval_batches=1", "train.progress=false", f"train.out_dir={tmp_path / name}", *extra,
    ]


def test_loss_decreases_on_the_default_corpus(tmp_path):
    args = ["model.preset=debug", "model.activation=polynorm", "data.tokenizer=byte",
            f"data.cache_dir={tmp_path / 'cache'}", "data.seq_len=64", "train.batch_size=16",
            "train.micro_batch_size=16", "train.steps=30", "train.eval_every=15", "train.eval_batches=2",
            "optim.lr=3e-3", "optim.warmup_steps=5", "train.checkpoint_every=0", "train.progress=false",
            f"train.out_dir={tmp_path / 'run'}"]
    m = run("tiny", args)
    losses = m.train_losses
    assert m.status == "completed" and len(losses) == 30
    assert sum(losses[-5:]) / 5 < losses[0] - 1.5  # ln(256) = 5.5 nats at init
    first, last = m.evals
    assert last.val_loss < first.val_loss
    # bits per byte of a byte tokenizer: nats/token / ln 2, up to the separators (0 bytes)
    assert last.val_bpb == pytest.approx(last.val_loss / math.log(2), rel=0.05)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["kind"] == "run" and len(records[0]["corpus_hash"]) == 64
    assert m.info["corpus_hash"] == records[0]["corpus_hash"]
    assert (tmp_path / "run" / "config.yaml").exists()
    assert m.flops == pytest.approx(m.tokens * m.flops_per_token)
    tokens_per_step = 16 * 64  # train.batch_size sequences of data.seq_len tokens
    assert m.tokens == 30 * tokens_per_step
    assert [e.step for e in m.evals] == [15, 30] and [e.tokens for e in m.evals] == [15 * tokens_per_step, m.tokens]
    assert m.peak_memory_bytes > 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert RunResult.from_dict(summary) == m  # summary.json round-trips to the same result


def test_resume_reproduces_the_uninterrupted_losses_exactly(tmp_path):
    full = run("tiny", small_run(tmp_path, "full"))
    first = run("tiny", small_run(tmp_path, "split", "train.stop_at_step=4"))
    assert first.status == "stopped" and first.final_step == 4
    second = run("tiny", small_run(tmp_path, "split", "train.resume=true"))
    assert first.train_losses + second.train_losses == full.train_losses  # bitwise
    assert second.val_loss == full.val_loss
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert steps == list(range(1, 9))
    done = run("tiny", small_run(tmp_path, "split", "train.resume=true"))  # already finished: no steps
    assert done.train_losses == [] and done.final_step == 8 and done.val_loss == full.val_loss


_CRASH_SCRIPT = """
import os, signal, sys
from polycom.train import checkpoint, run

real_save = checkpoint.save_file
calls = []

def save_then_die(tensors, filename, metadata=None):
    calls.append(filename)
    if len(calls) == 2:  # the second checkpoint: half-write the weights, then SIGKILL
        with open(filename, "wb") as f:
            f.write(b"partial")
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(tensors, filename, metadata=metadata)

checkpoint.save_file = save_then_die
run("tiny", sys.argv[1:])
"""


def test_killed_during_checkpoint_write_keeps_previous_checkpoint(tmp_path):
    args = small_run(tmp_path, "crash")
    proc = subprocess.run([sys.executable, "-c", _CRASH_SCRIPT, *args], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    folder = latest_checkpoint(tmp_path / "crash")
    assert folder.name == "step_00000004"
    ckpt = load_checkpoint(folder)
    assert ckpt["state"]["step"] == 4 and all(torch.isfinite(t).all() for t in ckpt["model"].values())
    resumed = run("tiny", args + ["train.resume=true"])
    assert resumed.status == "completed" and resumed.final_step == 8
    assert not list((tmp_path / "crash" / "checkpoints").glob(".tmp-*"))


def test_nan_guard_names_step_and_layer_and_keeps_last_checkpoint(tmp_path):
    forwards = []

    def poison_layer_1(model):
        def hook(_module, _inputs, out):
            forwards.append(1)
            return out * float("inf") if len(forwards) > 6 else out  # 2 micro-batches per step: step 4
        model.layers[1].mlp.act.register_forward_hook(hook)

    args = small_run(tmp_path, "nan", "train.checkpoint_every=2", "train.eval_every=0")
    m = run("tiny", args, setup_hook=poison_layer_1)
    assert m.status == "diverged" and m.final_step == 3
    report = m.nan_report
    assert report["step"] == 4
    assert report["first_nonfinite_activation"] == "layers.1.mlp.act"
    assert report["first_nonfinite_gradient"] is not None
    saved = json.loads((tmp_path / "nan" / "nan_report.json").read_text())
    assert saved["first_nonfinite_activation"] == "layers.1.mlp.act"
    folder = latest_checkpoint(tmp_path / "nan")
    assert folder.name == "step_00000002"
    assert all(torch.isfinite(t).all() for t in load_checkpoint(folder)["model"].values())


def test_param_groups_and_activation_decay_option():
    from polycom.models import build_model

    model = build_model(load_config("tiny", ["model.preset=debug"]).model.build_config(256, 32))
    for decay_act in (False, True):
        cfg = load_config("tiny", [f"optim.decay_activation_coefficients={decay_act}"]).optim
        groups = {g["name"]: g for g in param_groups(model, cfg)}
        n_layers = len(model.layers)
        assert len(groups["activation"]["params"]) == 2 * n_layers  # weight (3,) + bias (1,) per layer
        assert groups["activation"]["weight_decay"] == (0.1 if decay_act else 0.0)
        assert all(p.ndim >= 2 for p in groups["decay"]["params"])
        assert all(p.ndim == 1 for p in groups["no_decay"]["params"])
        total = sum(len(g["params"]) for g in groups.values())
        assert total == len(list(model.parameters()))


def test_lr_schedule_warmup_then_cosine_to_min():
    values = [lr_lambda(s, 10, 111, 0.1) for s in range(111)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[-1] == pytest.approx(0.1) and values[60] == pytest.approx(0.55)
    assert all(a >= b for a, b in zip(values[9:], values[10:]))


@pytest.mark.slow
def test_default_train_command_learns(tmp_path):
    """`polycom train` with the default preset as a user runs it (tokenizer, shards, training),
    cut to 100 of its 300 steps: the full run cost CI 194 s of one worker, this about a third."""
    env = {**os.environ, "POLYCOM_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(["polycom", "train", f"train.out_dir={tmp_path / 'run'}", "train.steps=100",
                           "train.progress=false"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    match = re.search(r"val loss ([0-9.]+), val bpb ([0-9.]+)", proc.stdout)
    assert match, proc.stdout[-2000:]
    val_loss, val_bpb = float(match.group(1)), float(match.group(2))
    # Untrained, the loss is ln(4096) = 8.3 nats; 100 steps reach 4.60 (bpb 2.00, measured on
    # Python 3.11.7's corpus on 2026-12-07). The bounds leave room for other corpora and versions.
    assert val_loss < 5.0 and val_bpb < 2.2, (val_loss, val_bpb)


def test_cli_train_prints_final_validation(tmp_path, capsys):
    from polycom.cli import main

    assert main(["train", *small_run(tmp_path, "cli", "train.steps=2", "train.tensorboard=true")]) == 0
    out = capsys.readouterr().out
    assert out.count("final: step 2, val loss") == 1 and "val bpb" in out
    assert list((tmp_path / "cli" / "tb").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("old_torch", [False, True])
def test_grad_norm_and_clipping_equal_the_formula_on_every_torch(old_torch, monkeypatch):
    """torch < 2.6 has no get_total_norm / clip_grads_with_norm_: the fallback must give the same numbers."""
    from polycom.train.optim import clip_grads_to_norm_, total_grad_norm

    if old_torch:
        monkeypatch.delattr(torch.nn.utils, "get_total_norm", raising=False)
        monkeypatch.delattr(torch.nn.utils, "clip_grads_with_norm_", raising=False)
    params = [torch.nn.Parameter(torch.zeros(3, 4)), torch.nn.Parameter(torch.zeros(5))]
    params[0].grad = torch.arange(12.0).reshape(3, 4)
    params[1].grad = torch.full((5,), -2.0)
    want = math.sqrt(sum(i * i for i in range(12)) + 5 * 4.0)  # sqrt of the summed squares, by hand
    norm = total_grad_norm([p.grad for p in params])
    assert norm.item() == pytest.approx(want, rel=1e-6)
    clip_grads_to_norm_(params, 1.0, norm)
    scale = 1.0 / (want + 1e-6)  # torch's rule: max_norm / (norm + 1e-6), capped at 1
    assert torch.allclose(params[0].grad, torch.arange(12.0).reshape(3, 4) * scale, rtol=1e-6)
    assert torch.allclose(params[1].grad, torch.full((5,), -2.0 * scale), rtol=1e-6)
    clip_grads_to_norm_(params, 1e9, total_grad_norm([p.grad for p in params]))  # under the limit: unchanged
    assert torch.allclose(params[1].grad, torch.full((5,), -2.0 * scale), rtol=1e-6)
