import os
import sys

import torch

# tests/naive.py holds the independent float64 formulas shared by the test files.
sys.path.insert(0, os.path.dirname(__file__))

# Without a GPU, Triton kernels run through the Triton interpreter on CPU tensors
# (numerics only). Must be set before any kernel module is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
