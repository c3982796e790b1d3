"""polycom: polynomial composition activations (PolyReLU, PolyNorm; Zhuo et al., ICLR 2025).

Quick use::

    import polycom
    mlp_act = polycom.PolyNorm()           # instead of nn.GELU()
    act = polycom.get_activation("polyrelu", order=3)
"""

from . import functional
from .activations import GEGLU, FixedPolynomial, GatedPolyNorm, PolyCom, PolyNorm, PolyReLU, ReLU2, ReLUApproximation, SwiGLU
from .registry import ActivationInfo, activation_info, get_activation, list_activations, register_activation, registered

__version__ = "0.1.0"

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
