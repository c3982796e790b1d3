"""The run folder never loses or misstates a run: reruns, a second writer, changed resumes,
damaged metrics, finished runs, NaN reports, Ctrl-C and a full disk (issue 14)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest
import torch

from polycom.cli import main
from polycom.data import BatchSampler, prepare_data
from polycom.train import Trainer, load_config, run
from polycom.train.checkpoint import latest_checkpoint
from polycom.train.logging import cut_metrics
from polycom.train.run_folder import RunFolderError


def tiny_run(tmp_path, name="run", *extra):
    """A 1-layer, 32-wide model, 4 steps of 4 sequences of 32 bytes: about a second a run."""
    return [
        "model.preset=debug", "model.n_layers=1", "model.d_model=32", "model.n_heads=2", "data.tokenizer=byte",
        "data.max_documents=200", f"data.cache_dir={tmp_path / 'cache'}", "data.seq_len=32",
        "train.batch_size=4", "train.micro_batch_size=4", "train.steps=4", "train.eval_every=2",
        "train.checkpoint_every=2", "train.eval_batches=1", "optim.warmup_steps=1", "train.progress=false",
        f"train.out_dir={tmp_path / name}", *extra,
    ]


def records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def train_steps(out) -> list[int]:
    return [r["step"] for r in records(out) if r["kind"] == "train"]


def test_rerun_without_resume_is_refused_and_overwrite_replaces_the_run_whole(tmp_path, capsys):
    out = tmp_path / "run"
    first = run("tiny", tiny_run(tmp_path))
    kept = {name: (out / name).read_bytes() for name in ("metrics.jsonl", "summary.json", "config.yaml")}
    assert main(["train", *tiny_run(tmp_path, "run", "train.seed=1")]) == 2
    err = capsys.readouterr().err
    assert f"train.out_dir={out} already holds a run" in err
    assert "--resume (train.resume=true)" in err and "--overwrite (train.overwrite=true)" in err
    assert {name: (out / name).read_bytes() for name in kept} == kept  # refused before touching anything
    assert main(["train", *tiny_run(tmp_path), "--overwrite"]) == 0
    # The same config again: a clean folder holds exactly what the first run wrote, one run's worth.
    second = json.loads((out / "summary.json").read_text())
    assert second["train_losses"] == first.train_losses  # CPU training is deterministic
    assert [r["kind"] for r in records(out)].count("run") == 1 and train_steps(out) == [1, 2, 3, 4]
    assert sorted(p.name for p in (out / "checkpoints").glob("step_*")) == ["step_00000002", "step_00000004"]
    with pytest.raises(RunFolderError, match="contradict"):
        run("tiny", tiny_run(tmp_path, "run", "train.resume=true", "train.overwrite=true"))


_HOLD_LOCK = """
import sys, time
from polycom.train.run_folder import RunFolderLock
RunFolderLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def test_second_writer_is_refused_naming_the_holder_and_a_dead_holders_lock_is_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderError, match=rf"{out} is in use by another run \(pid {holder.pid} on "):
            run("tiny", tiny_run(tmp_path))
    finally:
        holder.kill()  # SIGKILL: no clean release, the lock file still names it
        holder.wait()
    assert not (out / "metrics.jsonl").exists()  # the refused run wrote nothing
    assert run("tiny", tiny_run(tmp_path)).status == "completed"
    assert f"taking over the lock of a run that ended without releasing it (pid {holder.pid} on" \
        in capsys.readouterr().out
    assert (out / ".lock").read_text() == ""  # released on exit


def test_resume_refuses_run_changing_keys_listing_each_and_records_the_allowed_ones(tmp_path):
    out = tmp_path / "run"
    run("tiny", tiny_run(tmp_path, "run", "train.stop_at_step=2"))
    before = (out / "metrics.jsonl").read_bytes()
    with pytest.raises(RunFolderError) as refused:
        run("tiny", tiny_run(tmp_path, "run", "train.resume=true", "optim.lr=1e-2", "train.seed=7",
                             "model.d_model=48"))
    message = str(refused.value)
    for change in ("model.d_model: 32 -> 48", "optim.lr: 0.003 -> 0.01", "train.seed: 0 -> 7"):
        assert change in message
    assert "train.steps" in message.split("may change:")[1]  # the allowed keys are listed
    assert (out / "metrics.jsonl").read_bytes() == before
    resumed = run("tiny", tiny_run(tmp_path, "run", "train.resume=true", "train.steps=6", "train.log_every=2"))
    assert resumed.status == "completed" and resumed.final_step == 6
    assert [r for r in records(out) if r["kind"] == "resume"] == [
        {"kind": "resume", "step": 2, "changed": {"train.steps": [4, 6], "train.log_every": [1, 2],
                                                   "train.stop_at_step": [2, 0]}}]
    assert train_steps(out) == [1, 2, 4, 6]  # log_every=2 from step 3 on
    assert load_config(out / "config.yaml").train.steps == 6


