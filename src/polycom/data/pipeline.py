"""corpus -> content hash -> tokenizer -> token shards, each step cached by content.

``prepare_data`` is idempotent: a second call with the same corpus and tokenizer
finds the tokenizer and the shards in the cache folder (``POLYCOM_CACHE`` or
``~/.cache/polycom``) and only re-hashes the corpus. Cache entries are written
to a temporary name and renamed, so an interrupted preparation leaves nothing
half-written behind.

The split is by document id; when that leaves the train or the validation split
without a document (one long document, a handful of files), every document is
split by position instead (``corpus.split_documents``), logged, and recorded as
``meta["split"] = "position"``.

``prepare_heldout`` is the same for an extra validation corpus (``eval.sets``): no split,
every document validates, tokenised with the run's tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .corpus import CorpusSpec, DataError, iter_documents, split_documents
from .shards import ShardWriter, TokenStream, shard_damage, token_dtype
from .tokenizer import ByteTokenizer, Tokenizer, load_tokenizer, train_bpe

__all__ = ["PreparedData", "prepare_data", "prepare_heldout", "corpus_hash", "default_cache_dir"]

FORMAT_VERSION = 1
_ENCODE_BATCH = 256


def default_cache_dir() -> Path:
    return Path(os.environ.get("POLYCOM_CACHE") or Path.home() / ".cache" / "polycom")


@dataclass
class PreparedData:
    folder: Path  # holds meta.json and the shard files
    tokenizer: Tokenizer
    meta: dict

    @property
    def corpus_hash(self) -> str:
        return self.meta["corpus_hash"]

    def stream(self, split: str) -> TokenStream:
        return TokenStream(self.folder, split)


def corpus_hash(spec: CorpusSpec) -> str:
    """SHA-256 over every document's split, id and text, in corpus order."""
    return scan_corpus(spec)[0]


def scan_corpus(spec: CorpusSpec, log=lambda message: None) -> tuple[str, bool]:
    """``(content hash, by_position)``: one pass splitting by id, a second (small corpora
    only) splitting by position when the first left a split without documents."""
    h, counts = hashlib.sha256(), {"train": 0, "val": 0}
    for split, doc in split_documents(spec, log=log):
        _hash_document(h, split, doc)
        counts[split] += 1
    if counts["train"] and counts["val"]:
        return h.hexdigest(), False
    empty = "val" if counts["train"] else "train"
    log(f"the split by document id leaves the {empty} split of {spec.source!r} empty ({counts['train']} "
        f"document(s)); splitting every document by position instead: the last {100 * spec.val_fraction:g}% "
        "of each document's text validates")
    h = hashlib.sha256(b"split by position\0")
    for split, doc in split_documents(spec, by_position=True):
        _hash_document(h, split, doc)
    return h.hexdigest(), True


def _hash_document(h, split: str, doc) -> None:
    h.update(f"{split}\0{doc.doc_id}\0".encode())
    h.update(doc.text.encode("utf-8", errors="surrogatepass"))
    h.update(b"\0")


def _train_texts(spec: CorpusSpec, by_position: bool):
    for split, doc in split_documents(spec, by_position):
        if split == "train":
            yield doc.text


def get_tokenizer(name: str, vocab_size: int, spec: CorpusSpec, content_hash: str, cache_dir: Path,
                  log=print, by_position: bool = False) -> Tokenizer:
    """``"byte"``, ``"bpe"`` (trained on the train split, cached) or ``"hf:NAME_OR_PATH"``."""
    if name == "byte":
        return ByteTokenizer()
    if name.startswith("hf:"):
        return load_tokenizer(name[3:])
    if name != "bpe":
        raise ValueError(f"data.tokenizer must be 'bpe', 'byte' or 'hf:NAME', got {name!r}")
    path = cache_dir / "tokenizers" / f"bpe-{vocab_size}-{content_hash[:16]}.json"
    if path.exists():
        return load_tokenizer(str(path))
    t0 = time.perf_counter()
    log(f"training a byte-level BPE tokenizer (vocab {vocab_size}) on the train split ...")
    train_bpe(_train_texts(spec, by_position), vocab_size, save_path=path)
    log(f"  done in {time.perf_counter() - t0:.1f}s -> {path}")
    return load_tokenizer(str(path))  # reload: the saved file is what later runs use


def _write_shards(spec: CorpusSpec, tok: Tokenizer, folder: Path, meta: dict, by_position: bool) -> None:
    dtype = token_dtype(tok.vocab_size)
    writers = {s: ShardWriter(folder, s, dtype) for s in ("train", "val")}
    pending: list = []

    def flush():
        for (split, text), ids in zip(pending, tok.encode_batch([t for _, t in pending])):
            if tok.eot_id is not None:
                ids.append(tok.eot_id)
            writers[split].add(ids, len(text.encode("utf-8", errors="surrogatepass")))
        pending.clear()

    for split, doc in split_documents(spec, by_position):
        pending.append((split, doc.text))
        if len(pending) >= _ENCODE_BATCH:
            flush()
    flush()
    meta["splits"] = {s: w.close() for s, w in writers.items()}
    meta["dtype"] = dtype.name
    for split, info in meta["splits"].items():
        if info["n_tokens"] == 0:  # only when even the split by position left no text (a tiny corpus)
            raise DataError(f"data.source={spec.source!r}: the {split} split is empty even with every document "
                            f"split by position at data.val_fraction={spec.val_fraction:g}; use a longer corpus")
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))


