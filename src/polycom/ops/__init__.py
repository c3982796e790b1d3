"""Fast paths for PolyCom activations, with the same signatures as ``polycom.functional``.

``dispatch`` picks an implementation per call; see ``dispatch.IMPLEMENTATIONS``. The
ops and their kernels (``dispatch.register_op``, ``kernel_sets.register_kernel``) are
registered by the activation family modules in ``polycom.activations``.
"""

from .dispatch import IMPLEMENTATIONS, available_implementations, select_implementation

__all__ = ["IMPLEMENTATIONS", "available_implementations", "select_implementation"]
