"""How much memory autograd keeps for backward: the measure behind polycom's memory claims."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

__all__ = ["saved_tensor_bytes"]


def saved_tensor_bytes(run: Callable[[], object], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``run()`` executes.

    Each storage counts once: a reshaped view of the input is no new memory. Storages of
    ``exclude`` (a model's parameters, which exist anyway) are not counted. Use it on any
    module, e.g. ``saved_tensor_bytes(lambda: mlp(x))`` with GELU and with PolyNorm.
    """
    excluded = {t.untyped_storage().data_ptr() for t in exclude}
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in saved}
    storages = {ptr: n for ptr, n in storages.items() if ptr not in excluded}
    return sum(storages.values())
