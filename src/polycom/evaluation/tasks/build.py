"""Deterministic item generation for the packaged tasks (see the package docstring)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

from ...data.corpus import CorpusSpec, iter_documents, split_of
from ...data.pipeline import default_cache_dir

__all__ = ["TASK_NAMES", "BPB_CHARS", "held_out_documents", "cloze_items", "build_tasks"]

TASK_NAMES = ("polycom_cloze", "polycom_bpb")
HELD_OUT_FRACTION = 0.05  # the default data.val_fraction; see the package docstring
BPB_CHARS = 2000  # characters per document in polycom_bpb: every document weighs about the same
BPB_DOCUMENTS = 100
CLOZE_ITEMS_PER_DOC = 6
CLOZE_CONTEXT_CHARS = 300  # lines before the blank, at most this many characters
CLOZE_MIN_LINE = 16  # candidate lines have at least this many non-blank characters
CLOZE_MAX_ITEMS = 400
N_CHOICES = 4
FORMAT_VERSION = 1


def held_out_documents() -> list:
    """Validation documents of the stdlib corpus at val_fraction 0.05, in corpus order."""
    return [d for d in iter_documents(CorpusSpec("stdlib")) if split_of(d.doc_id, HELD_OUT_FRACTION) == "val"]


def cloze_items(doc_id: str, text: str, per_doc: int = CLOZE_ITEMS_PER_DOC) -> list[dict]:
    """Up to ``per_doc`` items of one document: context, four candidate next lines, the true index.

    Candidates are distinct stripped lines of the document; distractors are drawn from
    the lines that differ from the answer, with an RNG seeded by the document id."""
    lines = text.splitlines(keepends=True)
    candidates = sorted({ln.strip() for ln in lines if len(ln.strip()) >= CLOZE_MIN_LINE})
    rng = random.Random(hashlib.sha256(doc_id.encode()).hexdigest())
    positions = [i for i, ln in enumerate(lines) if i > 0 and len(ln.strip()) >= CLOZE_MIN_LINE]
    if len(candidates) < N_CHOICES:
        return []
    items = []
    for i in sorted(rng.sample(positions, min(per_doc, len(positions)))):
        context = "".join(lines[:i])[-CLOZE_CONTEXT_CHARS:]
        indent = lines[i][:len(lines[i]) - len(lines[i].lstrip())]
        answer = lines[i].strip()
        distractors = rng.sample([c for c in candidates if c != answer], N_CHOICES - 1)
        choices = [answer, *distractors]
        rng.shuffle(choices)
        # The indentation belongs to the context: every choice then starts at the same column.
        items.append({"doc_id": doc_id, "context": context + indent, "choices": choices,
                      "label": choices.index(answer)})
    return items


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def build_tasks(cache_dir: Path | str | None = None) -> Path:
    """Write the task YAMLs and their data into a cache folder (once per corpus); returns the folder."""
    docs = held_out_documents()
    templates = Path(__file__).resolve().parent
    key = hashlib.sha256(f"v{FORMAT_VERSION}".encode())
    for name in TASK_NAMES:  # an edited YAML template is a new folder, not a stale cached copy
        key.update((templates / f"{name}.yaml").read_bytes())
    for d in docs:
        key.update(d.doc_id.encode() + b"\0" + d.text.encode("utf-8", errors="surrogatepass") + b"\0")
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    folder = root / "eval_tasks" / key.hexdigest()[:16]
    if (folder / "polycom_bpb.yaml").exists():
        return folder
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cloze = [item for d in docs for item in cloze_items(d.doc_id, d.text)][:CLOZE_MAX_ITEMS]
    bpb = [{"doc_id": d.doc_id, "text": d.text[:BPB_CHARS]} for d in docs[:BPB_DOCUMENTS]]
    _write_jsonl(tmp / "polycom_cloze.jsonl", cloze)
    _write_jsonl(tmp / "polycom_bpb.jsonl", bpb)
    for name in TASK_NAMES:  # the final data path goes in: lm-eval reads data_files as given
        text = (templates / f"{name}.yaml").read_text().replace("DATA_FILE", str(folder / f"{name}.jsonl"))
        (tmp / f"{name}.yaml").write_text(text)
    if not folder.exists():
        os.replace(tmp, folder)
    shutil.rmtree(tmp, ignore_errors=True)
    return folder
