"""The extra validation sets of ``eval.sets``: each corpus tokenised once with the run's
tokenizer (cached, ``data.prepare_heldout``) and sampled like the main validation split.

Every document of a set validates (none is trained on). The windows are those of
``BatchSampler.validation``: seed ``VALIDATION_SEED``, the first ``train.eval_batches *
train.batch_size`` of them (or all, if the set has fewer), so every run on the same
tokenizer scores the same windows of each set, at any world size.
"""

from __future__ import annotations

from ..data import BatchSampler, DataError, prepare_heldout
from ..data.tokenizer import Tokenizer
from .config import Config

__all__ = ["prepare_eval_sets"]


def prepare_eval_sets(cfg: Config, tokenizer: Tokenizer, log=print) -> dict[str, BatchSampler]:
    """name -> validation sampler over the set, in ``eval.sets`` order. A set that is empty,
    unreadable or shorter than one window raises DataError naming ``eval.sets.NAME``."""
    samplers = {}
    for name, entry in cfg.eval.sets.items():
        key = f"eval.sets.{name}"
        try:
            data = prepare_heldout(entry.corpus_spec(), tokenizer, cfg.data.cache_dir, log=log)
            samplers[name] = BatchSampler.validation(data.stream("val"), cfg.data.seq_len)
        except DataError as e:
            raise DataError(f"{key}: {e}") from None
        except ValueError as e:  # fewer tokens than one window
            raise DataError(f"{key}.source={entry.source!r}: {e}") from None
    return samplers
