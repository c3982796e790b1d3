"""A polycom run folder -> a Hugging Face model folder (``polycom export``).

    OUT/config.json            PolyComConfig (model_type "polycom")
    OUT/model.safetensors      the latest checkpoint's weights under "model." names
    OUT/tokenizer.json ...     the run's tokenizer as a PreTrainedTokenizerFast
    OUT/polycom_export.json    where it came from: run folder, checkpoint, step, corpus hash;
                               also the mark that polycom wrote OUT as an export

``force=True`` replaces only a folder holding that mark, never any other folder, and an
output that is the run folder or contains it is refused with or without it.

After ``import polycom.hf`` (which registers model_type "polycom"),
``AutoModelForCausalLM.from_pretrained(OUT)`` and ``AutoTokenizer.from_pretrained(OUT)``
load it. The byte tokenizer becomes a byte-level BPE with no merges whose token
i is byte i, so both tokenizers give the same ids for any text.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..data.tokenizer import ByteTokenizer, HFTokenizer, Tokenizer
from .load import load_run

__all__ = ["export_run", "to_hf_tokenizer", "byte_level_alphabet", "EXPORT_MARK"]

EXPORT_MARK = "polycom_export.json"  # written into every export; --force replaces no folder without it


def byte_level_alphabet() -> list[str]:
    """The character that stands for byte b in byte-level BPE vocabularies (GPT-2's table).

    Printable Latin-1 bytes stand for themselves; the other 68 bytes (controls,
    space, 0x7f-0xa0, 0xad) take the characters from U+0100 on, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def _byte_tokenizer_object():
    """``tokenizers.Tokenizer`` equal to ByteTokenizer: id = byte value, no merges, no special tokens."""
    from tokenizers import Tokenizer as _Tok
    from tokenizers import decoders, models, pre_tokenizers

    vocab = {c: b for b, c in enumerate(byte_level_alphabet())}
    tok = _Tok(models.BPE(vocab=vocab, merges=[]))
    # use_regex=False: no word splitting is needed when nothing merges.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def to_hf_tokenizer(tokenizer: Tokenizer):
    """polycom's tokenizer as a ``transformers.PreTrainedTokenizerFast``; eos = the document separator."""
    from transformers import PreTrainedTokenizerFast

    if isinstance(tokenizer, ByteTokenizer):
        # The separator is byte 0 (NUL), an ordinary vocabulary entry whose character is U+0100.
        # Naming it eos_token gives eos_token_id 0; split_special_tokens keeps a literal U+0100
        # in the text from matching it, so text still encodes to its UTF-8 bytes.
        obj, eos = _byte_tokenizer_object(), byte_level_alphabet()[tokenizer.eot_id]
        split_special = True
    elif isinstance(tokenizer, HFTokenizer):
        obj = tokenizer.tok
        eos = obj.id_to_token(tokenizer.eot_id) if tokenizer.eot_id is not None else None
        split_special = False  # polycom's BPE also reads a literal <|endoftext|> as the separator
    else:
        raise TypeError(f"cannot export a {type(tokenizer).__name__}; expected ByteTokenizer or HFTokenizer")
    hf = PreTrainedTokenizerFast(tokenizer_object=obj, eos_token=eos, pad_token=eos, padding_side="right",
                                 clean_up_tokenization_spaces=False, split_special_tokens=split_special)
    return hf


def export_run(run_dir: str | Path, out_dir: str | Path | None = None, force: bool = False, log=print) -> Path:
    """Write the run's latest checkpoint as a Hugging Face folder (default ``RUN/hf``); returns it."""
    from ..hf import from_polycom

    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "hf"
    _check_output(run_dir, out, force)
    run = load_run(run_dir)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")  # written aside, renamed into place when complete
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        from_polycom(run.model).save_pretrained(tmp)
        to_hf_tokenizer(run.tokenizer).save_pretrained(tmp)
        (tmp / EXPORT_MARK).write_text(json.dumps({
            "run_dir": str(run_dir.resolve()), "checkpoint": str(run.checkpoint.resolve()), "step": run.step,
            "corpus_hash": run.corpus_hash, "tokenizer": run.tokenizer.name}, indent=1))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"exported {run.checkpoint} (step {run.step}) -> {out}")
    return out


def _check_output(run_dir: Path, out: Path, force: bool) -> None:
    """Refuse an output that would replace the run or a folder polycom did not write as an export."""
    source = run_dir.resolve()
    if out.resolve() == source or out.resolve() in source.parents:
        raise ValueError(f"--out {out} is the run folder {run_dir} or contains it; exporting there would replace "
                         "the run: choose a folder outside it (the default is RUN/hf)")
    if not out.exists() and not out.is_symlink():
        return
    if not force:
        raise FileExistsError(f"--out {out} already exists; pass --force to replace it")
    if out.is_symlink() or not out.is_dir() or not (out / EXPORT_MARK).is_file():
        raise ValueError(f"--out {out} is not a folder written by `polycom export` (no {EXPORT_MARK}); --force "
                         "replaces only an earlier export: remove it yourself or choose another --out")
