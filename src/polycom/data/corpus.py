"""Text corpora as streams of documents, split by document into train/validation.

A corpus is named by one string, ``source``:

- ``"stdlib"`` (the default): the embedded corpus, built from the running
  Python installation's own standard library. Always present, no download.
- a local path: a ``.txt``, ``.jsonl`` (one JSON object per line with a text
  field) or ``.parquet`` file, or a folder searched recursively for them.
- ``"hf:NAME"``: a Hugging Face ``datasets`` dataset (optional extra), by hub
  name or by the path of a dataset saved with ``Dataset.save_to_disk``.
- a short alias of a standard corpus (``tinystories``, ``fineweb-edu``,
  ``wikitext-103``, ``openwebtext``): ``hf:`` with the right name and config.

Documents are yielded in a fixed order and each goes to validation when a hash
of its identifier falls under ``val_fraction``, so the split is the same on every
machine and independent of the document order. A corpus too small for that (one
long document, a few files: one split would be empty) is split by position
instead: the first ``1 - val_fraction`` of every document's characters train, the
rest validate (``split_documents(spec, by_position=True)``; the pipeline picks it).

Records: a null or empty (whitespace-only) text in a .jsonl, .parquet or Hugging
Face record is skipped and counted (the count is logged per file); a record
without the text field, or with a non-string value there, is an error naming the
file and line/row. Nothing here holds the whole corpus in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ..errors import UsageError

__all__ = ["DataError", "Document", "CorpusSpec", "iter_documents", "split_of", "split_documents",
           "STANDARD_CORPORA", "describe_source"]

LOCAL_SUFFIXES = (".txt", ".jsonl", ".parquet")
# ``<|endoftext|>`` on a line of its own separates documents inside a .txt file
# (the convention of TinyStories-style dumps); a .txt file without it is cut into
# documents of TXT_LINES_PER_DOC lines, so one big file still gets a validation split.
TXT_SEPARATOR = "<|endoftext|>"
TXT_LINES_PER_DOC = 200

# name -> (hub name, config); "one flag away when online".
STANDARD_CORPORA: dict[str, tuple[str, str | None]] = {
    "tinystories": ("roneneldan/TinyStories", None),
    "fineweb-edu": ("HuggingFaceFW/fineweb-edu", "sample-10BT"),
    "wikitext-103": ("Salesforce/wikitext", "wikitext-103-raw-v1"),
    "openwebtext": ("Skylion007/openwebtext", None),
}

# Standard-library folders left out of the embedded corpus: test suites (large,
# repetitive fixtures), third-party installs, IDLE and caches.
_STDLIB_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "idlelib"}


class DataError(UsageError):
    """A data source is missing, empty or unreadable; the message names it."""


@dataclass(frozen=True)
class Document:
    doc_id: str  # stable identifier (relative path, path:line, dataset row); decides the split
    text: str


@dataclass(frozen=True)
class CorpusSpec:
    source: str = "stdlib"
    text_field: str = "text"
    val_fraction: float = 0.05
    hf_config: str | None = None
    hf_split: str = "train"
    max_documents: int = 0  # 0 = all


def split_of(doc_id: str, val_fraction: float) -> str:
    """``"val"`` or ``"train"``: a uniform hash of the id compared to the fraction."""
    h = int.from_bytes(hashlib.sha256(doc_id.encode("utf-8")).digest()[:8], "big")
    return "val" if h < val_fraction * 2**64 else "train"


def split_documents(spec: CorpusSpec, by_position: bool = False,
                    log: Callable[[str], None] | None = None) -> Iterator[tuple[str, Document]]:
    """``(split, document)`` for the whole corpus, in corpus order.

    By id (default): each document goes whole to ``split_of(doc_id)``. By position:
    each document is cut at character ``round(len * (1 - val_fraction))``; the head
    (id ``ID#train``) trains, the tail (``ID#val``) validates, so even a one-document
    corpus validates on text it never trains on.
    """
    for doc in iter_documents(spec, log):
        if not by_position:
            yield split_of(doc.doc_id, spec.val_fraction), doc
            continue
        cut = round(len(doc.text) * (1 - spec.val_fraction))
        for split, text in (("train", doc.text[:cut]), ("val", doc.text[cut:])):
            if text.strip():
                yield split, Document(f"{doc.doc_id}#{split}", text)


def iter_documents(spec: CorpusSpec, log: Callable[[str], None] | None = None) -> Iterator[Document]:
    """All documents of the corpus, in a deterministic order; ``log`` gets the skipped-record counts."""
    source = spec.source
    log = log or (lambda message: None)
    if source == "stdlib":
        docs = _stdlib_documents()
    elif source in STANDARD_CORPORA:
        name, config = STANDARD_CORPORA[source]
        docs = _hf_documents(name, spec.hf_config or config, spec.hf_split, spec.text_field, log)
    elif source.startswith("hf:"):
        docs = _hf_documents(source[3:], spec.hf_config, spec.hf_split, spec.text_field, log)
    else:
        docs = _local_documents(Path(source), spec.text_field, log)
    count = 0
    for doc in docs:
        if spec.max_documents and count >= spec.max_documents:
            return
        count += 1
        yield doc
    if count == 0:
        raise DataError(f"data source {source!r} contains no documents")


def describe_source(source: str) -> str:
    if source == "stdlib":
        return (f"embedded corpus: Python {sys.version.split()[0]} standard library sources + "
                "pydoc_data topics (PSF License)")
    if source in STANDARD_CORPORA:
        return f"Hugging Face dataset {STANDARD_CORPORA[source][0]}"
    return source


# --- the embedded corpus ---------------------------------------------------

def stdlib_files() -> list[Path]:
    """The ``.py`` files of the embedded corpus, sorted by relative path.

    Rule: every ``*.py`` file under ``sysconfig.get_paths()["stdlib"]`` except those
    in folders named test/tests/idle_test/idlelib/site-packages/dist-packages/
    __pycache__, and except ``pydoc_data/topics.py`` (its topics are added one
    document each instead).
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _STDLIB_SKIP_DIRS)
        for name in filenames:
            if name.endswith(".py"):
                files.append(Path(dirpath, name))
    files = [f for f in files if f.relative_to(root).as_posix() != "pydoc_data/topics.py"]
    return sorted(files, key=lambda f: f.relative_to(root).as_posix())


