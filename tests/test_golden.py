"""Golden loss curve: any unintended numerical change to the trainer, model, data or activations fails here.

The run is deterministic on CPU (seeded init and data order, no dropout): with 1 and 2 threads it gave
bitwise-equal losses here. The tolerance, 2e-4 nats, is for what may legitimately differ on another CPU:
fp32 matmul summation order (vector width, BLAS kernel choice), relative error ~1e-6 per op, amplified
over 12 Adam steps. A real change is far larger: a 1% larger learning rate moved 13 of the 14 pinned
losses, by up to 8.4e-3 (the second test keeps that true).
If the change is intended, regenerate: `python tests/golden_run.py`.
"""

from __future__ import annotations

import json

from golden_run import GOLDEN, measure, mismatches

ATOL = 2e-4


def test_losses_equal_the_golden_curve(tmp_path):
    want = json.loads(GOLDEN.read_text())
    got = measure(tmp_path)
    assert got["eval_steps"] == want["eval_steps"]
    bad = mismatches(got, want, ATOL)
    assert not bad, "losses changed (regenerate with `python tests/golden_run.py` if intended):\n" + "\n".join(bad)


def test_the_tolerance_catches_a_one_percent_learning_rate_change(tmp_path):
    want = json.loads(GOLDEN.read_text())
    got = measure(tmp_path, ["optim.lr=3.03e-3"])
    assert len(mismatches(got, want, ATOL)) >= 3
