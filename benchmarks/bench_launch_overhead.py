"""Raw Triton kernel time vs the full polycom call path (CUDA only).

Separates the kernels' bandwidth from the Python/dispatch overhead of the
public API: CUDA-event timing of many back-to-back calls, so launches overlap
as they do inside a model.
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from harness import cuda_ms_per_call  # noqa: E402

from polycom import functional as PF  # noqa: E402
from polycom.ops import triton_poly_norm as tpn  # noqa: E402
from polycom.ops import triton_poly_relu as tpr  # noqa: E402


def per_call_ms(fn, iters=50):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    return cuda_ms_per_call(fn, iters)


def main():
    rows, feats = (int(v) for v in (sys.argv[1:3] if len(sys.argv) > 2 else (16384, 4096)))
    x = torch.randn(rows, feats, device="cuda", dtype=torch.bfloat16)
    g = torch.randn_like(x)
    w, b = torch.full((3,), 1 / 3, device="cuda"), torch.zeros(1, device="cuda")
    y, inv = tpn.poly_norm_forward_triton(x, w, b, 1e-6)
    gb = 2 * x.numel() * x.element_size() / 1e9  # read + write, GB
    cases = {
        "copy": lambda: x.clone(),
        "polynorm fwd kernel": lambda: tpn.poly_norm_forward_triton(x, w, b, 1e-6),
        "polynorm fwd API": lambda: PF.poly_norm(x, w, b),
        "polynorm bwd kernel": lambda: tpn.poly_norm_backward_triton(g, x, w, inv),
        "polyrelu fwd kernel": lambda: tpr.poly_relu_forward_triton(x, w, b),
        "polyrelu fwd API": lambda: PF.poly_relu(x, w, b),
        "gelu": lambda: torch.nn.functional.gelu(x),
    }
    with torch.no_grad():
        for name, fn in cases.items():
            ms = per_call_ms(fn)
            traffic = gb * (1.5 if "bwd" in name else 1.0)  # bwd reads g and x, writes dx
            print(f"{name:22s} {ms:8.3f} ms  {traffic / ms * 1e3:7.0f} GB/s")


if __name__ == "__main__":
    main()