def _stdlib_documents() -> Iterator[Document]:
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in stdlib_files():
        # A few stdlib files hold non-UTF-8 test bytes; replacement keeps them deterministic.
        text = path.read_bytes().decode("utf-8", errors="replace")
        if text.strip():
            yield Document("stdlib/" + path.relative_to(root).as_posix(), text)
    from pydoc_data import topics

    for key in sorted(topics.topics):
        yield Document(f"pydoc_data/topics/{key}", topics.topics[key])


# --- local files -------------------------------------------------------------

def local_files(path: Path) -> list[Path]:
    if not path.exists():
        raise DataError(f"data path not found: {str(path)!r}")
    if path.is_file():
        if path.suffix not in LOCAL_SUFFIXES:
            raise DataError(f"{str(path)!r}: unsupported file type (use {', '.join(LOCAL_SUFFIXES)})")
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in LOCAL_SUFFIXES)
    if not files:
        raise DataError(f"data folder {str(path)!r} has no {'/'.join(LOCAL_SUFFIXES)} files")
    return files


def _is_text(value) -> bool:
    """Whether a record's (string or None) value is kept: None and whitespace-only are skipped."""
    return value is not None and bool(value.strip())


def _skipped_message(where: str, skipped: int, text_field: str) -> str:
    return f"{where}: skipped {skipped} record(s) whose {text_field!r} is null or empty"


def _local_documents(path: Path, text_field: str, log: Callable[[str], None]) -> Iterator[Document]:
    root = path if path.is_dir() else path.parent
    for file in local_files(path):
        rel = file.relative_to(root).as_posix()
        if file.stat().st_size == 0:
            raise DataError(f"data file {str(file)!r} is empty")
        reader = {".txt": _txt_documents, ".jsonl": _jsonl_documents, ".parquet": _parquet_documents}[file.suffix]
        n = skipped = 0
        for doc_id, text in reader(file, text_field):
            if text is None:
                skipped += 1
                continue
            n += 1
            yield Document(f"{rel}:{doc_id}", text)
        if n == 0:
            extra = f" ({skipped} null or empty records)" if skipped else ""
            raise DataError(f"data file {str(file)!r} contains no text{extra}")
        if skipped:
            log(_skipped_message(f"data file {str(file)!r}", skipped, text_field))


def _txt_documents(file: Path, text_field: str) -> Iterator[tuple[str, str]]:
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _not_utf8(file) from None
    if TXT_SEPARATOR in text:
        parts = text.split("\n" + TXT_SEPARATOR + "\n")
    else:
        lines = text.splitlines(keepends=True)
        parts = ["".join(lines[i:i + TXT_LINES_PER_DOC]) for i in range(0, len(lines), TXT_LINES_PER_DOC)]
    for i, part in enumerate(parts):
        if part.strip():
            yield str(i), part


