"""eval.sets: extra held-out corpora scored at every eval point. The per-set numbers equal a direct
recomputation from the final checkpoint; the config and data errors name the key; each set is
tokenised once (cached)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from polycom.data import BatchSampler, ByteTokenizer, CorpusSpec, prepare_heldout
from polycom.data.corpus import iter_documents
from polycom.models import build_model
from polycom.train import load_config, run
from polycom.train.checkpoint import latest_checkpoint, load_checkpoint
from polycom.train.config import ConfigError, check_paths

SEQ_LEN = 32


def write_sets(folder):
    """Two small held-out corpora of other text than the training stdlib: prose (.txt) and JSON lines."""
    prose = folder / "prose.txt"
    prose.write_text("\n<|endoftext|>\n".join(
        f"Story {i}: the cat sat on mat number {i}, and the dog watched it for {i * 7} minutes.\n" * 3
        for i in range(40)))
    records = folder / "records.jsonl"
    records.write_text("".join(json.dumps({"body": f"record {i}: " + "abc " * (i % 9 + 5)}) + "\n"
                               for i in range(120)))
    return prose, records


def small_args(tmp_path, name, prose, records, *extra):
    return ["model.preset=debug", "model.activation=polynorm", "data.tokenizer=byte", "data.max_documents=300",
            f"data.cache_dir={tmp_path / 'cache'}", f"data.seq_len={SEQ_LEN}", "train.batch_size=8",
            "train.micro_batch_size=4", "train.steps=6", "train.eval_every=3", "train.checkpoint_every=3",
            "train.eval_batches=2", "train.progress=false", f"train.out_dir={tmp_path / name}",
            f"eval.sets.prose={prose}", f"eval.sets.records.source={records}", "eval.sets.records.text_field=body",
            *extra]


def recompute(model, sampler: BatchSampler, n_windows: int) -> tuple[float, float]:
    """Loss and bits per byte by hand: the first n validation windows, one float64 log-softmax each."""
    batch = sampler.batch(range(min(n_windows, sampler.n_windows)))  # (K, T + 1)
    with torch.no_grad():
        logits = model(batch[:, :-1]).logits.double()  # (K, T, V)
    targets = batch[:, 1:]
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum").item()
    # Byte tokenizer: a token is one byte of text, except the document separator NUL (no text).
    n_bytes = sum(t != ByteTokenizer.eot_id for t in targets.reshape(-1).tolist())
    return nll / targets.numel(), nll / (math.log(2) * n_bytes)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sets")
    prose, records = write_sets(tmp)
    result = run("tiny", small_args(tmp, "run", prose, records))
    return tmp, result, prose, records


def test_every_eval_point_reports_each_set_equal_to_a_direct_recomputation(trained):
    tmp, result, prose, records = trained
    vals = [json.loads(line) for line in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    vals = [r for r in vals if r["kind"] == "val"]
    assert [r["step"] for r in vals] == [3, 6] and all(set(r["sets"]) == {"prose", "records"} for r in vals)
    assert result.val_sets == vals[-1]["sets"] and result.evals[-1].sets == vals[-1]["sets"]

    cfg = load_config(tmp / "run" / "config.yaml")
    model = build_model(cfg.model_config(256)).eval()
    model.load_state_dict(load_checkpoint(latest_checkpoint(tmp / "run"))["model"])
    tok = ByteTokenizer()
    n = cfg.train.eval_batches * cfg.train.batch_size
    for name, spec in (("prose", CorpusSpec(str(prose))), ("records", CorpusSpec(str(records), text_field="body"))):
        # An independent reading of the set: every document, in order, each followed by the end-of-text byte.
        ids = [i for d in iter_documents(spec) for i in tok.encode(d.text) + [tok.eot_id]]
        stream = prepare_heldout(spec, tok, tmp / "cache", log=lambda m: None).stream("val")
        assert stream.slice(0, len(stream)).tolist() == ids
        loss, bpb = recompute(model, BatchSampler.validation(stream, SEQ_LEN), n)
        got = vals[-1]["sets"][name]
        # fp32 forward in the trainer vs float64 log-softmax here: ~1e-6 relative
        assert got["loss"] == pytest.approx(loss, rel=1e-5) and got["bpb"] == pytest.approx(bpb, rel=1e-5)
        assert got["tokens"] == min(n, stream_windows(stream)) * SEQ_LEN
    # The main validation is untouched by the extra sets: the same numbers as a run without them.
    plain = run("tiny", small_args(tmp, "plain", prose, records)[:-3])
    assert [e.val_loss for e in plain.evals] == [r["val_loss"] for r in vals]


def stream_windows(stream) -> int:
    return (len(stream) - 1) // SEQ_LEN


def test_each_set_is_tokenised_once_and_cached(trained, capsys):
    tmp, _, prose, _ = trained
    prepare_heldout(CorpusSpec(str(prose)), ByteTokenizer(), tmp / "cache")
    assert "tokenizing" not in capsys.readouterr().out
    assert len(list((tmp / "cache" / "heldout").iterdir())) == 2  # one folder per set


@pytest.mark.parametrize("overrides, message", [
    (["eval.sets.a=stdlib"], "eval.sets.a.source: is data.source"),
    (["eval.sets.a=/x.txt", "eval.sets.b=/x.txt"], "eval.sets.b: the same corpus as eval.sets.a"),
    (["eval.sets.a.source=''"], "eval.sets.a.source: must not be empty"),
    (["eval.sets.a.sorce=x"], "eval.sets.a.sorce: unknown key; did you mean eval.sets.a.source?"),
    (["eval.sets.a.max_documents=-1", "eval.sets.a.source=/x"], "eval.sets.a.max_documents: must be >= 0"),
    (["eval.sets.a b=/x"], "eval.sets.a b: a set name may hold only"),
])
def test_bad_sets_are_config_errors_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match="^" + message.replace("?", r"\?")):
        load_config("tiny", overrides)


def test_missing_and_empty_sets_fail_before_training_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"^eval.sets.gone.source: no such file or folder"):
        check_paths(load_config("tiny", [f"eval.sets.gone={tmp_path / 'nope.txt'}"]))
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"text": " "}) + "\n")
    args = ["model.preset=debug", "data.tokenizer=byte", "data.max_documents=50", f"data.cache_dir={tmp_path}",
            "data.seq_len=32", "train.steps=1", "train.progress=false", f"train.out_dir={tmp_path / 'run'}"]
    with pytest.raises(ValueError, match=r"^eval.sets.empty: data file .* contains no text"):
        run("tiny", args + [f"eval.sets.empty={empty}"])
    short = tmp_path / "short.txt"
    short.write_text("too short\n")
    with pytest.raises(ValueError, match=r"^eval.sets.short.source=.*fewer than data.seq_len \+ 1"):
        run("tiny", args + [f"eval.sets.short={short}"])
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
