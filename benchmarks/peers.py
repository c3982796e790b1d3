"""Other libraries' PolyNorm, measured against polycom where they are installed.

Nothing here is a dependency: each loader returns None (and says why) when the
peer cannot run, and the benchmarks leave its rows out.
"""

from __future__ import annotations

import torch


def liger_poly_norm_ops(device: torch.device):
    """Liger-Kernel's ``liger_kernel.ops.poly_norm`` module (order 3 only, CUDA), or None.

    Imported by module path so that ``liger_kernel.transformers`` (which pulls in
    Hugging Face transformers) is not needed.
    """
    if device.type != "cuda":
        return None
    try:
        from liger_kernel.ops import poly_norm
    except ImportError as err:
        print(f"(Liger-Kernel not measured: {err})")
        return None
    return poly_norm


def liger_version() -> str:
    from importlib.metadata import version

    return version("liger-kernel")