def _write_cached(folder: Path, write) -> None:
    """``write(tmp)`` fills a temporary folder, renamed to ``folder`` once complete (a concurrent
    preparation of the same content that finished first wins; the two are identical)."""
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        if not folder.exists():
            os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _drop_if_damaged(folder: Path, log) -> None:
    """Remove a cache entry whose shards differ from its meta.json (size, SHA-256), so it is rebuilt."""
    if not (folder / "meta.json").exists():
        return
    why = shard_damage(folder)
    if why:
        log(f"warning: {why}; rebuilding the token cache entry {folder} from the corpus")
        aside = folder.with_name(f".{folder.name}.{os.getpid()}.damaged")
        os.replace(folder, aside)
        shutil.rmtree(aside, ignore_errors=True)


def _shard_meta(spec: CorpusSpec, content_hash: str, tok: Tokenizer, split: str) -> dict:
    """meta.json of a shard folder: what it was made from, and how it was split."""
    return {"format": FORMAT_VERSION, "corpus": asdict(spec), "corpus_hash": content_hash, "tokenizer": tok.name,
            "tokenizer_fingerprint": tok.fingerprint, "vocab_size": tok.vocab_size, "split": split}


def prepare_data(spec: CorpusSpec, tokenizer: str = "bpe", vocab_size: int = 4096,
                 cache_dir: Path | str | None = None, log=print) -> PreparedData:
    """Hash the corpus, get the tokenizer, tokenize into shards (each cached)."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    content_hash, by_position = scan_corpus(spec, log)
    tok = get_tokenizer(tokenizer, vocab_size, spec, content_hash, cache_dir, log, by_position)
    folder = cache_dir / "shards" / f"{content_hash[:16]}-{tok.fingerprint[:16]}"
    _drop_if_damaged(folder, log)
    if not (folder / "meta.json").exists():
        t0 = time.perf_counter()
        log(f"tokenizing {spec.source!r} into {folder} ...")
        meta = _shard_meta(spec, content_hash, tok, split="position" if by_position else "document")
        _write_cached(folder, lambda tmp: _write_shards(spec, tok, tmp, meta, by_position))
        info = json.loads((folder / "meta.json").read_text())["splits"]
        log(f"  done in {time.perf_counter() - t0:.1f}s: train {info['train']['n_tokens']:,} tokens, "
            f"val {info['val']['n_tokens']:,} tokens")
    meta = json.loads((folder / "meta.json").read_text())
    return PreparedData(folder, tok, meta)


def prepare_heldout(spec: CorpusSpec, tok: Tokenizer, cache_dir: Path | str | None = None,
                    log=print) -> PreparedData:
    """A corpus that is held out whole (``eval.sets``): every document, in corpus order, in
    one ``val`` split tokenised with the run's tokenizer ``tok``; cached under
    ``heldout/<content hash>-<tokenizer fingerprint>``, so each set is tokenised once per
    tokenizer. Raises DataError for a missing or empty corpus."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    h = hashlib.sha256(b"held out whole\0")
    for doc in iter_documents(spec, log):
        _hash_document(h, "val", doc)
    content_hash = h.hexdigest()
    folder = cache_dir / "heldout" / f"{content_hash[:16]}-{tok.fingerprint[:16]}"
    _drop_if_damaged(folder, log)
    if not (folder / "meta.json").exists():
        t0 = time.perf_counter()
        log(f"tokenizing the held-out set {spec.source!r} into {folder} ...")
        meta = _shard_meta(spec, content_hash, tok, split="whole")
        _write_cached(folder, lambda tmp: _write_heldout_shards(spec, tok, tmp, meta))
        log(f"  done in {time.perf_counter() - t0:.1f}s")
    return PreparedData(folder, tok, json.loads((folder / "meta.json").read_text()))


def _write_heldout_shards(spec: CorpusSpec, tok: Tokenizer, folder: Path, meta: dict) -> None:
    writer = ShardWriter(folder, "val", token_dtype(tok.vocab_size))
    docs = iter(iter_documents(spec))
    while batch := [doc.text for _, doc in zip(range(_ENCODE_BATCH), docs)]:
        for text, ids in zip(batch, tok.encode_batch(batch)):
            if tok.eot_id is not None:
                ids.append(tok.eot_id)
            writer.add(ids, len(text.encode("utf-8", errors="surrogatepass")))
    meta["splits"] = {"val": writer.close()}
    meta["dtype"] = token_dtype(tok.vocab_size).name
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))
