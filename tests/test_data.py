"""polycom.data: embedded corpus, local and HF sources, tokenizers, memmap shards, sampler."""

from __future__ import annotations

import json

import numpy as np
import pytest

from polycom.data import (BatchSampler, ByteTokenizer, CorpusSpec, DataError, corpus_hash, iter_documents,
                          prepare_data, split_of, token_dtype, train_bpe)
from polycom.data.corpus import stdlib_files

# Text with the cases a lossy tokenizer gets wrong: leading/trailing/multiple
# spaces, tabs, CRLF, non-ASCII, emoji, combining marks, NUL-free control chars.
TRICKY = "  def f(x):\r\n\treturn x  \n\n\nnaïve café — 日本語 🙂 e\u0301 \x0b end  "


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# --- the embedded corpus --------------------------------------------------------

def test_embedded_corpus_is_large_sorted_and_deterministic():
    files = stdlib_files()
    rel = [f.as_posix() for f in files]
    assert all("/test/" not in r and "/site-packages/" not in r for r in rel)
    docs = list(iter_documents(CorpusSpec("stdlib")))
    assert sum(len(d.text.encode()) for d in docs) > 5_000_000
    assert any(d.doc_id.startswith("pydoc_data/topics/") for d in docs)
    ids = [d.doc_id for d in docs]
    assert len(set(ids)) == len(ids)
    val = [i for i in ids if split_of(i, 0.05) == "val"]
    assert 0 < len(val) < len(ids) * 0.15
    assert corpus_hash(CorpusSpec("stdlib")) == corpus_hash(CorpusSpec("stdlib"))


def test_split_is_a_function_of_the_id_only():
    assert split_of("a/b.py", 0.5) == split_of("a/b.py", 0.5)
    shares = [split_of(f"doc{i}", 0.1) == "val" for i in range(20000)]
    assert abs(np.mean(shares) - 0.1) < 0.01


# --- local files ----------------------------------------------------------------

