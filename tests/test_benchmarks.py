"""The benchmark scripts keep running (tiny sizes; their timings are not asserted)."""

import math
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

import bench_activations  # noqa: E402


def _tables(text: str) -> list[dict[str, dict[str, str]]]:
    """Every markdown table in ``text`` as row name -> column header -> cell."""
    tables = []
    for block in re.findall(r"(?:^\|.*\|\n?)+", text, re.M):
        lines = [[c.strip() for c in line.strip().strip("|").split("|")] for line in block.strip().splitlines()]
        header, body = lines[0], lines[2:]
        tables.append({row[0]: dict(zip(header, row)) for row in body})
    return tables


def test_bench_activations_writes_complete_tables(tmp_path):
    out = tmp_path / "bench.md"
    bench_activations.main(["--ops", "polynorm,gated_polynorm,hermite", "--features", "48", "--elements", "960",
                            "--rounds", "1", "--output", str(out)])
    text = out.read_text()
    assert "**polynorm**, 20 x 48, float32" in text and "**gated_polynorm**, 20 x 48" in text
    for name in ("compiled", "eager", "reference", "official (checkpoint)", "GELU (native)", "SwiGLU (native)", "copy"):
        assert f"| {name} |" in text, name
    # The memory column is exact, not timed: the fast path saves the input (3840 bytes),
    # 3 fp32 per row (240) and the coefficients (16): 4096 / 3840 = 1.067 -> "1.07".
    rows = dict(re.findall(r"^\| (compiled|reference) \|.*\| ([0-9.]+) \|$", text.split("**gated")[0], re.M))
    assert rows["compiled"] == "1.07" and float(rows["reference"]) > 3
    # torch.compile of the reference formula is timed too (a peer family's through its module),
    # and every row, the copy's included, has an achieved bandwidth per direction.
    tables = _tables(text)
    assert len(tables) == 3
    for table in tables:
        assert "torch.compile(reference)" in table and "copy" in table
        for name, row in table.items():
            for column in ("fwd GB/s", "fwd+bwd GB/s", "fwd ms", "fwd+bwd ms"):
                value = float(row[column])
                assert math.isfinite(value) and value > 0, (name, column, row[column])
        ref = table["torch.compile(reference)"]
        assert float(ref["saved for bwd (x input)"]) > 0 and ref["speed-up vs official"].endswith("x")
    speedups = re.findall(r"^Speed-up over `torch\.compile\(reference\)` \(.*\), forward / forward\+backward: (.*)$", text, re.M)
    assert len(speedups) == 3 and all("`compiled` " in line and "`eager` " in line for line in speedups)
    for line in speedups:
        ratios = [float(v) for v in re.findall(r"[0-9]+\.[0-9]+", line)]
        assert ratios and all(math.isfinite(v) and v > 0 for v in ratios), line
    compile_line = re.search(r"^torch\.compile\(reference\) first-call compile time \(s\): (.*)$", text, re.M)
    assert compile_line and "polynorm 20x48 fwd" in compile_line.group(1)
    assert "gated_polynorm 20x48 fwd" in compile_line.group(1) and "hermite 20x48 fwd" in compile_line.group(1)


def test_bandwidth_counts_the_least_traffic_of_each_op():
    """GB/s divides the bytes an op must move by its time: a plain op (and the copy) 2 tensors
    forward and 5 forward+backward (read x, write y; read g and x, write dx); the gated op 3 and 8
    (read gate and up, write y; read g, gate and up, write both gradients)."""
    for op in ("polynorm", "polyrelu", "hermite", "copy"):
        assert bench_activations.least_traffic(op, 100) == (200, 500), op
    assert bench_activations.least_traffic("gated_polynorm", 100) == (300, 800)


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
