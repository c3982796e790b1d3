import os
import sys

import torch

# tests/naive.py holds the independent float64 formulas shared by the test files.
sys.path.insert(0, os.path.dirname(__file__))

# Without a GPU, Triton kernels run through the Triton interpreter on CPU tensors
# (numerics only). Must be set before any kernel module is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Under pytest-xdist (the README runs `-n auto`, one worker per core) each worker and the processes
# it starts use one thread: two-thread workers on two cores oversubscribe them, and OpenMP's
# spinning threads then slowed the suite several-fold.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
