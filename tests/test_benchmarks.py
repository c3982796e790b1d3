"""The benchmark scripts keep running (tiny sizes; their timings are not asserted)."""

import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

import bench_activations  # noqa: E402


def test_bench_activations_writes_complete_tables(tmp_path):
    out = tmp_path / "bench.md"
    bench_activations.main(["--ops", "polynorm,gated_polynorm", "--features", "48", "--elements", "960",
                            "--rounds", "1", "--output", str(out)])
    text = out.read_text()
    assert "**polynorm**, 20 x 48, float32" in text and "**gated_polynorm**, 20 x 48" in text
    for name in ("compiled", "eager", "reference", "official (checkpoint)", "GELU (native)", "SwiGLU (native)", "copy"):
        assert f"| {name} |" in text, name
    # The memory column is exact, not timed: the fast path saves the input (3840 bytes),
    # 3 fp32 per row (240) and the coefficients (16): 4096 / 3840 = 1.067 -> "1.07".
    rows = dict(re.findall(r"^\| (compiled|reference) \|.*\| ([0-9.]+) \|$", text.split("**gated")[0], re.M))
    assert rows["compiled"] == "1.07" and float(rows["reference"]) > 3


def test_tuner_candidates_cover_their_rows():
    import tune_row_kernels

    for n in (1024, 5000, 16384, 65536):
        for elem_bytes in (2, 4):
            configs = tune_row_kernels.candidates(n, elem_bytes)
            assert configs, n
            for cfg in configs:
                assert cfg.single == (cfg.block >= n)  # a single block holds the whole row
                assert cfg.block * elem_bytes <= 65536 or cfg.single  # chunks stay within the chunk budget
                assert 32 * cfg.warps <= cfg.block  # every thread owns at least one element


def test_cuda_benchmarks_say_why_they_cannot_run_without_cuda():
    import pytest
    import torch

    import bench_kernel_bandwidth
    import tune_row_kernels

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    for script in (bench_kernel_bandwidth, tune_row_kernels):
        with pytest.raises(SystemExit, match="no CUDA device"):
            script.main([])
