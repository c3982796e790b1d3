"""`polycom compare` rerun safety: unreadable run summaries, a changed corpus, one writer per sweep."""

import dataclasses
import json
import os

import pytest

from polycom.experiments.compare.sweep import compare

CORPUS = "".join(f"Document {i}: the quick brown fox {i * 7} jumps over the lazy dog {i % 13}.\n\n"
                 for i in range(400))


def tiny_spec(tmp_path, corpus):
    from polycom.experiments.compare.spec import SweepSpec

    overrides = ["model.preset=debug", "model.n_layers=1", "model.d_model=16", "model.n_heads=2",
                 "data.tokenizer=byte", f"data.source={corpus}", f"data.cache_dir={tmp_path / 'cache'}",
                 "data.seq_len=16", "train.batch_size=2", "train.micro_batch_size=2", "train.steps=4",
                 "train.eval_batches=1", "optim.warmup_steps=1"]
    return SweepSpec(train_config="tiny", overrides=overrides, activations=["gelu", "relu"], seeds=1,
                     eval_points=2, throughput_rounds=0)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A finished two-run sweep; each test damages it, reruns, and leaves it finished."""
    tmp = tmp_path_factory.mktemp("safety")
    corpus = tmp / "corpus.txt"
    corpus.write_text(CORPUS)
    spec = tiny_spec(tmp, corpus)
    result = compare(spec, tmp / "out", say=lambda *a: None)
    assert {r.status for r in result.records} == {"completed"}
    return spec, tmp / "out", corpus


def test_unreadable_run_summary_is_named_and_the_run_rerun(sweep, capsys):
    spec, out, _ = sweep
    first = next((out / "runs").iterdir())
    (first / "summary.json").write_text("")  # torn by a crash: "Expecting value: line 1 column 1"
    result = compare(spec, out, say=lambda *a: None)
    assert result.states[first.name] == "done"  # rerun (resumed from its last checkpoint), not skipped
    assert sorted(result.states.values()) == ["done", "skipped"]
    assert {r.status for r in result.records} == {"completed"}
    assert f"{first / 'summary.json'}: unreadable" in capsys.readouterr().err
    assert json.loads((first / "summary.json").read_text())["status"] == "completed"


def test_changed_corpus_is_refused_naming_the_file(sweep):
    from polycom.train.config import ConfigError

    spec, out, corpus = sweep
    assert json.loads((out / "sweep.json").read_text())["corpus_hash"]
    corpus.write_text(CORPUS.replace("lazy", "idle"))  # same size and documents, other text
    try:
        with pytest.raises(ConfigError, match=f"data.source: {corpus} changed since the sweep"):
            # a resumed sweep that grows: its new seed would be paired with runs trained on the old corpus
            compare(dataclasses.replace(spec, seeds=2), out, say=lambda *a: None)
    finally:
        corpus.write_text(CORPUS)
    assert len(list((out / "runs").iterdir())) == 2  # the refused invocation trained nothing


def test_second_writer_is_refused_naming_the_holder(sweep):
    from polycom.train.config import ConfigError
    from polycom.train.run_folder import RunFolderLock

    spec, out, _ = sweep
    holder = RunFolderLock(out)  # what a running `polycom compare` into out holds
    holder.acquire()
    try:
        with pytest.raises(ConfigError, match=rf"--out: {out} is in use by another polycom compare \(pid {os.getpid()} "):
            compare(spec, out, say=lambda *a: None)
    finally:
        holder.release()
    compare(spec, out, say=lambda *a: None)  # released: the next invocation goes ahead


def test_failure_left_beside_a_finished_run_is_retried_not_reported(sweep):
    """An interrupted or concurrent writer's failure.json next to a run that finished: the rerun
    does not report the run as failed (it checks the run folder and finds it finished)."""
    spec, out, _ = sweep
    first = next((out / "runs").iterdir())
    (first / "failure.json").write_text(json.dumps({"error": "KeyboardInterrupt: interrupted at step 2"}))
    result = compare(spec, out, say=lambda *a: None)
    assert {r.status for r in result.records} == {"completed"}
    assert not (first / "failure.json").exists()
