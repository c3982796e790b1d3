"""compare's result files are written with the trainer's atomic writer (``polycom.train.files``)."""

from __future__ import annotations

from ...train.files import write_json_atomic, write_text_atomic

__all__ = ["write_text_atomic", "write_json_atomic"]
