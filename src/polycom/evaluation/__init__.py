"""Evaluation beyond one validation loss: export to Hugging Face, sampling, lm-evaluation-harness."""

from ..extras import require

require("lab", "polycom.evaluation")  # one line naming the extra, before a bare ModuleNotFoundError
