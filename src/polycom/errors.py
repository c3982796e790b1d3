"""The one exception class for a mistake in how polycom was called.

A ``UsageError`` means the input is wrong, not the code: a config value the
machine cannot honour (``train.device=cuda`` without CUDA), a path that is a
file where a folder is needed, a launch without torchrun, a corpus that cannot
be read. Its message names the key or path and says what to do instead, so the
CLI prints it as one line (exit status 2) instead of a traceback. It subclasses
``ValueError`` so library callers that already catch ``ValueError`` keep working.
"""

from __future__ import annotations

__all__ = ["AnalysisError", "UsageError"]


class UsageError(ValueError):
    """Bad input (config, paths, launch); the message names the key and the fix."""


class AnalysisError(UsageError):
    """A model or path the analysis cannot read; the message says what was expected."""
