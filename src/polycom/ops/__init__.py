"""Fast paths for PolyCom activations, with the same signatures as ``polycom.functional``.

``dispatch`` picks an implementation per call; see ``dispatch.IMPLEMENTATIONS``.
"""

from .dispatch import IMPLEMENTATIONS, available_implementations, select_implementation

__all__ = ["IMPLEMENTATIONS", "available_implementations", "select_implementation"]