def test_torn_last_metrics_line_is_dropped_and_a_damaged_line_elsewhere_is_named(tmp_path, capsys):
    out = tmp_path / "run"
    run("tiny", tiny_run(tmp_path, "run", "train.stop_at_step=2"))
    path = out / "metrics.jsonl"
    path.write_text(path.read_text() + '{"kind": "train", "st')  # a full disk cut the last write
    assert run("tiny", tiny_run(tmp_path, "run", "train.resume=true")).final_step == 4
    assert "dropping the torn last line" in capsys.readouterr().out
    assert train_steps(out) == [1, 2, 3, 4]  # and every line parses
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:15]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"{path}:3: not a JSON record"):
        run("tiny", tiny_run(tmp_path, "run", "train.resume=true", "train.steps=6"))


def test_metrics_cut_back_is_atomic_when_the_rename_fails(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    original = "".join(json.dumps({"kind": "train", "step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 6))
    path.write_text(original)

    def crash(src, dst):
        raise OSError(errno.EIO, "simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        cut_metrics(path, 2)
    assert path.read_text() == original and os.listdir(tmp_path) == ["metrics.jsonl"]  # no temporary left
    monkeypatch.undo()
    cut_metrics(path, 2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]


def test_sigterm_is_handled_as_ctrl_c_checkpoint_and_one_line(tmp_path):
    """Slurm and Kubernetes stop jobs with SIGTERM: it used to end with rc 143, no message, and the steps
    since the last checkpoint lost. Now: a checkpoint at the interrupt, the lock released, one line."""
    import signal
    import time

    out = tmp_path / "run"
    args = tiny_run(tmp_path, "run", "train.steps=100000", "train.checkpoint_every=100000", "train.eval_every=0")
    proc = subprocess.Popen([sys.executable, "-m", "polycom.cli", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not ((out / "metrics.jsonl").exists()
                                                                        and train_steps(out)):
            time.sleep(0.2)
        assert train_steps(out), "training never started"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:  # never leave a 100000-step run behind
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert err.count("\n") == 1 and "checkpoint saved" in err and "--resume" in err, err
    last = latest_checkpoint(out)
    assert last is not None and int(last.name.removeprefix("step_")) >= 1
    # the lock was released: resuming for a few more steps works at once
    resumed = run("tiny", tiny_run(tmp_path, "run", "train.resume=true",
                                   f"train.steps={int(last.name.removeprefix('step_')) + 2}"))
    assert resumed.final_step == int(last.name.removeprefix("step_")) + 2


def test_resume_redoes_an_evaluation_interrupted_by_ctrl_c(tmp_path, monkeypatch):
    """Ctrl-C during the validation pass at step 4 lost that point for good (a curve with a missing point)."""
    out = tmp_path / "run"
    real = Trainer.evaluate
    calls = []

    def interrupted_at_step_4(self):
        calls.append(1)
        if len(calls) == 2:  # evaluations at steps 2, 4, 6: the second one is cut short
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(Trainer, "evaluate", interrupted_at_step_4)
    with pytest.raises(KeyboardInterrupt, match="interrupted at step 4"):
        run("tiny", tiny_run(tmp_path, "run", "train.steps=6"))
    monkeypatch.setattr(Trainer, "evaluate", real)
    result = run("tiny", tiny_run(tmp_path, "run", "train.steps=6", "train.resume=true"))
    assert [r["step"] for r in records(out) if r["kind"] == "val"] == [2, 4, 6]
    assert [e.step for e in result.evals] == [4, 6]  # this call's evaluations: the redone one first


def test_a_torn_summary_json_is_named_and_rewritten_on_resume(tmp_path, capsys):
    """A full disk used to leave a 100-byte summary.json that blocked every resume with
    "Expecting ',' delimiter" naming no file; the summary is now written atomically, and an old torn one
    is named and rebuilt from the last checkpoint."""
    out = tmp_path / "run"
    want = run("tiny", tiny_run(tmp_path, "run"))
    summary = out / "summary.json"
    summary.write_text(summary.read_text()[:100])
    again = run("tiny", tiny_run(tmp_path, "run", "train.resume=true"))
    assert f"{summary} is unreadable" in capsys.readouterr().out
    assert again.final_step == want.final_step and again.val_loss == pytest.approx(want.val_loss, rel=1e-6)
    assert json.loads(summary.read_text())["final_step"] == want.final_step
    assert not [p.name for p in out.iterdir() if p.name.startswith(".summary.json")]  # no temporary left


def test_a_full_disk_while_logging_is_one_error_naming_metrics_jsonl(tmp_path):
    from polycom.train.checkpoint import DiskFullError
    from polycom.train.logging import MetricsLogger

    logger = MetricsLogger(tmp_path, enabled=True)
    logger.log({"kind": "train", "step": 1})

    class FullDisk:
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            raise OSError(errno.ENOSPC, "No space left on device")  # the buffered rest cannot be written either

    logger.file.close()
    logger.file = FullDisk()
    with pytest.raises(DiskFullError, match=f"no space left on device while writing {tmp_path / 'metrics.jsonl'}") as e:
        logger.log({"kind": "train", "step": 2})
    assert e.value.__cause__ is None and e.value.__suppress_context__  # one error, not a chain of three
    logger.close()  # the failure was reported once; closing does not raise it again


def test_a_corpus_of_nul_bytes_is_one_line_not_a_division_by_zero(tmp_path, capsys):
    from polycom.cli import main

    (tmp_path / "nul.txt").write_bytes(b"\0" * 200_000)
    assert main(["train", *tiny_run(tmp_path, "run", f"data.source={tmp_path / 'nul.txt'}")]) == 2
    err = capsys.readouterr().err
    assert "holds no text bytes" in err and "data.source" in err and err.count("\n") == 1


def test_a_metrics_line_that_is_json_but_not_a_record_is_named(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"kind": "train", "step": 1}) + "\n123\n" + json.dumps({"kind": "train", "step": 2}) + "\n")
    with pytest.raises(ValueError, match=rf"{path}:2: not a JSON object \('123'\)"):  # was an AttributeError
        cut_metrics(path, 2)
    assert path.read_text().count("\n") == 3  # untouched


def test_resuming_a_finished_run_keeps_its_summary(tmp_path, capsys):
    out = tmp_path / "run"
    first = run("tiny", tiny_run(tmp_path))
    files = {name: (out / name).read_bytes() for name in ("summary.json", "metrics.jsonl", "config.yaml")}
    again = run("tiny", tiny_run(tmp_path, "run", "train.resume=true"))
    assert "already finished at step 4" in capsys.readouterr().out
    assert {name: (out / name).read_bytes() for name in files} == files
    assert again.train_losses == [] and again.final_step == 4
    assert (again.train_loss, again.val_loss, again.tokens_per_s) == (first.train_loss, first.val_loss,
                                                                      first.tokens_per_s)
    # Without summary.json (killed right after the last checkpoint) it is rebuilt from metrics.jsonl.
    (out / "summary.json").unlink()
    rebuilt = run("tiny", tiny_run(tmp_path, "run", "train.resume=true"))
    assert rebuilt.train_loss == first.train_loss and rebuilt.val_loss == first.val_loss
    # The median over steps [3:] of 4 steps is the 4th step's time, logged exactly.
    assert rebuilt.tokens_per_s == first.tokens_per_s > 0


def _overflowed_modules(model, batch) -> set[str]:
    """Reference: every module whose output gradient or weight gradient has a non-finite
    float32 norm, found with retain_grad after one forward and backward."""
    outputs = {}

    def keep(name):
        def hook(_module, _inputs, out):
            if isinstance(out, torch.Tensor) and out.requires_grad:
                out.retain_grad()
                outputs[name] = out
        return hook

    handles = [m.register_forward_hook(keep(n)) for n, m in model.named_modules() if n]
    model.zero_grad(set_to_none=True)
    model(batch[:, :-1], targets=batch[:, 1:]).loss.backward()
    for h in handles:
        h.remove()
    bad = {n for n, o in outputs.items() if o.grad is not None and not torch.isfinite(o.grad.norm())}
    return bad | {n.rsplit(".", 1)[0] for n, p in model.named_parameters()
                  if p.grad is not None and not torch.isfinite(p.grad.norm())}


@pytest.mark.parametrize("grad_clip", [1.0, 0.0])
def test_nan_report_at_lr_1e4_names_the_layer_where_gradients_overflow(tmp_path, monkeypatch, grad_clip):
    if grad_clip == 0:
        def no_clipping(*a, **k):
            raise AssertionError("optim.grad_clip=0 must not call a clipping function")
        monkeypatch.setattr(torch.nn.utils, "clip_grads_with_norm_", no_clipping)
        monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", no_clipping)
    models = []
    args = ["model.preset=debug", "model.activation=polynorm", "data.tokenizer=byte", "data.max_documents=300",
            f"data.cache_dir={tmp_path / 'cache'}", "data.seq_len=32", "train.batch_size=8",
            "train.micro_batch_size=4", "train.steps=30", "train.eval_every=0", "train.checkpoint_every=0",
            "train.progress=false", "optim.lr=1e4", f"optim.grad_clip={grad_clip}", f"train.out_dir={tmp_path / 'r'}"]
    m = run("tiny", args, setup_hook=models.append)
    assert m.status == "diverged"
    report = m.nan_report
    # lr=1e4 (5e2 in step 1 of the 20-step warmup): Adam moves every weight by ~5e2 a step, and
    # within 2-3 steps the gradient norms pass float32's range (squares over 3.4e38; measured:
    # step 3, group norms up to 3.1e25 with clipping, 1.5e25 without) while the loss is finite.
    names = dict(models[0].named_modules())
    step = report["step"]
    assert step >= 2 and report["first_nonfinite_activation"] in (None, *names)
    assert set(report["grad_norm_by_group"]) == {"decay", "no_decay", "activation"}
    assert max(report["grad_norm_by_group"].values()) > torch.finfo(torch.float32).max ** 0.5
    layer = report["first_nonfinite_gradient"]
    assert layer in names
    # Reference: replay the failing (last) micro-batch on the weights the skipped step left.
    cfg = load_config("tiny", args)
    data = prepare_data(cfg.data.corpus_spec(), cfg.data.tokenizer, cfg.data.vocab_size, cfg.data.cache_dir,
                        log=lambda *a: None)
    batch = BatchSampler(data.stream("train"), 32, seed=0).micro_batch(step - 1, 1, 0, 1, 4, 2)
    bad = _overflowed_modules(models[0], batch)
    assert layer in bad
    block = int(layer.split(".")[1])  # nothing nearer the output overflowed: backward met this layer first
    later = [n for n in bad if n in ("norm", "lm_head") or (n.startswith("layers.") and int(n.split(".")[1]) > block)]
    assert later == []
    assert report["n_nonfinite_gradients"] < len(list(models[0].parameters()))  # not "every parameter"


def test_ctrl_c_checkpoints_the_interrupted_step_and_resumes_to_the_same_losses(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real_step = Trainer.train_step

    def ctrl_c_in_step_3(self, step, next_batch):
        if step == 2 and not self.cfg.train.resume:
            raise KeyboardInterrupt
        return real_step(self, step, next_batch)

    monkeypatch.setattr(Trainer, "train_step", ctrl_c_in_step_3)
    assert main(["train", *tiny_run(tmp_path, "run", "train.checkpoint_every=0")]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"interrupted at step 2, checkpoint saved in {out}/checkpoints; continue with --resume" in err
    assert latest_checkpoint(out).name == "step_00000002"
    monkeypatch.undo()
    resumed = run("tiny", tiny_run(tmp_path, "run", "train.checkpoint_every=0", "train.resume=true"))
    full = run("tiny", tiny_run(tmp_path, "full", "train.checkpoint_every=0"))
    assert resumed.train_losses == full.train_losses[2:] and resumed.val_loss == full.val_loss  # bitwise


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4480 vs 4374"),  # torch.save's form
], ids=["ENOSPC", "inline_container"])
def test_disk_full_while_checkpointing_is_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys,
                                                                                   error):
    out, real_save, calls = tmp_path / "run", torch.save, []

    def disk_fills_at_second_checkpoint(obj, f, *a, **k):
        calls.append(f)
        if len(calls) > 2:  # checkpoint 2 writes optimizer.pt and state.pt; checkpoint 4 fails
            raise error
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", disk_fills_at_second_checkpoint)
    assert main(["train", *tiny_run(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == (f"polycom train: no space left on device while writing {calls[2]}; "
                   "the last good checkpoint step 2 is kept\n")
    assert calls[2].name == "optimizer.pt" and ".tmp-step_00000004" in str(calls[2])
    assert latest_checkpoint(out).name == "step_00000002"
    assert not list((out / "checkpoints").glob(".tmp-*"))  # the partial copy is removed