def test_local_txt_jsonl_parquet_and_folder(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    _write(tmp_path / "a.txt", "first story\n<|endoftext|>\nsecond story\n")
    _write(tmp_path / "b.jsonl", json.dumps({"text": "json one"}) + "\n\n" + json.dumps({"text": "json two"}) + "\n")
    pq.write_table(pa.table({"text": ["pq one", "pq two", None]}), tmp_path / "c.parquet")
    texts = [d.text for d in iter_documents(CorpusSpec(str(tmp_path)))]
    assert texts == ["first story", "second story\n", "json one", "json two", "pq one", "pq two"]
    assert [d.text for d in iter_documents(CorpusSpec(str(tmp_path / "b.jsonl")))] == ["json one", "json two"]


def test_long_txt_without_separators_is_cut_into_documents(tmp_path):
    text = "".join(f"line {i}\n" for i in range(1000))
    docs = list(iter_documents(CorpusSpec(str(_write(tmp_path / "big.txt", text)))))
    assert len(docs) == 5 and "".join(d.text for d in docs) == text


@pytest.mark.parametrize("name, content, message", [
    ("empty.txt", b"", "is empty"),
    ("empty.jsonl", b"\n\n", "contains no text"),
    ("bad.jsonl", b'{"text": "ok"}\n{not json\n', "line 2: not valid JSON"),
    ("field.jsonl", b'{"body": "x"}\n', "no string field 'text'"),
    ("bad.parquet", b"PAR1 this is not parquet", "not a readable parquet file"),
    ("latin1.txt", "café".encode("latin-1"), "not valid UTF-8"),
])
def test_bad_files_are_reported_by_name(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as err:
        list(iter_documents(CorpusSpec(str(path))))
    assert name in str(err.value)



@pytest.mark.parametrize("name, content", [
    ("a.jsonl", b'{"text": "one"}\n{"text": "two"}\n{"text": "thr\xffee"}\n'),
    ("a.txt", b"one\ntwo\nthr\xffee\n"),
])
def test_invalid_utf8_names_the_file_and_line(tmp_path, name, content):
    # The first bad byte is on line 3; the byte offset counts from the start of the file.
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        list(iter_documents(CorpusSpec(str(path))))
    offset = content.index(b"\xff")
    assert str(err.value) == f"data file {str(path)!r}, line 3: not valid UTF-8 (byte 0xff at byte offset {offset})"

def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(DataError, match="not found"):
        list(iter_documents(CorpusSpec(str(tmp_path / "nope.txt"))))
    with pytest.raises(DataError, match="has no"):
        list(iter_documents(CorpusSpec(str(tmp_path))))


def test_hf_dataset_built_locally(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["alpha beta", "gamma", ""], "id": [1, 2, 3]}).save_to_disk(str(tmp_path / "ds"))
    docs = list(iter_documents(CorpusSpec("hf:" + str(tmp_path / "ds"))))
    assert [d.text for d in docs] == ["alpha beta", "gamma"]
    with pytest.raises(DataError, match="no column 'body'"):
        list(iter_documents(CorpusSpec("hf:" + str(tmp_path / "ds"), text_field="body")))


# --- tokenizers -----------------------------------------------------------------

@pytest.fixture(scope="module")
def small_bpe():
    texts = [d.text for d in iter_documents(CorpusSpec("stdlib", max_documents=60))]
    return train_bpe(iter(texts), vocab_size=600)


def test_bpe_round_trips_exactly(small_bpe):
    stdlib_text = next(iter_documents(CorpusSpec("stdlib"))).text
    for text in (TRICKY, stdlib_text, "", " ", "\n"):
        ids = small_bpe.encode(text)
        assert small_bpe.decode(ids) == text
    assert small_bpe.vocab_size == 600 and small_bpe.eot_id is not None
    assert len(small_bpe.encode(stdlib_text)) < len(stdlib_text.encode()) / 1.5  # it compresses


def test_bpe_token_bytes_count_text_bytes(small_bpe):
    lengths = small_bpe.token_byte_lengths()
    ids = small_bpe.encode(TRICKY)
    assert lengths[ids].sum() == len(TRICKY.encode("utf-8"))
    assert lengths[small_bpe.eot_id] == 0


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    assert tok.decode(tok.encode(TRICKY)) == TRICKY
    assert tok.vocab_size == 256 and tok.token_byte_lengths().sum() == 255


def test_hf_tokenizer_by_path(tmp_path, small_bpe):
    from polycom.data import load_tokenizer

    small_bpe.tok.save(str(tmp_path / "tokenizer.json"))
    tok = load_tokenizer(str(tmp_path))
    assert tok.encode(TRICKY) == small_bpe.encode(TRICKY)


# --- shards and sampler ---------------------------------------------------------

def test_token_dtype():
    assert token_dtype(256) == np.uint16 and token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


def test_prepare_data_caches_and_matches_direct_encoding(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    texts = [f"document {i}: " + "word " * (i % 7) for i in range(300)]
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    spec = CorpusSpec(str(corpus), val_fraction=0.1)
    logs = []
    data = prepare_data(spec, "bpe", 300, cache_dir=tmp_path / "cache", log=logs.append)
    assert any("training" in m for m in logs)
    logs.clear()
    again = prepare_data(spec, "bpe", 300, cache_dir=tmp_path / "cache", log=logs.append)
    assert logs == [] and again.folder == data.folder  # everything came from the cache
    train_texts = [t for i, t in enumerate(texts) if split_of(f"corpus.jsonl:{i + 1}", 0.1) == "train"]
    tok = data.tokenizer
    expected = [i for t in train_texts for i in tok.encode(t) + [tok.eot_id]]
    stream = data.stream("train")
    assert stream.slice(0, len(stream)).tolist() == expected
    assert data.meta["splits"]["train"]["n_bytes"] == sum(len(t.encode()) for t in train_texts)
    assert isinstance(stream.shards[0], np.memmap)


def test_stream_slices_across_shards(tmp_path):
    from polycom.data import ShardWriter, TokenStream

    writer = ShardWriter(tmp_path, "train", np.dtype(np.uint16), max_tokens=7)
    for doc in ([1, 2, 3], [4, 5, 6, 7, 8], list(range(9, 30))):
        writer.add(doc, len(doc))
    info = writer.close()
    (tmp_path / "meta.json").write_text(json.dumps({"splits": {"train": info}, "dtype": "uint16"}))
    stream = TokenStream(tmp_path, "train")
    assert len(stream.shards) == 5 and len(stream) == 29
    assert stream.slice(5, 20).tolist() == list(range(6, 21))


def test_sampler_shards_without_duplicates_or_gaps(tmp_path):
    from polycom.data import ShardWriter, TokenStream

    writer = ShardWriter(tmp_path, "train", np.dtype(np.uint16))
    writer.add(list(range(1001)), 1001)
    (tmp_path / "meta.json").write_text(json.dumps({"splits": {"train": writer.close()}, "dtype": "uint16"}))
    sampler = BatchSampler(TokenStream(tmp_path, "train"), seq_len=10, seed=3)
    assert sampler.n_windows == 100
    # 2 steps x 2 micro-steps x 2 ranks x 5 sequences = one full epoch of 40 windows... twice over
    world, accum, mb = 2, 2, 5
    seen = []
    for step in range(5):
        for micro in range(accum):
            for rank in range(world):
                batch = sampler.micro_batch(step, micro, rank, world, mb, accum)
                assert batch.shape == (mb, 11)
                assert (batch[:, 1:] - batch[:, :-1] == 1).all()  # windows are contiguous text
                seen += (batch[:, 0] // 10).tolist()
    assert sorted(seen) == list(range(100))  # one epoch: every window exactly once
    single = [sampler.micro_batch(s, 0, 0, 1, 20, 1)[:, 0] // 10 for s in range(5)]
    assert sorted(np.concatenate(single).tolist()) == list(range(100))
    assert (sampler.micro_batch(0, 0, 0, 1, 20, 1) == sampler.batch(range(20))).all()


# --- small corpora: the split by position -----------------------------------------

def test_one_document_corpus_validates_on_its_tail(tmp_path):
    # One long line: the id split can only put the whole document in one split.
    text = " ".join(f"word{i}" for i in range(2000))
    source = _write(tmp_path / "one.txt", text)
    logs = []
    data = prepare_data(CorpusSpec(str(source), val_fraction=0.1), "byte", cache_dir=tmp_path / "cache", log=logs.append)
    assert data.meta["split"] == "position"
    assert any("splitting every document by position" in m for m in logs)
    cut = round(len(text) * 0.9)  # the documented rule: the first 1 - val_fraction of the characters train
    tok = data.tokenizer
    for split, part in (("train", text[:cut]), ("val", text[cut:])):
        stream = data.stream(split)
        assert tok.decode(stream.slice(0, len(stream))) == part + "\0"  # then the end-of-text byte
    # A corpus with documents on both sides of the id split keeps the split by document.
    many = _write(tmp_path / "many.jsonl", "".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(200)))
    assert prepare_data(CorpusSpec(str(many)), "byte", cache_dir=tmp_path / "cache", log=logs.append).meta["split"] == \
        "document"


def test_corpus_too_small_even_by_position_names_the_fix(tmp_path):
    source = _write(tmp_path / "tiny.txt", "ab")  # round(2 * 0.95) = 2: no character left for validation
    with pytest.raises(DataError, match="the val split is empty even with every document split by position"):
        prepare_data(CorpusSpec(str(source)), "byte", cache_dir=tmp_path / "cache", log=lambda m: None)


# --- null and empty records: one rule for every format ----------------------------

def test_null_and_empty_records_are_skipped_and_counted_in_jsonl_and_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    values = ["kept one", None, "", "   \n", "kept two"]
    jsonl = tmp_path / "r.jsonl"
    jsonl.write_text("".join(json.dumps({"text": v}) + "\n" for v in values))
    parquet = tmp_path / "r.parquet"
    pq.write_table(pa.table({"text": values}), parquet)
    for path in (jsonl, parquet):
        logs = []
        docs = list(iter_documents(CorpusSpec(str(path)), log=logs.append))
        assert [d.text for d in docs] == ["kept one", "kept two"]
        assert [d.doc_id for d in docs] == [f"{path.name}:1", f"{path.name}:5"]  # line / row numbers
        assert logs == [f"data file {str(path)!r}: skipped 3 record(s) whose 'text' is null or empty"]


def test_missing_or_non_string_text_is_an_error_in_jsonl_and_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    (tmp_path / "n.jsonl").write_text('{"text": "ok"}\n{"text": 5}\n')
    with pytest.raises(DataError, match=r"n.jsonl', line 2: field 'text' is a int, not a string"):
        list(iter_documents(CorpusSpec(str(tmp_path / "n.jsonl"))))
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "n.parquet")
    with pytest.raises(DataError, match=r"n.parquet': column 'text' holds int64, not strings"):
        list(iter_documents(CorpusSpec(str(tmp_path / "n.parquet"))))
    (tmp_path / "m.jsonl").write_text('{"text": "ok"}\n{"body": "x"}\n')
    with pytest.raises(DataError, match=r"m.jsonl', line 2: no string field 'text'"):
        list(iter_documents(CorpusSpec(str(tmp_path / "m.jsonl"))))


# --- validation windows -------------------------------------------------------------

def _stream_of(tmp_path, n_tokens):
    from polycom.data import ShardWriter, TokenStream

    writer = ShardWriter(tmp_path, "val", np.dtype(np.uint16))
    writer.add(list(range(n_tokens)), n_tokens)
    (tmp_path / "meta.json").write_text(json.dumps({"splits": {"val": writer.close()}, "dtype": "uint16"}))
    return TokenStream(tmp_path, "val")


def test_validation_windows_are_spread_over_the_split(tmp_path):
    from scipy import stats

    sampler = BatchSampler.validation(_stream_of(tmp_path, 10_001), seq_len=10)  # 1000 windows
    windows = (sampler.batch(range(64))[:, 0] // 10).tolist()
    assert len(set(windows)) == 64 and windows != list(range(64))
    # Uniform over [0, 1000): Kolmogorov-Smirnov against the uniform CDF. A first-64 (file-order)
    # sample gives p ~ 1e-90; a uniform sample fails this only with probability 1e-3.
    assert stats.kstest(np.array(windows) / 1000, "uniform").pvalue > 1e-3
    (tmp_path / "copy").mkdir()
    again = BatchSampler.validation(_stream_of(tmp_path / "copy", 10_001), seq_len=10)
    assert (again.batch(range(64)) == sampler.batch(range(64))).all()  # a constant seed: the same windows


def test_every_run_validates_on_the_same_windows(tmp_path, monkeypatch):
    """Trainers differing in activation and seed evaluate the very same, spread-out validation windows."""
    import torch

    from polycom.train import load_config
    from polycom.train.distributed import DistInfo
    from polycom.train.loop import Trainer

    seen = {}

    def recording_batch(self, samples, _batch=BatchSampler.batch):
        if self.stream.split == "val":
            seen.setdefault(current, []).extend(self.window_of(s) for s in samples)
        return _batch(self, samples)

    monkeypatch.setattr(BatchSampler, "batch", recording_batch)
    corpus = _write(tmp_path / "c.jsonl", "".join(json.dumps({"text": f"doc {i}: " + "text " * 30}) + "\n"
                                                  for i in range(400)))
    # gelu, not polynorm: the CPU PolyNorm kernel compiles on first use (~15 s), beside the point here.
    for current, (activation, seed) in enumerate([("relu", 0), ("gelu", 1)]):
        cfg = load_config("tiny", [f"data.source={corpus}", "data.tokenizer=byte", "model.preset=debug",
                                   "data.seq_len=16", f"model.activation={activation}", f"train.seed={seed}",
                                   "train.batch_size=4", "train.micro_batch_size=4", "train.eval_batches=2",
                                   f"data.cache_dir={tmp_path / 'cache'}", f"train.out_dir={tmp_path / str(current)}"])
        trainer = Trainer(cfg, DistInfo(), torch.device("cpu"))
        trainer.evaluate()  # what fit() calls at every validation
    n_windows = trainer.val_sampler.n_windows
    assert len(seen[0]) == 8 and seen[0] == seen[1]  # eval_batches x batch_size windows, the same in both
    assert max(seen[0]) > n_windows // 2  # not the first 8 windows in file order