def _not_utf8(file: Path) -> DataError:
    """The error for a file that does not decode as UTF-8, naming its first bad line.

    Read again as bytes, line by line: only the error path pays for it, and cutting at the
    newline byte never splits a UTF-8 sequence (no multi-byte sequence contains it).
    """
    offset = 0
    with open(file, "rb") as f:
        for lineno, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                return DataError(f"data file {str(file)!r}, line {lineno}: not valid UTF-8 "
                                 f"(byte {line[e.start]:#04x} at byte offset {offset + e.start})")
            offset += len(line)
    return DataError(f"data file {str(file)!r} is not valid UTF-8 text")


# The readers yield (record id, text), with text None for a null or empty record.

def _jsonl_documents(file: Path, text_field: str) -> Iterator[tuple[str, str | None]]:
    # The text reader decodes ahead in blocks, so its UnicodeDecodeError knows no line.
    try:
        yield from _jsonl_records(file, text_field)
    except UnicodeDecodeError:
        raise _not_utf8(file) from None


def _jsonl_records(file: Path, text_field: str) -> Iterator[tuple[str, str | None]]:
    with open(file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"data file {str(file)!r}, line {lineno}: not valid JSON ({e})") from None
            if not isinstance(record, dict) or text_field not in record:
                raise DataError(f"data file {str(file)!r}, line {lineno}: no string field {text_field!r}")
            text = record[text_field]
            if text is not None and not isinstance(text, str):
                raise DataError(f"data file {str(file)!r}, line {lineno}: field {text_field!r} is a "
                                f"{type(text).__name__}, not a string")
            yield str(lineno), text if _is_text(text) else None


def _parquet_documents(file: Path, text_field: str) -> Iterator[tuple[str, str | None]]:
    try:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(file)
    except ImportError:
        raise DataError(f"reading {str(file)!r} needs pyarrow: pip install 'polycom[hf]'") from None
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise DataError(f"data file {str(file)!r} is not a readable parquet file: {e}") from None
    if text_field not in pf.schema_arrow.names:
        raise DataError(f"data file {str(file)!r} has no column {text_field!r} (columns: {pf.schema_arrow.names})")
    import pyarrow as pa

    column_type = pf.schema_arrow.field(text_field).type
    if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type) or pa.types.is_null(column_type)):
        raise DataError(f"data file {str(file)!r}: column {text_field!r} holds {column_type}, not strings")
    row = 0
    batches = pf.iter_batches(columns=[text_field], batch_size=1024)
    while True:
        try:
            batch = next(batches, None)
        except Exception as e:  # pyarrow raises several types for corrupt pages
            raise DataError(f"data file {str(file)!r} is corrupt near row {row}: {e}") from None
        if batch is None:
            return
        for text in batch.column(0).to_pylist():
            row += 1
            yield str(row), text if _is_text(text) else None


# --- Hugging Face datasets ---------------------------------------------------

def _hf_documents(name: str, config: str | None, split: str, text_field: str,
                  log: Callable[[str], None]) -> Iterator[Document]:
    try:
        import datasets
    except ImportError:
        raise DataError(f"source 'hf:{name}' needs the datasets package: pip install 'polycom[hf]'") from None
    if Path(name).exists():
        try:
            ds = datasets.load_from_disk(name)
        except FileNotFoundError as e:
            raise DataError(f"data.source=hf:{name}: not a dataset saved with save_to_disk ({e})") from None
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DataError(f"data.hf_split={split!r}: dataset {name!r} has splits {list(ds)}")
            ds = ds[split]
    else:
        try:
            ds = datasets.load_dataset(name, config, split=split)
        except OSError as e:  # ConnectionError offline, DatasetNotFoundError (a FileNotFoundError) for a bad name
            raise DataError(f"data.source=hf:{name}: could not reach or find the dataset on the Hugging Face "
                            f"hub or in the local cache ({type(e).__name__}); check the name and the network, "
                            "or use a local .txt/.jsonl/.parquet file or folder as data.source") from None
    if text_field not in ds.column_names:
        raise DataError(f"dataset {name!r} has no column {text_field!r} (columns: {ds.column_names})")
    skipped = 0
    for i, record in enumerate(ds.select_columns([text_field])):
        text = record[text_field]
        if text is not None and not isinstance(text, str):
            raise DataError(f"dataset {name!r}, row {i}: column {text_field!r} is a {type(text).__name__}, "
                            "not a string")
        if _is_text(text):
            yield Document(f"{name}:{i}", text)
        else:
            skipped += 1
    if skipped:
        log(_skipped_message(f"dataset {name!r}", skipped, text_field))
