"""Multi-process runs from every launcher: a task of a submitit or Slurm job joins its run's
process group (train/distributed.py ``adopt_launcher_env``), and a compare run is one job of
nodes x tasks_per_node tasks (experiments/compare/execute.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from polycom.errors import UsageError
from polycom.experiments.compare.spec import SweepSpec
from polycom.train import distributed as D
from polycom.train.config import ConfigError, load_config

_TORCHRUN = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
_SLURM = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_NODELIST",
          "SUBMITIT_EXECUTOR")


@pytest.fixture
def clean_env(monkeypatch):
    saved = dict(os.environ)  # adopt_launcher_env writes os.environ itself: restored whole afterwards
    for key in _TORCHRUN + _SLURM:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")  # no scontrol: the node list is read by hand
    yield monkeypatch
    os.environ.clear()
    os.environ.update(saved)


def test_slurm_tasks_get_torchruns_variables(clean_env):
    clean_env.setenv("SLURM_PROCID", "3")
    clean_env.setenv("SLURM_NTASKS", "4")
    clean_env.setenv("SLURM_LOCALID", "1")
    clean_env.setenv("SLURM_JOB_ID", "1234")
    clean_env.setenv("SLURM_JOB_NODELIST", "gpu-a,gpu-b")
    D.adopt_launcher_env()
    assert [os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")] == ["3", "4", "1", "gpu-a"]
    port = int(os.environ["MASTER_PORT"])
    assert 20000 <= port < 60000  # derived from the job id: every task of the job computes the same
    assert D.launcher_world_size() == 4


def test_torchruns_own_variables_win_and_one_task_stays_alone(clean_env):
    clean_env.setenv("WORLD_SIZE", "2")
    clean_env.setenv("SLURM_NTASKS", "8")
    clean_env.setenv("SLURM_PROCID", "5")
    D.adopt_launcher_env()
    assert os.environ["WORLD_SIZE"] == "2" and "RANK" not in os.environ
    clean_env.delenv("WORLD_SIZE")
    clean_env.setenv("SLURM_NTASKS", "1")  # an sbatch of one task: a single process, no group
    assert D.launcher_world_size() == 1


def test_a_compressed_node_list_without_scontrol_names_the_variable(clean_env):
    for key, value in (("SLURM_PROCID", "0"), ("SLURM_NTASKS", "2"), ("SLURM_JOB_NODELIST", "gpu-[1-2]")):
        clean_env.setenv(key, value)
    with pytest.raises(UsageError, match="MASTER_ADDR"):
        D.adopt_launcher_env()


@pytest.mark.parametrize("settings, key", [
    ({"tasks_per_node": 2}, "tasks_per_node"),  # several processes under the local launcher
    ({"nodes": 2, "launcher": "submitit-local"}, "nodes"),
])
def test_a_job_shape_the_launcher_cannot_run_is_refused(settings, key):
    spec = SweepSpec(activations=["relu", "polynorm"], **settings)
    spec.validate()  # planning (--dry-run) is fine anywhere
    with pytest.raises(ConfigError) as e:
        spec.validate_launch()
    assert str(e.value).startswith(key)
    with pytest.raises(ConfigError, match="^nodes"):
        SweepSpec(activations=["relu", "polynorm"], nodes=0).validate()


def _overrides(tmp_path, name):
    return ["train.device=cpu", "model.preset=debug", "model.activation=polynorm", "data.tokenizer=byte",
            "data.max_documents=300", f"data.cache_dir={tmp_path / 'cache'}", "data.seq_len=32",
            "train.batch_size=8", "train.micro_batch_size=4", "train.steps=3", "train.eval_every=3",
            "train.eval_batches=1", "train.checkpoint_every=3", "train.progress=false", "train.parallel=ddp",
            "train.threads=1", f"train.out_dir={tmp_path / name}"]


def _losses(folder):
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["kind"] == "train"]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_a_submitit_job_of_two_tasks_trains_as_torchrun_with_two_ranks(tmp_path):
    pytest.importorskip("submitit")
    from polycom.experiments.compare.execute import execute_all

    cfg = load_config("tiny", _overrides(tmp_path, "job"))
    plan = {"run_id": "polynorm-s0", "run_hash": "h0", "config": cfg.to_dict()}
    states = execute_all([plan], jobs=1, launcher="submitit-local", device="cpu", folder=tmp_path, shape=(1, 2))
    log = tmp_path / "job" / "train.log"  # submitit's own files go to tmp_path / "submitit"
    log = log.read_text() if log.exists() else ""
    assert states == {"polynorm-s0": "done"}, log[-3000:]
    assert "world 2 (ddp)" in log
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "polycom.cli", "train", *_overrides(tmp_path, "torchrun")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The same ranks, data shards, threads and reduction order: equal to the last bit.
    assert _losses(tmp_path / "job") == _losses(tmp_path / "torchrun")
    assert len(_losses(tmp_path / "torchrun")) == 3
