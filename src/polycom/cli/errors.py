"""Known input errors -> one line on stderr and exit status 2; anything else keeps its traceback.

The known errors are the ones whose message already names the cause: ``ValueError``
(``ConfigError``, ``polycom.errors.UsageError`` and ``DataError`` subclass it) and the
``OSError`` subclasses raised for a path that is missing, of the wrong kind or not
writable. Every other exception is a bug in polycom or in the environment and must keep
its traceback, so it is not caught here.
"""

from __future__ import annotations

import sys

__all__ = ["USER_ERRORS", "one_line", "report"]

_PATH_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError)
USER_ERRORS = (ValueError, *_PATH_ERRORS)


def one_line(error: BaseException, paths: dict | None = None) -> str:
    """The error's message on one line; a path error names the option that gave the path.

    ``paths`` maps a path string to the option it came from (``{"runs/x.yaml": "--config"}``).
    """
    # A ConfigError exists only once train.config was imported (a core install has no lab extra to import it).
    config = sys.modules.get("polycom.train.config")
    is_config_error = config is not None and isinstance(error, config.ConfigError)
    if isinstance(error, _PATH_ERRORS) and error.filename is not None:
        where = (paths or {}).get(str(error.filename))
        text = f"{error.filename!r}: {error.strerror or type(error).__name__}"
        text = f"{where}: {text}" if where else text
    else:
        text = str(error) or type(error).__name__
    # Messages from other libraries (Hugging Face) can span lines: join them.
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return f"config error: {text}" if is_config_error else f"error: {text}"


def report(prog: str, error: BaseException, paths: dict | None = None) -> int:
    """Print ``"{prog}: error: ..."`` as one line to stderr; return the exit status 2.

    The line and its newline go out in one write: under torchrun every rank reports the
    same error to the same stderr, and with unbuffered stderr (``PYTHONUNBUFFERED``)
    ``print`` writes the text and the newline separately, so two ranks' lines interleave.
    """
    sys.stderr.write(f"{prog}: {one_line(error, paths)}\n")
    sys.stderr.flush()
    return 2
