"""Activation families, one module each: formula, functional form, module, registry entry, fast path.

Importing this package imports every family module, and each registers its
activations (``register_activation``) and fast paths (``ops.dispatch.register_op``)
at import. Add a family by adding a module and one import
line here; see docs/models.md, "Add an activation in one file".

Families: ``general`` (PolyCom(base, order, kind)), ``polyrelu``, ``polynorm``,
``gated_polynorm`` (and PNGLU), ``baselines`` (ReLU, GELU, SiLU, ReLU^2, SwiGLU,
GEGLU), ``fixed_polynomials`` (least-squares ReLU approximations, x^2, x^2 + x).
"""

from . import baselines, fixed_polynomials, gated_polynorm, general, polynorm, polyrelu  # noqa: F401 - registers
from . import hermite  # noqa: F401 - registers
from . import fourier  # noqa: F401 - registers
from . import tropical  # noqa: F401 - registers
from . import fitting  # noqa: F401
from . import mu_layer  # noqa: F401 - registers
from . import af_kan  # noqa: F401 - registers
from . import grouped_polynorm  # noqa: F401 - registers
from .baselines import GEGLU, ReLU2, SwiGLU
from .coefficients import PolyCoefficients
from .fitting import fit
from .fixed_polynomials import FixedPolynomial, ReLUApproximation
from .fourier import Fourier
from .hermite import Hermite
from .gated_polynorm import GatedPolyNorm
from .general import PolyCom
from .polynorm import PolyNorm
from .polyrelu import PolyReLU
from .tropical import TropicalPolynomial, TropicalRational

__all__ = [
    "PolyCoefficients",
    "PolyCom",
    "PolyReLU",
    "PolyNorm",
    "GatedPolyNorm",
    "ReLU2",
    "SwiGLU",
    "GEGLU",
    "FixedPolynomial",
    "ReLUApproximation",
    "Hermite",
    "Fourier",
    "TropicalPolynomial",
    "TropicalRational",
    "fit",
]
