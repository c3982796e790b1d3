"""polycom: polynomial composition activations (PolyReLU, PolyNorm; Zhuo et al., ICLR 2025).

Quick use::

    import polycom
    mlp_act = polycom.PolyNorm()           # instead of nn.GELU()
    act = polycom.get_activation("polyrelu", order=3)
"""

from . import functional, import_hooks
from .activations import GEGLU, FixedPolynomial, GatedPolyNorm, PolyCom, PolyNorm, PolyReLU, ReLU2, ReLUApproximation, SwiGLU
from .registry import ActivationInfo, activation_info, get_activation, list_activations, register_activation, registered

__version__ = "0.1.0"


def _register_with_transformers(_module) -> None:
    """model_type "polycom" for ``AutoModelForCausalLM.from_pretrained`` after ``import polycom``:
    run when the program imports transformers' Auto model classes (at once if it already has),
    so ``import polycom`` itself never imports transformers."""
    import polycom.hf  # noqa: F401 - registers on import; the one sanctioned upward import (tests/test_architecture.py)


import_hooks.after_import("transformers.models.auto.modeling_auto", _register_with_transformers)

__all__ = [
    "functional",
    "PolyCom",
    "PolyReLU",
    "PolyNorm",
    "GatedPolyNorm",
    "ReLU2",
    "SwiGLU",
    "GEGLU",
    "FixedPolynomial",
    "ReLUApproximation",
    "ActivationInfo",
    "activation_info",
    "get_activation",
    "list_activations",
    "register_activation",
    "registered",
    "__version__",
]
