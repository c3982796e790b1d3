"""The Trainer on a real 2-D mesh: 4 gloo ranks with ``train.tensor_parallel=2`` (data 2 x tensor 2)
against one process on the same global batch, end to end.

What only a data dimension > 1 exercises: FSDP2 on ``mesh["dp"]`` of a tensor-sharded model, the
batch split by data rank (the two ranks of a tensor group read the same rows), gradients reduced
over data ranks only, the gradient norm and clipping over both mesh dimensions, the logged loss
averaged over the 4 ranks, evaluation split by data rank, and the sharded checkpoint written by
the 4 ranks resumed in one process. One torchrun job runs every multi-rank scenario (``_JOB``)
in one process group, so the test pays for one launch.

Tolerance: relative 2e-6 on every train and validation loss and gradient norm. The runs add the
same fp32 products in another order (row-parallel matmuls sum two partial products, PolyNorm's
statistics are summed over the tensor group, gradients over the data group), so they differ by
rounding, which AdamW carries into the weights of the next steps. Measured over these steps (loss
about 5, gradient norm 2 to 6): at most 4.8e-7 absolute in the losses (one fp32 ulp at 5, 1e-7
relative), 4.1e-7 relative in the gradient norms (MoE) and 2.6e-8 in the validation losses.
Bugs land far above, measured by planting each in the 4 ranks: the batch split as if the tensor
dimension were the outer one (data rank = rank % data size, so a tensor group reads two batches)
gives 3.7e-4 in the first loss and 2.2e-2 in its gradient norm; PolyNorm without its statistics
all-reduce (shard-local) 5e-4 and 6e-2; the gradient norm of each rank's local shards only
(clipping not across both mesh dimensions) 0.36 in the gradient norm, 1.3e-4 in the third loss.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from polycom.train import run

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")

REL = 2e-6  # see the module docstring

_JOB = r'''
import json, sys
from pathlib import Path
import torch.distributed as dist
from polycom.train import run

root, args = Path(sys.argv[1]), json.loads(sys.argv[2])
dist.init_process_group("gloo")
for name, extra in json.loads(sys.argv[3]).items():
    run("tiny", [*args, f"train.out_dir={root / name}", "train.tensor_parallel=2", *extra])
if dist.get_rank() == 0:
    (root / "done.txt").write_text("ok")
'''

# Every scenario at 4 ranks: its own overrides; its single-process reference runs the same ones
# (micro-batches of 2 rows: gradient accumulation 4 in one process, 2 on each data rank).
DENSE = ["train.steps=6", "train.stop_at_step=4"]  # resumed to step 6 by one process below
MOE = ["model.preset=debug-moe", "train.steps=4"]
SCENARIOS = {"dense": DENSE, "moe": MOE}


def _args(tmp_path):
    # Eager PolyNorm: Inductor would spend seconds compiling it in each of the 4 processes.
    return ["train.device=cpu", "model.preset=debug", "model.activation=polynorm",
            "model.activation_kwargs={implementation: eager}", "data.tokenizer=byte", "data.max_documents=300",
            f"data.cache_dir={tmp_path / 'cache'}", "data.seq_len=32", "train.batch_size=8",
            "train.micro_batch_size=2", "train.eval_every=2", "train.eval_batches=1", "train.checkpoint_every=4",
            "train.progress=false"]


def _curves(folder) -> dict[str, dict[int, float]]:
    """{"loss", "grad_norm", "val_loss"}: {step: value} from the run's metrics.jsonl."""
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    curves = {key: {r["step"]: r[key] for r in records if r["kind"] == "train"} for key in ("loss", "grad_norm")}
    curves["val_loss"] = {r["step"]: r["val_loss"] for r in records if r["kind"] == "val"}
    return curves


def _train_alone(tmp_path, name, *extra):
    return run("tiny", [*_args(tmp_path), f"train.out_dir={tmp_path / name}", *extra])


def _launch(tmp_path, scenarios: dict[str, list[str]]) -> None:
    script = tmp_path / "job.py"
    script.write_text(_JOB)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4",
           str(script), str(tmp_path), json.dumps(_args(tmp_path)), json.dumps(scenarios)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0 and (tmp_path / "done.txt").exists(), proc.stdout[-2000:] + proc.stderr[-5000:]
    assert "tensor parallel 2 x data 2" in proc.stdout, proc.stdout[-2000:]


def _assert_same_curves(got: dict, ref: dict, steps) -> None:
    for key, values in got.items():
        wanted = {s: v for s, v in ref[key].items() if s in steps}
        assert sorted(values) == sorted(wanted), key
        assert values == pytest.approx(wanted, rel=REL, abs=0), key


def test_data_2_by_tensor_2_matches_one_process(tmp_path):
    # One test, not one per scenario: pytest-xdist would launch the 4 ranks again on each worker.
    _launch(tmp_path, SCENARIOS)
    one, moe = _train_alone(tmp_path, "one", "train.steps=6"), _train_alone(tmp_path, "one_moe", *MOE)
    assert one.status == moe.status == "completed"

    _assert_same_curves(_curves(tmp_path / "dense"), _curves(tmp_path / "one"), steps=range(1, 5))
    _assert_same_curves(_curves(tmp_path / "moe"), _curves(tmp_path / "one_moe"), steps=range(1, 5))

    # The 4 ranks' sharded checkpoint (step 4) resumed by one process: steps 5-6 continue the curve.
    step4 = tmp_path / "dense" / "checkpoints" / "step_00000004"
    assert sorted(f.name for f in (step4 / "model").glob("*.distcp")) == [f"__{r}_0.distcp" for r in range(4)]
    resumed = _train_alone(tmp_path, "dense", *DENSE[:1], "train.resume=true")
    assert resumed.final_step == 6
    _assert_same_curves(_curves(tmp_path / "dense"), _curves(tmp_path / "one"), steps=range(1, 7))
