"""polycom's optional extras: which one a feature needs, and one line that says so when it is missing.

``pip install polycom`` is the core (activations, kernels, models: torch, numpy and
safetensors). Everything else is an extra, named in pyproject.toml; the lab (training,
``polycom compare``, analysis, plots, statistics, tokenizers) is ``polycom[lab]``. A lab
subpackage calls ``require("lab", ...)`` first thing, and the CLI turns a missing module
into ``polycom compare: error: needs the 'lab' extra ...`` instead of a traceback.
"""

from __future__ import annotations

import importlib.util

__all__ = ["EXTRAS", "MissingExtraError", "extra_of", "missing_extra", "require"]

# Extra -> the top-level modules it installs (import names, not distribution names).
EXTRAS: dict[str, tuple[str, ...]] = {
    "lab": ("yaml", "omegaconf", "scipy", "matplotlib", "tokenizers", "tqdm"),
    "hf": ("transformers", "datasets", "pyarrow"),
    "triton": ("triton",),
    "tensorboard": ("tensorboard",),
    "cluster": ("submitit",),
    "graph": ("torch_geometric",),
    "kernels": ("kernels",),
    "eval": ("lm_eval",),
}


class MissingExtraError(ImportError):
    """A feature's optional dependency is not installed; the message names the extra to install."""

    def __init__(self, feature: str, extra: str, module: str):
        super().__init__(f"{feature} needs polycom's '{extra}' extra (no module named {module!r}): "
                         f"pip install 'polycom[{extra}]'", name=module)
        self.extra, self.module = extra, module


def extra_of(module: str) -> str | None:
    """The extra that installs ``module`` (a dotted name is judged by its top level), or None."""
    top = module.split(".")[0]
    return next((extra for extra, modules in EXTRAS.items() if top in modules), None)


def missing_extra(error: ImportError, feature: str) -> MissingExtraError | None:
    """``error`` restated for ``feature`` when an extra provides the missing module (a
    ``MissingExtraError`` or a ``ModuleNotFoundError`` of such a module); None otherwise (a
    broken install or a bug: keep the original traceback)."""
    if isinstance(error, MissingExtraError):
        return MissingExtraError(feature, error.extra, error.module)
    if not isinstance(error, ModuleNotFoundError) or extra_of(error.name or "") is None:
        return None
    return MissingExtraError(feature, extra_of(error.name), error.name.split(".")[0])


def require(extra: str, feature: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise ``MissingExtraError`` naming ``extra`` when one of its modules (or of ``modules``, the
    part of the extra ``feature`` imports) is not installed.

    ``find_spec`` looks the modules up without importing them, so the check costs no import time."""
    for module in modules or EXTRAS[extra]:
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(feature, extra, module)
