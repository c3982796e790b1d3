"""Ordinary mistakes end `polycom train` with one line on stderr naming the key or path, exit status 2.

Each case goes through ``polycom.cli.main`` as a user would type it, on a tiny local corpus
so that a check that comes too late (after tokenizing, after building the model) still
finishes quickly and fails the "one line, no traceback" assertion instead of hanging.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch

from polycom.cli import main


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": f"document {i}: " + "word " * 40}) + "\n" for i in range(60)))
    return path


@pytest.fixture
def offline(monkeypatch):
    """No network here anyway; offline mode makes Hugging Face fail at once instead of retrying."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for module, name in (("huggingface_hub.constants", "HF_HUB_OFFLINE"), ("datasets.config", "HF_HUB_OFFLINE")):
        try:
            monkeypatch.setattr(__import__(module, fromlist=["_"]), name, True)
        except ImportError:
            pass


def _train(tmp_path, corpus, *extra):
    return ["train", f"data.source={corpus}", "data.tokenizer=byte", "model.preset=debug", "data.seq_len=16",
            "train.steps=1", "train.batch_size=2", "train.micro_batch_size=2", "train.progress=false",
            f"data.cache_dir={tmp_path / 'cache'}", f"train.out_dir={tmp_path / 'run'}", *extra]


def _one_line_error(capsys, argv, *expected):
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("polycom ")
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def _cpu_only_device():
    return ("cuda", "has no CUDA") if not torch.backends.cuda.is_built() else (
        ("cuda", "no CUDA device") if not torch.cuda.is_available() else ("cuda:99", "does not exist"))


def test_cuda_device_on_a_machine_without_it(capsys, tmp_path, corpus):
    device, reason = _cpu_only_device()
    line = _one_line_error(capsys, _train(tmp_path, corpus, f"train.device={device}"), f"train.device={device}", reason)
    assert "train.device=cpu" in line  # the fix
    assert not (tmp_path / "cache").exists()  # failed before any data was prepared


def test_ddp_without_torchrun(capsys, tmp_path, corpus, monkeypatch):
    # fsdp runs in one process (a group of one: tests/test_fsdp_one_process.py); DDP is refused.
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    _one_line_error(capsys, _train(tmp_path, corpus, "train.device=cpu", "train.parallel=ddp"),
                    "train.parallel=ddp", "torchrun --nproc_per_node N -m polycom.cli train")
    assert not (tmp_path / "cache").exists()


