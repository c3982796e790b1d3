"""From a path to a model and its validation tokens, exactly as the trainer built them.

A path is either a run folder (``config.yaml`` and ``checkpoints/step_*``, written by
``polycom train``) or one checkpoint folder (``model.safetensors`` and ``config.yaml``).
The model comes from the saved config (vocabulary size read off the embedding
table, so no data is needed to rebuild it); the validation batch from
``polycom.data`` with that config's corpus and tokenizer, the first windows of the
validation split in order (what ``Trainer.evaluate`` reads first).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from ..train.checkpoint import CheckpointError, latest_checkpoint, load_weights
from ..train.config import Config, ConfigError, check_paths, load_config
from ..train.sharded_checkpoint import is_sharded, read_state
from ..models.structure import AnalysisError

__all__ = ["RunFiles", "resolve_run", "load_model", "validation_inputs"]


@dataclass
class RunFiles:
    config: Config
    checkpoints: list[Path]  # oldest first; the last is the one analysed
    run_dir: Path | None  # None for a lone checkpoint folder


def _is_checkpoint(p: Path) -> bool:
    """A single-process checkpoint (model.safetensors) or a sharded one (model/, written by DCP)."""
    return ((p / "model.safetensors").is_file() or is_sharded(p)) and (p / "config.yaml").is_file()


def resolve_run(path: str | Path) -> RunFiles:
    p = Path(path)
    expected = ("expected a polycom run folder (config.yaml and checkpoints/step_*, as `polycom train` writes) "
                "or one checkpoint folder (model.safetensors and config.yaml)")
    if (p / "config.yaml").is_file() and (p / "checkpoints").is_dir():
        try:
            final = latest_checkpoint(p)  # only folders inside p/checkpoints (a link out of it is refused)
        except CheckpointError as e:
            raise AnalysisError(str(e)) from None
        if final is None:
            raise AnalysisError(f"{p} is a run folder without a complete checkpoint in {p / 'checkpoints'}")
        inside = (p / "checkpoints").resolve()
        done = sorted(c for c in (p / "checkpoints").glob("step_*")
                      if _is_checkpoint(c) and c.resolve().parent == inside and c <= final)
        folders, run_dir, cfg_file = done, p, p / "config.yaml"
    elif _is_checkpoint(p):
        folders, run_dir, cfg_file = [p], None, p / "config.yaml"
    else:
        raise AnalysisError(f"{p} is not a polycom run or checkpoint: {expected}")
    try:
        cfg = load_config(cfg_file)
    except ConfigError as e:
        raise AnalysisError(f"{cfg_file}: not a polycom training config ({e})") from None
    return RunFiles(cfg, folders, run_dir)


def checkpoint_step(folder: Path) -> int:
    if is_sharded(folder):
        return int(read_state(folder)["step"])
    with safe_open(str(folder / "model.safetensors"), "pt") as f:  # the trainer stores the step as metadata
        return int((f.metadata() or {}).get("step", -1))


def load_model(folder: Path, cfg: Config, model=None):
    """The checkpoint's polycom Transformer (eval mode, CPU); ``model`` reuses a built one."""
    from ..models import build_model

    try:
        state, _ = load_weights(folder)  # refuses a weights file linked from elsewhere
    except CheckpointError as e:
        raise AnalysisError(str(e)) from None
    if model is None:
        vocab = state["tok_embeddings.weight"].shape[0]
        model = build_model(cfg.model_config(vocab))
    model.load_state_dict(state)
    return model.eval()


def validation_inputs(cfg: Config, n_sequences: int) -> torch.Tensor:
    """``n_sequences`` validation windows, the trainer's own (``BatchSampler.validation``), as model inputs
    (n, seq_len), or a clear error."""
    from ..data import BatchSampler, prepare_data

    try:
        check_paths(cfg)
        data = prepare_data(cfg.data.corpus_spec(), cfg.data.tokenizer, cfg.data.vocab_size, cfg.data.cache_dir,
                            log=lambda *a: None)
        sampler = BatchSampler.validation(data.stream("val"), cfg.data.seq_len)
    except (ConfigError, ValueError, OSError) as e:
        raise AnalysisError(f"the validation data of this run is not reachable (data.source={cfg.data.source!r}, "
                            f"data.cache_dir={cfg.data.cache_dir!r}): {e}; layer similarity needs it "
                            "(--no-similarity skips it)") from None
    n = min(n_sequences, sampler.n_windows)
    return sampler.batch(range(n))[:, :-1]  # (n, seq_len): the inputs the trainer feeds
