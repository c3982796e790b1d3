"""Tokenizers: trained byte-level BPE, raw bytes, or any Hugging Face tokenizer.

All three expose the same small surface (``encode_batch``, ``decode``,
``vocab_size``, ``eot_id``, ``token_byte_lengths``, ``fingerprint``). Byte-level
BPE round-trips any text exactly: it has no normaliser and its pre-tokeniser
only splits, it never rewrites.

``token_byte_lengths()`` gives the number of UTF-8 text bytes each token stands
for (0 for special tokens); validation bits per byte are computed from it, so
they do not depend on the tokenizer.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .corpus import DataError

__all__ = ["Tokenizer", "ByteTokenizer", "HFTokenizer", "train_bpe", "load_tokenizer", "looks_like_path", "EOT"]

EOT = "<|endoftext|>"
_EOT_CANDIDATES = (EOT, "<|end_of_text|>", "</s>", "<eos>", "<|eot_id|>")


class Tokenizer:
    """Interface shared by the tokenizers below."""

    name: str
    vocab_size: int
    eot_id: int | None  # appended after every document

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def token_byte_lengths(self) -> np.ndarray:
        raise NotImplementedError

    @property
    def fingerprint(self) -> str:
        raise NotImplementedError


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes as tokens (vocab 256). Documents are separated by byte 0 (NUL),
    which never occurs in text files; it counts as 0 text bytes."""

    name = "byte"
    vocab_size = 256
    eot_id = 0

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [list(t.encode("utf-8")) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def token_byte_lengths(self) -> np.ndarray:
        lengths = np.ones(256, dtype=np.int64)
        lengths[self.eot_id] = 0
        return lengths

    @property
    def fingerprint(self) -> str:
        return "byte-v1"


class HFTokenizer(Tokenizer):
    """Wraps a ``tokenizers.Tokenizer`` (a trained BPE or one loaded by name/path)."""

    def __init__(self, tok, name: str):
        self.tok = tok
        self.name = name
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
        self.eot_id = next((tok.token_to_id(t) for t in _EOT_CANDIDATES if tok.token_to_id(t) is not None), None)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def token_byte_lengths(self) -> np.ndarray:
        from tokenizers import decoders

        specials = {t.content for t in self.tok.get_added_tokens_decoder().values() if t.special}
        byte_level = isinstance(self.tok.decoder, decoders.ByteLevel)
        lengths = np.zeros(self.vocab_size, dtype=np.int64)
        for i in range(self.vocab_size):
            token = self.tok.id_to_token(i)
            if token is None or token in specials:
                continue
            # Byte-level vocabularies spell each byte as one character: exact.
            # Others (SentencePiece, WordPiece): decoded length, an approximation.
            lengths[i] = len(token) if byte_level else len(self.tok.decode([i]).encode("utf-8"))
        return lengths

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.tok.to_str().encode("utf-8")).hexdigest()


def train_bpe(texts: Iterator[str], vocab_size: int, save_path: Path | None = None) -> HFTokenizer:
    """Train a byte-level BPE (GPT-2 style pre-tokenisation) with one ``<|endoftext|>`` token."""
    from tokenizers import Tokenizer as _Tok
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size < 257:
        raise ValueError(f"data.vocab_size must be >= 257 for a BPE tokenizer (256 bytes + {EOT}), got {vocab_size}")
    tok = _Tok(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    if save_path is not None:
        save_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = save_path.with_name(f".{save_path.name}.{os.getpid()}.tmp")
        tok.save(str(tmp))
        os.replace(tmp, save_path)
    return HFTokenizer(tok, f"bpe-{vocab_size}")


def looks_like_path(name: str) -> bool:
    """Whether ``hf:NAME`` means a local file rather than a hub name (``org/model``)."""
    return Path(name).suffix == ".json" or Path(name).is_absolute() or name.startswith((".", "~"))


def load_tokenizer(name_or_path: str) -> HFTokenizer:
    """A Hugging Face tokenizer: a ``tokenizer.json`` file, a folder holding one, or a hub name.

    A hub name is looked up on the hub, else in the local Hugging Face cache (offline);
    failure either way is a DataError naming ``data.tokenizer``.
    """
    from tokenizers import Tokenizer as _Tok

    path = Path(name_or_path)
    if path.is_dir():
        path = path / "tokenizer.json"
    key = f"data.tokenizer=hf:{name_or_path}"
    if path.is_file():
        try:
            return HFTokenizer(_Tok.from_file(str(path)), str(name_or_path))
        except Exception as e:  # tokenizers raises a bare Exception for a malformed file
            raise DataError(f"{key}: {str(path)!r} is not a readable tokenizer.json ({e})") from None
    if looks_like_path(name_or_path) or Path(name_or_path).is_dir():
        raise DataError(f"{key}: no tokenizer file at {str(path)!r}")
    try:
        tok = _Tok.from_pretrained(name_or_path)
    except Exception as e:  # offline: huggingface_hub's LocalEntryNotFoundError; unknown repo: HTTP errors
        raise DataError(f"{key}: could not load tokenizer {name_or_path!r} from the Hugging Face hub or the "
                        f"local cache ({type(e).__name__}); give a local tokenizer.json file or a folder "
                        "holding one") from None
    return HFTokenizer(tok, name_or_path)
