"""Run a function right after a module is first imported, without importing it now.

    after_import("transformers.models.auto.modeling_auto", callback)

If the module is already imported, ``callback(module)`` runs at once; otherwise a finder
on ``sys.meta_path`` waits for the first import of that name, lets the real finders locate
and execute the module, then calls ``callback(module)`` and removes itself. ``import
polycom`` uses it to register model_type "polycom" with transformers' Auto classes only
when the program itself imports them (docs/evaluation.md has the measured costs). An
exception in the callback is turned into a warning: it must not break the other
library's import.

The module is often imported from inside another module of its package
(``transformers.modeling_layers`` imports ``modeling_auto`` while
``modeling_llama`` is being executed). A callback run at that moment would find those
modules half-executed, so the finder also watches the package's other imports and runs
the callback once the outermost of them has finished.
"""

from __future__ import annotations

import importlib.abc
import sys
import warnings
from typing import Callable

__all__ = ["after_import"]


def after_import(name: str, callback: Callable[[object], None]) -> None:
    if name in sys.modules:
        _call(callback, sys.modules[name], name)
    else:
        sys.meta_path.insert(0, _AfterImportFinder(name, callback))


def _call(callback, module, name: str) -> None:
    try:
        callback(module)
    except Exception as e:  # noqa: BLE001 - reported, never raised into the importer
        warnings.warn(f"polycom: the hook run after importing {name} failed: {type(e).__name__}: {e}", stacklevel=3)


class _AfterImportFinder(importlib.abc.MetaPathFinder):
    """Wraps the loader of every module of the target's top-level package until the callback has run."""

    def __init__(self, name: str, callback):
        self.name, self.callback, self.searching = name, callback, False
        self.package = name.split(".")[0]
        self.executing = 0  # wrapped modules of the package whose code is running now
        self.module = None  # the target, once executed

    def find_spec(self, fullname, path, target=None):
        if self.searching or fullname.split(".")[0] != self.package:
            return None
        self.searching = True  # the finders asked below must not find this one again
        try:
            spec = next((s for f in sys.meta_path if f is not self and hasattr(f, "find_spec")
                         and (s := f.find_spec(fullname, path, target)) is not None), None)
        finally:
            self.searching = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _CallbackLoader(spec.loader, self)
        return spec

    def executed(self, module, finished: bool) -> None:
        """Called by a wrapped loader when its module's code has run (``finished``: without an exception)."""
        self.executing -= 1
        if finished and module.__name__ == self.name:
            self.module = module
        if self.module is not None and self.executing == 0 and self in sys.meta_path:
            sys.meta_path.remove(self)
            _call(self.callback, self.module, self.name)


class _CallbackLoader(importlib.abc.Loader):
    """The real loader; the finder hears when the module has executed. Other attributes are the real loader's."""

    def __init__(self, loader, finder: _AfterImportFinder):
        self.loader, self.finder = loader, finder

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.finder.executing += 1
        finished = False
        try:
            self.loader.exec_module(module)
            finished = True
        finally:
            self.finder.executed(module, finished)