def test_config_flag_pointing_at_a_folder(capsys, tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    _one_line_error(capsys, ["train", "-c", str(folder)], "--config", str(folder), "Is a directory")


@pytest.mark.parametrize("key", ["train.out_dir", "data.cache_dir"])
def test_output_folders_that_are_files(capsys, tmp_path, corpus, key):
    existing = tmp_path / "a_file"
    existing.write_text("x")
    _one_line_error(capsys, _train(tmp_path, corpus, "train.device=cpu", f"{key}={existing}"),
                    f"{key}='{existing}'", "is an existing file")
    # A folder below a file cannot be created either; the message names the file in the way.
    _one_line_error(capsys, _train(tmp_path, corpus, "train.device=cpu", f"{key}={existing}/run"),
                    f"{key}='{existing}/run'", f"inside '{existing}'")
    assert not (tmp_path / "cache").exists()



@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """A folder in which creating a file fails as on a read-only mount. Permission bits
    would not do: this suite may run as root, whom they do not bind."""
    import tempfile

    folder = tmp_path / "read_only"
    folder.mkdir()
    create = tempfile.TemporaryFile

    def refuse_inside(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == folder:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return create(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse_inside)
    return folder


@pytest.mark.parametrize("key", ["train.out_dir", "data.cache_dir"])
def test_output_folders_that_are_not_writable(capsys, tmp_path, corpus, read_only, key):
    line = _one_line_error(capsys, _train(tmp_path, corpus, "train.device=cpu", f"{key}={read_only}"))
    assert line == f"polycom train: error: {key}='{read_only}' is not writable (Read-only file system); " \
                   "choose another folder"
    # A folder still to be created is refused when its nearest existing parent is read-only.
    _one_line_error(capsys, _train(tmp_path, corpus, "train.device=cpu", f"{key}={read_only}/a/run"),
                    f"{key}='{read_only}/a/run' cannot be created: '{read_only}' is not writable")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="permission bits do not bind root")
def test_output_folder_without_write_permission(capsys, tmp_path, corpus):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        _one_line_error(capsys, _train(tmp_path, corpus, "train.device=cpu", f"train.out_dir={locked}"),
                        f"train.out_dir='{locked}' is not writable (Permission denied)")
    finally:
        locked.chmod(0o700)


def test_more_threads_than_cores(capsys, tmp_path, corpus):
    cores = os.cpu_count()
    _one_line_error(capsys, _train(tmp_path, corpus, "train.device=cpu", f"train.threads={cores + 1}"),
                    f"train.threads={cores + 1} is more than the {cores} CPU cores of this machine; "
                    f"use at most {cores}")
    assert not (tmp_path / "cache").exists()


@pytest.fixture
def memory_21gb(monkeypatch):
    """This machine has 21 GB of RAM available, whatever it really has: exact messages."""
    from polycom.train import memory_estimate

    monkeypatch.setattr(memory_estimate, "host_available_memory", lambda: 21 * 10**9)


@pytest.mark.parametrize("override, culprit", [
    ("model.d_model=1000000", "model.d_model=1000000, model.n_layers=2"),
    ("model.vocab_size=2000000000", "model.vocab_size=2000000000"),
    ("train.micro_batch_size=2000000", "train.micro_batch_size=2000000, data.seq_len=16"),
])
def test_sizes_beyond_the_memory_available(capsys, tmp_path, corpus, memory_21gb, override, culprit):
    extra = ["train.batch_size=2000000"] if override.startswith("train.micro") else []
    line = _one_line_error(capsys, _train(tmp_path, corpus, "train.device=cpu", override, *extra))
    assert line.startswith(f"polycom train: error: {culprit}: training needs at least "), line
    assert "parameters, gradients and AdamW state + " in line and "but this machine has 21 GB available" in line
    assert not (tmp_path / "cache").exists()  # refused before the data, long before any allocation


def test_a_step_larger_than_the_training_split(capsys, tmp_path, corpus):
    # Memory does not stop it (micro-batches take turns): the step would cycle the corpus.
    _one_line_error(capsys, _train(tmp_path, corpus, "train.device=cpu", "train.batch_size=4096",
                                   "train.micro_batch_size=512"),
                    "train.batch_size=4096: one step would read more sequences than the ",
                    "of 16 tokens in the training split of data.source=", "lower train.batch_size")


def test_dry_run_warns_of_a_model_beyond_the_memory_available(capsys, memory_21gb):
    assert main(["train", "--dry-run", "model.preset=debug", "model.d_model=1000000", "train.device=cpu"]) == 0
    out = capsys.readouterr().out
    assert "\nmemory:            at least " in out
    assert "\nWARNING: too large for this machine, training here would stop with: model.d_model=1000000" in out

def test_hf_tokenizer_folder_without_tokenizer_json(capsys, tmp_path, corpus):
    folder = tmp_path / "tok"
    folder.mkdir()
    _one_line_error(capsys, _train(tmp_path, corpus, "train.device=cpu", f"data.tokenizer=hf:{folder}"),
                    f"data.tokenizer=hf:{folder}", "no tokenizer.json")
    _one_line_error(capsys, _train(tmp_path, corpus, "train.device=cpu", f"data.tokenizer=hf:{tmp_path}/t.json"),
                    "data.tokenizer=hf:", "no such file")


def test_hf_tokenizer_that_cannot_be_loaded(capsys, tmp_path, corpus, offline):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not a tokenizer")
    _one_line_error(capsys, _train(tmp_path, corpus, "train.device=cpu", f"data.tokenizer=hf:{bad}"),
                    "not a readable tokenizer.json")
    _one_line_error(capsys, _train(tmp_path, corpus, "train.device=cpu", "data.tokenizer=hf:no-such-org/no-such-tok"),
                    "data.tokenizer=hf:no-such-org/no-such-tok", "could not load tokenizer",
                    "local tokenizer.json")


def test_unreachable_hf_dataset(capsys, tmp_path, offline):
    pytest.importorskip("datasets")
    _one_line_error(capsys, _train(tmp_path, "hf:no-such-org/no-such-dataset", "train.device=cpu"),
                    "data.source=hf:no-such-org/no-such-dataset", "could not reach or find",
                    "local .txt/.jsonl/.parquet file")


def test_compare_reports_path_errors_in_one_line(capsys, tmp_path, corpus):
    cache = tmp_path / "a_file"
    cache.write_text("x")
    _one_line_error(capsys, ["compare", "--out", str(tmp_path / "cmp"), "--activations", "relu,gelu", "--seeds", "1",
                             "--throughput-rounds", "0", f"data.source={corpus}", "data.tokenizer=byte",
                             "model.preset=debug", "train.steps=1", f"data.cache_dir={cache}"],
                    "polycom compare: error:", "data.cache_dir", str(cache), "is an existing file")



def test_compare_reports_a_read_only_cache_in_one_line(capsys, tmp_path, corpus, read_only):
    _one_line_error(capsys, ["compare", "--out", str(tmp_path / "cmp"), "--activations", "relu,gelu", "--seeds", "1",
                             "--throughput-rounds", "0", f"data.source={corpus}", "data.tokenizer=byte",
                             "model.preset=debug", "train.steps=1", f"data.cache_dir={read_only}"],
                    "polycom compare: error:", f"data.cache_dir='{read_only}' is not writable")

def test_unknown_exceptions_keep_their_traceback(tmp_path, corpus, monkeypatch):
    """A bug is not an input mistake: it must reach the user with its traceback, not as one line."""
    import polycom.train

    def broken(cfg):
        raise RuntimeError("a bug")

    monkeypatch.setattr(polycom.train, "run", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(_train(tmp_path, corpus, "train.device=cpu"))


def test_one_line_joins_multi_line_messages():
    from polycom.cli.errors import one_line
    from polycom.train import ConfigError

    assert one_line(ValueError("first\n  second\n\n")) == "error: first second"
    assert one_line(ConfigError("optim.lr: bad")) == "config error: optim.lr: bad"
    assert one_line(FileNotFoundError(2, "No such file or directory", "x.yaml"), {"x.yaml": "--config"}) == \
        "error: --config: 'x.yaml': No such file or directory"
