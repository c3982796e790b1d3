"""Run folders are safe to receive and hard to lose (issue 19, items 1-4): a pickle payload in a
checkpoint runs under no command, checkpoints are read only from the run's own checkpoints/,
a resume never wipes a run's history, and export --force replaces only an earlier export."""

from __future__ import annotations

import json
import os
import random
import shutil

import numpy as np
import pytest
import torch

from polycom.cli import main
from polycom.train import run
from polycom.train.checkpoint import (CheckpointError, latest_checkpoint, load_checkpoint, rng_state,
                                      set_rng_state)


def tiny_run(tmp_path, name="run", *extra):
    """A 1-layer, 32-wide byte model, 4 steps of 4 sequences of 32 bytes, checkpoints at 2 and 4."""
    return [
        "model.preset=debug", "model.n_layers=1", "model.d_model=32", "model.n_heads=2", "data.tokenizer=byte",
        "model.activation_kwargs={implementation: eager}",
        "data.max_documents=200", f"data.cache_dir={tmp_path / 'cache'}", "data.seq_len=32",
        "train.batch_size=4", "train.micro_batch_size=4", "train.steps=4", "train.eval_every=2",
        "train.checkpoint_every=2", "train.eval_batches=1", "optim.warmup_steps=1", "train.progress=false",
        f"train.out_dir={tmp_path / name}", *extra,
    ]


class Payload:
    """Unpickling this creates the file ``marker``: what a crafted checkpoint could do with any code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant(path, marker) -> None:
    """Replace a checkpoint's .pt file by a pickle that still holds the real content next to a payload."""
    real = torch.load(path, weights_only=False)  # the file the test's own run just wrote
    torch.save({**real, "payload": Payload(marker)} if isinstance(real, dict) else Payload(marker), path)


# --- 1. no code runs from a checkpoint ----------------------------------------------------------


