"""Run a function right after a module is first imported, without importing it now.

    after_import("transformers.models.auto.modeling_auto", callback)

If the module is already imported, ``callback(module)`` runs at once; otherwise a finder
on ``sys.meta_path`` waits for the first import of that name, lets the real finders locate
and execute the module, then calls ``callback(module)`` and removes itself. ``import
polycom`` uses it to register model_type "polycom" with transformers' Auto classes only
when the program itself imports them (docs/evaluation.md has the measured costs). An
exception in the callback is turned into a warning: it must not break the other
library's import.
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
    def __init__(self, name: str, callback):
        self.name, self.callback, self.searching = name, callback, False

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name or self.searching:
            return None
        self.searching = True  # the finders asked below must not find this one again
        try:
            spec = next((s for f in sys.meta_path if f is not self and hasattr(f, "find_spec")
                         and (s := f.find_spec(fullname, path, target)) is not None), None)
        finally:
            self.searching = False
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _CallbackLoader(spec.loader, self)
        return spec


class _CallbackLoader(importlib.abc.Loader):
    """The real loader; after it has executed the module, the finder's callback runs once."""

    def __init__(self, loader, finder: _AfterImportFinder):
        self.loader, self.finder = loader, finder

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        if self.finder in sys.meta_path:
            sys.meta_path.remove(self.finder)
            _call(self.finder.callback, module, self.finder.name)
