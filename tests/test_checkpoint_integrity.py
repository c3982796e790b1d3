"""Checkpoints and token shards are verified on load: a corrupt or truncated file is never used silently.

Checkpoints: the newest corrupt one falls back to the previous intact one with one warning line,
and the losses after that resume equal those of a run that never lost it (bitwise); none intact
is one line naming the file (rc 2). Shards: a truncated or changed shard is rebuilt from the corpus.
"""

from __future__ import annotations

import json

import pytest

from polycom.cli import main
from polycom.train import run
from polycom.train.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, load_weights
from test_run_folder_safety import tiny_run as safety_tiny_run

CHECKSUMS = "checksums.json"


def tiny_run(tmp_path, name="run", *extra):
    """test_run_folder_safety's tiny run, 6 steps (checkpoints every 2, the newest 2 kept)."""
    return safety_tiny_run(tmp_path, name, "train.steps=6", "train.keep_checkpoints=2", *extra)


def flip_bytes(path, n=200) -> None:
    """Invert ``n`` bytes spread over the second half of the file (past any header)."""
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data), max(1, len(data) // 2 // n)):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def step(n) -> str:
    return f"step_{n:08d}"


@pytest.mark.parametrize("damage", [("model.safetensors", flip_bytes), ("optimizer.pt", flip_bytes),
                                    ("model.safetensors", truncate), ("state.pt", truncate)],
                         ids=["flipped-weights", "flipped-optimizer", "truncated-weights", "truncated-state"])
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one_with_the_same_losses(tmp_path, capsys, damage):
    name, spoil = damage
    out = tmp_path / "run"
    run("tiny", tiny_run(tmp_path, "run", "train.stop_at_step=4"))  # checkpoints at 2 and 4
    assert sorted(p.name for p in (out / "checkpoints").glob("step_*")) == [step(2), step(4)]
    spoil(out / "checkpoints" / step(4) / name)
    capsys.readouterr()
    resumed = run("tiny", tiny_run(tmp_path, "run", "train.resume=true"))
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert f"resumed from {out / 'checkpoints' / step(2)} (step 2)" in captured.out  # the folder actually loaded
    assert len(err.splitlines()) == 1 and f"{step(4)}/{name}: refused" in err
    assert f"resuming from the earlier intact checkpoint {out / 'checkpoints' / step(2)}" in err
    full = run("tiny", tiny_run(tmp_path, "full"))
    assert resumed.final_step == 6
    assert resumed.train_losses == full.train_losses[2:] and resumed.val_loss == full.val_loss  # bitwise
    assert set(json.loads((out / "checkpoints" / step(6) / CHECKSUMS).read_text())) == {
        "model.safetensors", "optimizer.pt", "state.pt", "config.yaml"}


def test_no_intact_checkpoint_left_is_one_line_naming_the_file(tmp_path, capsys):
    out = tmp_path / "run"
    run("tiny", tiny_run(tmp_path, "run", "train.stop_at_step=4"))
    flip_bytes(out / "checkpoints" / step(4) / "model.safetensors")
    truncate(out / "checkpoints" / step(2) / "optimizer.pt")
    capsys.readouterr()
    assert main(["train", *tiny_run(tmp_path), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"{step(4)}/model.safetensors: refused" in err and f"{step(2)}/optimizer.pt: refused" in err
    assert "no intact earlier checkpoint" in err
    assert latest_checkpoint(out).name == step(4)  # nothing was trained or deleted


def test_load_weights_refuses_corrupt_weights_naming_the_file(tmp_path, capsys):
    out = tmp_path / "run"
    run("tiny", tiny_run(tmp_path, "run", "train.steps=2"))
    weights = out / "checkpoints" / step(2) / "model.safetensors"
    load_weights(weights.parent)  # intact: loads
    flip_bytes(weights)
    with pytest.raises(CheckpointError, match=f"{weights}: refused"):
        load_weights(weights.parent)
    capsys.readouterr()
    assert main(["generate", str(out), "--prompt", "ab", "--max-new-tokens", "3", "--temperature", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{weights}: refused" in err


def test_a_checkpoint_without_checksums_still_loads_and_a_truncated_one_still_falls_back(tmp_path, capsys):
    out = tmp_path / "run"
    run("tiny", tiny_run(tmp_path, "run", "train.stop_at_step=4"))
    for s in (2, 4):  # as written before checksums were stored
        (out / "checkpoints" / step(s) / CHECKSUMS).unlink(missing_ok=True)
    assert load_checkpoint(out / "checkpoints" / step(4))["state"]["step"] == 4
    load_weights(out / "checkpoints" / step(4))
    truncate(out / "checkpoints" / step(4) / "model.safetensors")  # no checksum: found by failing to load
    capsys.readouterr()
    resumed = run("tiny", tiny_run(tmp_path, "run", "train.resume=true"))
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{step(4)}/model.safetensors: does not load" in err
    full = run("tiny", tiny_run(tmp_path, "full"))
    assert resumed.train_losses == full.train_losses[2:]


# --- token shards ---------------------------------------------------------------------------------


def shard_folder(tmp_path):
    (folder,) = (tmp_path / "cache" / "shards").iterdir()
    return folder


@pytest.mark.parametrize("spoil", [truncate, flip_bytes], ids=["truncated", "flipped"])
def test_a_damaged_token_shard_is_rebuilt_from_the_corpus_and_trains_as_before(tmp_path, capsys, spoil):
    first = run("tiny", tiny_run(tmp_path, "first", "train.checkpoint_every=0"))
    folder = shard_folder(tmp_path)
    shard = folder / "train-00000.bin"
    meta = json.loads((folder / "meta.json").read_text())
    spoil(shard)
    capsys.readouterr()
    again = run("tiny", tiny_run(tmp_path, "again", "train.checkpoint_every=0"))
    out = capsys.readouterr().out
    assert f"warning: {shard}:" in out and f"rebuilding the token cache entry {folder}" in out
    assert again.train_losses == first.train_losses and again.val_loss == first.val_loss  # bitwise
    assert json.loads((folder / "meta.json").read_text()) == meta
    assert {"size", "sha256"} <= set(meta["splits"]["train"]["shards"][0])


def test_a_truncated_shard_found_when_reading_is_one_line_naming_it(tmp_path):
    from polycom.data.shards import ShardError, TokenStream

    run("tiny", tiny_run(tmp_path, "first", "train.steps=2", "train.checkpoint_every=0"))
    folder = shard_folder(tmp_path)
    meta = json.loads((folder / "meta.json").read_text())
    for shard in meta["splits"]["val"]["shards"]:  # as written before sizes were recorded: n_tokens still says
        shard.pop("size", None), shard.pop("sha256", None)
    (folder / "meta.json").write_text(json.dumps(meta))
    truncate(folder / "val-00000.bin")
    with pytest.raises(ShardError, match=f"{folder / 'val-00000.bin'}: .* bytes, meta.json says"):
        TokenStream(folder, "val")
