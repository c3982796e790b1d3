"""The Trainer on a real 2-D mesh: 4 gloo ranks with ``train.tensor_parallel=2`` (data 2 x tensor 2)
against one process on the same global batch, end to end.

What only a data dimension > 1 exercises: FSDP2 on ``mesh["dp"]`` of a tensor-sharded model, the
batch split by data rank (the two ranks of a tensor group read the same rows), gradients reduced
over data ranks only, the gradient norm and clipping over both mesh dimensions, the logged loss
averaged over the 4 ranks, evaluation split by data rank, and the sharded checkpoint written by
the 4 ranks resumed in one process; and the memory plan of ``--dry-run`` for the mesh against
what each rank held (parameters: 43,172 planned, 43,170 to 43,174 held; the traced activations
of one micro-batch 6% above the bytes autograd saved for the dense model, 52% above when the plan
traced the whole model instead of one rank's heads and columns; 4.6% above for the MoE, 2.1x
when its trace took the tiled grouped matmul instead of the CPU's ``torch._grouped_mm``). One
torchrun job runs every multi-rank scenario (``_JOB``) in one process group, so the test pays
for one launch.

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
from polycom.train.config import load_config
from polycom.train.memory_estimate import meta_model
from polycom.train.memory_plan import plan_memory

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")

REL = 2e-6  # see the module docstring

_JOB = r'''
import json, sys
from pathlib import Path
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from polycom.models import build_model
from polycom.train import run
from polycom.train.config import load_config
from polycom.train.tensor_parallel import apply_tensor_parallel

root, args = Path(sys.argv[1]), json.loads(sys.argv[2])
dist.init_process_group("gloo")
rank = dist.get_rank()
parameters = {}  # scenario: elements of this rank's shards (tensor, then FSDP2) of the Trainer's model
for name, extra in json.loads(sys.argv[3]).items():
    def count(model, name=name):
        parameters[name] = sum(p.to_local().numel() for p in model.parameters())
    run("tiny", [*args, f"train.out_dir={root / name}", "train.tensor_parallel=2", *extra], setup_hook=count)

# What autograd saves on this rank in one micro-batch's forward of each tensor-parallel model,
# each storage once, the weights left out (DTensors by their local tensor).
mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
activations = {}
for name, extra in json.loads(sys.argv[3]).items():
    cfg = load_config("tiny", [*args, *extra, "train.tensor_parallel=2"])
    torch.manual_seed(0)
    model = apply_tensor_parallel(build_model(cfg.model_config(256)), mesh["tp"])
    weights = {p.to_local().untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}
    def pack(t):
        storage = (t.to_local() if hasattr(t, "to_local") else t).untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return t
    tokens = torch.randint(0, 256, (cfg.train.micro_batch_size, cfg.data.seq_len + 1))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(tokens[:, :-1], targets=tokens[:, 1:]).loss.backward()
    activations[name] = sum(saved.values())
(root / f"memory_{rank}.json").write_text(json.dumps({"parameters": parameters, "activations": activations}))
dist.barrier()
if rank == 0:
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

    # The memory plan (--dry-run) of this mesh against what each of the 4 ranks held.
    for name, extra in SCENARIOS.items():
        cfg = load_config("tiny", [*_args(tmp_path), *extra, "train.tensor_parallel=2"])
        plan = plan_memory(cfg, meta_model(cfg, 256), world_size=4)
        assert (plan.shards, plan.tensor_parallel) == (2, 2)
        for rank in range(4):
            measured = json.loads((tmp_path / f"memory_{rank}.json").read_text())
            # FSDP2 splits each tensor's dim 0 into 2 chunks, equal here but for a few rows.
            assert plan.parameters == pytest.approx(4 * measured["parameters"][name], rel=0.01), (name, rank)
            # As in test_memory_estimate: the trace counts views of one base apart. The MoE's
            # trace takes the CPU's grouped-matmul path (models.grouped.planned_device); before,
            # it traced the tiled fallback and planned 2.1x the saved bytes.
            assert plan.activations == pytest.approx(measured["activations"][name], rel=0.10), (name, rank)


def test_dry_run_splits_the_batch_over_data_ranks_only(tmp_path):
    from polycom.errors import UsageError
    from polycom.train.summary import dry_run, format_dry_run

    cfg = load_config("tiny", [*_args(tmp_path), "train.tensor_parallel=2"])
    info = dry_run(cfg, world_size=4)
    assert info["grad_accum"] == 2  # batch 8 = micro 2 x accum 2 x data 2, as the Trainer splits it
    assert "(micro 2 x accum 2 x data 2; world 4 = data x tensor 2)" in format_dry_run(cfg, info)
    # The floor preflight refuses runs by stays under the plan: 0.81 MB and 1.8 MB (the floor
    # ignoring the mesh was 2.6 MB, above what a rank needs).
    assert info["memory"].total_bytes < plan_memory(cfg, info["model"], world_size=4).total
    with pytest.raises(UsageError, match=r"^train\.tensor_parallel=2 needs 2 processes"):
        dry_run(cfg, world_size=1)  # what training would say
