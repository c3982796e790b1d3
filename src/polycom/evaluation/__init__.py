"""Evaluation beyond one validation loss: export to Hugging Face, sampling, lm-evaluation-harness."""