@pytest.mark.parametrize("planted", ["state.pt", "optimizer.pt"])
def test_a_pickle_payload_does_not_run_under_resume(tmp_path, capsys, planted):
    out, marker = tmp_path / "run", tmp_path / "PAYLOAD_RAN"
    run("tiny", tiny_run(tmp_path, "run", "train.stop_at_step=2"))  # a partial run: resume loads step 2
    plant(out / "checkpoints" / "step_00000002" / planted, marker)
    assert main(["train", *tiny_run(tmp_path), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert not marker.exists()
    assert len(err.splitlines()) == 1 and f"step_00000002/{planted}: refused" in err
    assert latest_checkpoint(out).name == "step_00000002"  # nothing trained past the refused checkpoint


def test_generate_and_export_open_neither_pt_file_so_a_payload_does_not_run(tmp_path, capsys):
    pytest.importorskip("transformers")
    out, marker = tmp_path / "run", tmp_path / "PAYLOAD_RAN"
    run("tiny", tiny_run(tmp_path))
    for name in ("state.pt", "optimizer.pt"):
        plant(out / "checkpoints" / "step_00000004" / name, marker)
    assert main(["generate", str(out), "--prompt", "ab", "--max-new-tokens", "3", "--temperature", "0"]) == 0
    assert main(["export", str(out), "--out", str(tmp_path / "hf")]) == 0
    assert not marker.exists()
    assert json.loads((tmp_path / "hf" / "polycom_export.json").read_text())["step"] == 4


def test_checkpoint_files_load_with_weights_only_and_older_rng_states_still_restore(tmp_path):
    run("tiny", tiny_run(tmp_path))
    folder = latest_checkpoint(tmp_path / "run")
    for name in ("state.pt", "optimizer.pt"):  # tensors and plain values only
        torch.load(folder / name, weights_only=True)
    assert load_checkpoint(folder)["state"]["step"] == 4

    def draws():
        return torch.rand(2).tolist(), np.random.rand(2).tolist(), [random.random(), random.gauss(0, 1)]

    random.gauss(0, 1)  # leaves a cached gaussian in Python's state
    new = rng_state()
    # Before RNG states were stored as tensors, state.pt held numpy's and Python's states as they come.
    legacy = {"torch": new["torch"], "numpy": np.random.get_state(), "python": random.getstate()}
    want = draws()
    set_rng_state(new)
    assert draws() == want  # the tensor form restores exactly
    torch.save({"step": 4, "rng": legacy}, folder / "state.pt")
    (folder / "checksums.json").unlink()  # such a checkpoint had no checksums either (else: refused as changed)
    set_rng_state(load_checkpoint(folder)["state"]["rng"])  # the older form is still read (weights_only)
    assert draws() == want


# --- 2. checkpoints only from the run's own checkpoints/ ----------------------------------------


def test_latest_naming_another_runs_checkpoint_is_refused(tmp_path, capsys):
    pytest.importorskip("transformers")
    run("tiny", tiny_run(tmp_path, "mine"))
    run("tiny", tiny_run(tmp_path, "other", "train.seed=7"))
    mine = tmp_path / "mine" / "checkpoints"
    (mine / "latest").write_text("../../other/checkpoints/step_00000004")
    assert main(["export", str(tmp_path / "mine"), "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "latest" in err and "inside" in err
    assert not (tmp_path / "hf").exists()  # the other run's weights were not exported
    (mine / "latest").write_text(str(tmp_path / "other" / "checkpoints" / "step_00000004"))  # absolute
    with pytest.raises(CheckpointError, match="latest"):
        latest_checkpoint(tmp_path / "mine")
    # A step folder that is a link to another run's checkpoint is refused as well.
    (mine / "latest").write_text("step_00000004")
    shutil.rmtree(mine / "step_00000004")
    os.symlink(tmp_path / "other" / "checkpoints" / "step_00000004", mine / "step_00000004")
    assert main(["generate", str(tmp_path / "mine"), "--prompt", "a", "--max-new-tokens", "2"]) == 2
    assert "not a checkpoint folder inside" in capsys.readouterr().err
    assert main(["train", *tiny_run(tmp_path, "mine"), "--resume"]) == 2
    # And a weights file linking to another run's weights.
    (mine / "step_00000004").unlink()
    (mine / "latest").write_text("step_00000002")
    step2 = mine / "step_00000002"
    (step2 / "model.safetensors").unlink()
    os.symlink(tmp_path / "other" / "checkpoints" / "step_00000002" / "model.safetensors",
               step2 / "model.safetensors")
    assert main(["export", str(tmp_path / "mine"), "--out", str(tmp_path / "hf")]) == 2
    assert "outside its checkpoint folder" in capsys.readouterr().err and not (tmp_path / "hf").exists()


# --- 3. a resume never wipes a run's history ------------------------------------------------------


def test_resume_of_a_finished_run_without_checkpoints_keeps_its_history(tmp_path, capsys):
    out = tmp_path / "run"
    run("tiny", tiny_run(tmp_path))
    shutil.rmtree(out / "checkpoints")
    kept = {name: (out / name).read_bytes() for name in ("summary.json", "metrics.jsonl", "config.yaml")}
    assert main(["train", *tiny_run(tmp_path), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no checkpoint" in err and "--overwrite (train.overwrite=true)" in err
    assert {name: (out / name).read_bytes() for name in kept} == kept
    assert not (out / "checkpoints").exists()  # nothing retrained
    assert main(["train", *tiny_run(tmp_path), "--overwrite"]) == 0  # the explicit way to start again
    assert (out / "checkpoints" / "step_00000004").is_dir()


def test_overwrite_removes_a_linked_run_file_but_not_what_it_links_to(tmp_path):
    out, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run("tiny", tiny_run(tmp_path))
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep")
    (out / "tb").symlink_to(elsewhere, target_is_directory=True)
    assert main(["train", *tiny_run(tmp_path), "--overwrite"]) == 0
    assert (elsewhere / "precious.txt").read_text() == "keep" and not (out / "tb").exists()


# --- 4. export --force replaces only an earlier export ------------------------------------------


@pytest.fixture
def exported(tmp_path):
    pytest.importorskip("transformers")
    run("tiny", tiny_run(tmp_path, "runs/run"))
    return tmp_path / "runs" / "run"


def snapshot(folder) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_export_into_the_run_or_a_folder_containing_it_is_refused_even_with_force(exported, capsys):
    run_dir, parent = exported, exported.parent
    (parent / "unrelated.txt").write_text("not polycom's")
    before = snapshot(parent)
    for out in (parent, run_dir, parent.parent):
        assert main(["export", str(run_dir), "--out", str(out), "--force"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "contains it" in err
    assert snapshot(parent) == before  # the run and the unrelated file are untouched


def test_force_replaces_an_earlier_export_and_no_other_folder(exported, tmp_path, capsys):
    run_dir = exported
    own = tmp_path / "mine"
    own.mkdir()
    (own / "notes.txt").write_text("mine")
    assert main(["export", str(run_dir), "--out", str(own), "--force"]) == 2
    assert "not a folder written by `polycom export`" in capsys.readouterr().err
    assert (own / "notes.txt").read_text() == "mine"
    assert main(["export", str(run_dir)]) == 0  # RUN/hf, marked as an export
    (run_dir / "hf" / "stale.txt").write_text("old")
    assert main(["export", str(run_dir)]) == 2  # exists: --force needed
    assert main(["export", str(run_dir), "--force"]) == 0
    assert (run_dir / "hf" / "model.safetensors").is_file() and not (run_dir / "hf" / "stale.txt").exists()
