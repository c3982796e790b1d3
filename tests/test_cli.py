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


def test_overrides_may_follow_flags(capsys):
    assert main(["train", "train.steps=10", "--dry-run", "train.seed=1", "optim.lr=3e-4"]) == 0
    out = capsys.readouterr().out
    assert "  steps: 10\n" in out and "  seed: 1\n" in out and "  lr: 0.0003\n" in out
    assert main(["compare", "--dry-run", "--seeds", "1", "train.steps=3"]) == 0
    assert "steps: 3\n" in capsys.readouterr().out


def test_stray_arguments_are_still_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--dry-run", "--bogus", "train.steps=1"])
    assert exit_.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["activations", "train.steps=1"])  # a command without overrides
    assert exit_.value.code == 2


def test_preset_and_config_together_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "-c", "tiny", "--preset", "small", "--dry-run"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--preset" in err and "--config" in err


def test_version(capsys):
    import importlib.metadata

    import polycom

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    try:
        expected = importlib.metadata.version("polycom")
    except importlib.metadata.PackageNotFoundError:
        expected = polycom.__version__
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"polycom {expected}"


def test_bad_yaml_in_an_override_is_one_line_naming_the_key(capsys):
    assert main(["train", "--dry-run", "model.activation_kwargs={order: 2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("polycom train: config error: model.activation_kwargs:")
    assert main(["compare", "--dry-run", "model.activaton=gelu"]) == 2
    assert "did you mean model.activation?" in capsys.readouterr().err


def test_quoted_number_stays_a_string(capsys):
    assert main(["train", "--dry-run", 'train.out_dir="2024"']) == 0
    assert "out_dir: '2024'" in capsys.readouterr().out


@pytest.mark.parametrize("message", ["", "stopped by SIGTERM"])
def test_an_interrupted_compare_or_early_train_is_one_line(capsys, monkeypatch, tmp_path, message):
    """Ctrl-C in compare was an `Interrupted` traceback with rc 1; in train's first seconds it printed
    "polycom train: " with an empty message."""
    import polycom.experiments.compare.sweep as sweep
    import polycom.train as train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt(message)

    monkeypatch.setattr(sweep, "compare", interrupted)
    assert main(["compare", "--out", str(tmp_path / "sweep")]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rerun the same command to continue" in err
    assert err.startswith(f"polycom compare: {message or 'interrupted'};")
    monkeypatch.setattr(train, "run", interrupted)
    assert main(["train", f"train.out_dir={tmp_path / 'run'}"]) == 130
    assert capsys.readouterr().err == f"polycom train: {message or 'interrupted'}\n"
