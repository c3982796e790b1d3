"""The polycom command: train --help / --dry-run / config errors; activations still listed."""

from __future__ import annotations

import pytest

from polycom.cli import main


def test_activations_still_listed(capsys):
    assert main(["activations"]) == 0
    assert "polynorm" in capsys.readouterr().out


def test_train_help_lists_every_key(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for key in ("model.activation", "optim.decay_activation_coefficients", "train.micro_batch_size",
                "data.source", "train.parallel", "--dry-run", "--resume"):
        assert key in out


def test_dry_run_prints_config_and_sizes(capsys):
    assert main(["train", "--preset", "paper-dense-1b", "--dry-run", "model.activation=swiglu"]) == 0
    out = capsys.readouterr().out
    assert "activation: swiglu" in out and "tokens per step:   262,144" in out and "parameters:" in out


def test_config_errors_exit_2_naming_the_key(capsys, tmp_path):
    assert main(["train", "--dry-run", "optim.lr=-1"]) == 2
    assert "optim.lr" in capsys.readouterr().err
    assert main(["train", "train.unknown=1"]) == 2
    assert "train.unknown" in capsys.readouterr().err
    assert main(["train", f"data.source={tmp_path}/none.jsonl"]) == 2
    assert "data.source" in capsys.readouterr().err


def test_empty_data_file_is_reported_by_name(capsys, tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    args = ["train", f"data.source={tmp_path / 'empty.jsonl'}", f"data.cache_dir={tmp_path / 'cache'}",
            "data.tokenizer=byte", "model.preset=debug", f"train.out_dir={tmp_path / 'run'}"]
    assert main(args) == 2
    assert "empty.jsonl" in capsys.readouterr().err
