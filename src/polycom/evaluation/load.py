"""A trained model and its tokenizer from a polycom run folder or an exported Hugging Face folder.

A run folder (``polycom train``'s ``train.out_dir``) holds ``config.yaml`` and
``checkpoints/step_*/``; its tokenizer is rebuilt from ``data.tokenizer``: the
byte tokenizer needs nothing, a trained BPE is read from ``data.cache_dir``
under the corpus hash the checkpoint recorded (never retrained here). Only the
checkpoint's ``model.safetensors`` and ``config.yaml`` are read: ``optimizer.pt`` and
``state.pt`` (pickles, needed by a resume alone) are never opened. An
exported folder (``polycom export``) holds ``config.json``, safetensors
weights and ``tokenizer.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.pipeline import default_cache_dir
from ..data.tokenizer import ByteTokenizer, Tokenizer, load_tokenizer
from ..models import Transformer, build_model
from ..train.checkpoint import checkpoint_step, latest_checkpoint, load_weights
from ..train.config import Config, load_config

__all__ = ["LoadedRun", "load_run", "load_model_and_tokenizer", "is_hf_folder", "eager_activations"]


@dataclass
class LoadedRun:
    model: Transformer  # eval mode, on CPU, fp32
    tokenizer: Tokenizer  # polycom's tokenizer interface (encode/decode/eot_id)
    config: Config
    checkpoint: Path
    step: int
    corpus_hash: str | None


def is_hf_folder(path: Path) -> bool:
    return (Path(path) / "config.json").is_file()


def run_tokenizer(cfg: Config, corpus_hash: str | None) -> Tokenizer:
    """The tokenizer the run trained with, found where the trainer cached it."""
    name = cfg.data.tokenizer
    if name == "byte":
        return ByteTokenizer()
    if name.startswith("hf:"):
        return load_tokenizer(name[3:])
    cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else default_cache_dir()
    if corpus_hash is None:
        raise FileNotFoundError("the checkpoint records no corpus_hash, so its BPE tokenizer cannot be found")
    path = cache / "tokenizers" / f"bpe-{cfg.data.vocab_size}-{corpus_hash[:16]}.json"
    if not path.is_file():
        raise FileNotFoundError(f"the run's BPE tokenizer is not in data.cache_dir: no {path} "
                                "(set POLYCOM_CACHE or data.cache_dir to the cache the run used)")
    return load_tokenizer(str(path))


def load_run(run_dir: str | Path) -> LoadedRun:
    """The latest checkpoint of a run folder as an eval-mode fp32 model on CPU, with its tokenizer."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"RUN: {run_dir} is not a polycom run folder (no config.yaml)")
    folder = latest_checkpoint(run_dir)
    if folder is None:
        raise FileNotFoundError(f"RUN: no checkpoint in {run_dir / 'checkpoints'} "
                                "(train with train.checkpoint_every, or let the run finish: it saves at the end)")
    weights, metadata = load_weights(folder)
    cfg = load_config(folder / "config.yaml")  # the config the checkpoint was written under
    corpus_hash = metadata.get("corpus_hash") or _logged_corpus_hash(run_dir)
    tok = run_tokenizer(cfg, corpus_hash)
    model_config = cfg.model.build_config(tok.vocab_size, cfg.data.seq_len)  # exactly as the trainer builds it
    model = build_model(model_config)
    model.load_state_dict(weights, strict=True)
    return LoadedRun(model.eval(), tok, cfg, folder, checkpoint_step(folder), corpus_hash)


def _logged_corpus_hash(run_dir: Path) -> str | None:
    """The corpus hash in metrics.jsonl's first record, for checkpoints older than the hash in their metadata."""
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return None
    with open(metrics, errors="replace") as f:
        try:
            first = json.loads(f.readline())
        except ValueError:
            return None
    return first.get("corpus_hash") if isinstance(first, dict) else None


class _HFTokenizerAdapter(Tokenizer):
    """A transformers tokenizer behind polycom's tokenizer interface (encode/decode/eot_id)."""

    def __init__(self, tok):
        self.tok, self.name = tok, tok.name_or_path
        self.vocab_size, self.eot_id = len(tok), tok.eos_token_id

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.tok.encode(t, add_special_tokens=False) for t in texts]

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids])


def load_model_and_tokenizer(path: str | Path) -> tuple[Transformer, Tokenizer]:
    """(model, tokenizer) from a run folder or an exported Hugging Face folder."""
    path = Path(path)
    if is_hf_folder(path):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from .. import hf  # noqa: F401 - registers model_type "polycom"

        model = AutoModelForCausalLM.from_pretrained(path).eval()
        return model.model, _HFTokenizerAdapter(AutoTokenizer.from_pretrained(path))
    if (path / "config.yaml").is_file():
        run = load_run(path)
        return run.model, run.tokenizer
    raise FileNotFoundError(f"{path}: neither a polycom run folder (config.yaml, checkpoints/) "
                            "nor an exported model folder (config.json)")


def eager_activations(model: torch.nn.Module) -> int:
    """Switch activations left on ``implementation="auto"`` to ``"eager"``; returns how many.

    On CPU "auto" means a kernel compiled per input shape; inference feeds a new
    shape at nearly every call (growing prompts, lm-eval's padded batches), so
    compilation would dominate. The eager closed form computes the same function.
    """
    n = 0
    for m in model.modules():
        if getattr(m, "implementation", None) == "auto":
            m.implementation = "eager"
            n += 1
    return n
