"""Fast paths for PolyCom activations, with the same signatures as ``polycom.functional``.

``dispatch`` picks an implementation per call; see ``dispatch.IMPLEMENTATIONS``. Each op
(its kernels in its file here, e.g. ``poly_norm.py``, and its reference formula) is registered
once, ``dispatch.register_op``, by its activation family module in ``polycom.activations``;
``fused_op`` runs it (autograd, torch.library ops).
"""

from .dispatch import IMPLEMENTATIONS, available_implementations, select_implementation

__all__ = ["IMPLEMENTATIONS", "available_implementations", "select_implementation"]
