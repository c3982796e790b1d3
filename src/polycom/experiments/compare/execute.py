"""Running a sweep's runs: in this process, in N worker processes, or as submitit jobs.

Every run is ``execute_run(plan)``: a top-level function of a plain dict, so a process
pool or a Slurm job can call it. It decides from the run folder what is left to do:

- ``summary.json`` of a completed or diverged run next to this run's ``plan.json``: skipped;
- an unreadable ``summary.json`` (torn by a crash or a full disk): named on stderr, removed,
  and the run treated as unfinished;
- a checkpoint present: a partial run: resumed (``train.resume=true``), bit-exact;
- otherwise: started afresh (a folder with no checkpoint holds nothing to keep).

A run that raises is recorded in ``failure.json`` and the sweep goes on; rerunning the
sweep retries every run that did not finish, whatever stopped it (an error, Ctrl-C or
SIGTERM, a killed worker); a ``failure.json`` beside a finished run is stale and removed.
The trainer's output goes to the run's ``train.log``.

Parallelism is the job of existing engines: ``concurrent.futures`` (local, with the
CPU threads or the GPUs split between workers) and submitit (Slurm, or its local
executor).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import sys
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

from ...train.checkpoint import latest_checkpoint
from ...train.files import write_json_atomic
from .plan import identity_conflicts

__all__ = ["execute_run", "run_state", "read_summary", "execute_all", "worker_resources", "FINISHED"]

FINISHED = ("completed", "diverged")  # a diverged run would diverge again: rerunning it is no use


def run_state(out_dir: Path, run_hash: str, config: dict | None = None) -> str:
    """'done', 'partial' or 'new' for the run folder ``out_dir`` of the planned run with this
    hash and (when given) this resolved config."""
    meta = out_dir / "plan.json"
    stored = json.loads(meta.read_text()) if meta.exists() else {}
    if meta.exists() and stored.get("run_hash") != run_hash:
        # The folder name carries the hash, so this is a hand-made or damaged folder.
        raise ValueError(f"{out_dir}: plan.json belongs to another run; remove the folder")
    conflicts = identity_conflicts(stored.get("config") or {}, config) if config and stored else []
    if conflicts:
        # One hash, two configs: the hash leaves out keys at their defaults, and a default changed
        # since this run was trained. Reusing it would pair runs of different settings.
        old, new = stored["config"], config
        detail = ", ".join(f"{k}={_value(old, k)!r} then, {_value(new, k)!r} now" for k in conflicts)
        raise ValueError(f"{out_dir}: trained with other settings than planned ({detail}; a default changed since "
                         "it ran); remove the folder to retrain it, or use a new --out")
    summary = out_dir / "summary.json"
    if meta.exists() and summary.exists() and read_summary(summary).get("status") in FINISHED:
        return "done"
    if latest_checkpoint(out_dir) is not None:
        return "partial"
    return "new"


def _value(config: dict, key: str):
    section, name = key.split(".", 1)
    return config[section][name]


def read_summary(path: Path) -> dict:
    """A run's ``summary.json`` as a dict; ``{}`` (and one line on stderr naming the file) when it
    cannot be read or parsed: such a run counts as unfinished."""
    try:
        summary = json.loads(path.read_text())
        if not isinstance(summary, dict):
            raise ValueError(f"a JSON {type(summary).__name__}, not an object")
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        print(f"{path}: unreadable ({exc}); the run is treated as unfinished", file=sys.stderr)
        return {}
    return summary


def execute_run(plan: dict, threads: int = 0) -> str:
    """Train one planned run to its end (or resume it); returns its state afterwards:
    'skipped' (was done), 'done' or 'failed'. Called by every task of a job of several
    (submitit, Slurm): they form the run's process group, task 0 prepares the folder."""
    from ...train import distributed as D

    if D.launcher_world_size() > 1:
        return _execute_as_task(plan, threads)
    state = _prepare(plan)
    return state if state == "skipped" else _train(plan, state, threads)


def _prepare(plan: dict) -> str:
    """Decide from the run folder what is left ('skipped', 'partial' or 'new') and make the folder ready."""
    out = Path(plan["config"]["train"]["out_dir"])
    state = run_state(out, plan["run_hash"], plan["config"])
    (out / "failure.json").unlink(missing_ok=True)  # beside a finished run it is stale (an interrupted writer's)
    if state == "done":
        return "skipped"
    if state == "new" and out.exists():
        shutil.rmtree(out)
    summary = out / "summary.json"
    if state == "partial" and summary.exists() and not read_summary(summary):
        summary.unlink()  # the trainer's resume would stop on it; the resumed run writes a new one
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "plan.json", plan)
    return state


def _train(plan: dict, state: str, threads: int) -> str:
    from ...train import Config, run

    out = Path(plan["config"]["train"]["out_dir"])
    tree = json.loads(json.dumps(plan["config"]))
    tree["train"]["resume"] = state == "partial"
    tree["train"]["threads"] = threads
    with open(out / "train.log", "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            run(Config.from_dict(tree))
        except Exception as exc:  # noqa: BLE001 - one run's failure must not stop the sweep
            traceback.print_exc()
            write_json_atomic(out / "failure.json", {"error": f"{type(exc).__name__}: {exc}"[:2000]})
            return "failed"
    return "done"


def _execute_as_task(plan: dict, threads: int) -> str:
    """One task of a run's job: join the process group, let task 0 prepare the folder, train together."""
    from ...train import distributed as D

    info, _ = D.init_distributed(plan["config"]["train"]["device"])
    try:
        prepared = D.broadcast_object(D.main_first(lambda main: _prepare(plan) if main else None, info))
        return prepared if prepared == "skipped" else _train(plan, prepared, threads)  # task 0's decision, for all
    finally:
        D.shutdown()


def worker_resources(jobs: int, device: str) -> list[dict]:
    """What each of ``jobs`` parallel workers gets: a GPU each on a CUDA machine (round-robin
    when jobs exceed GPUs), else an equal share of the CPU cores as torch threads."""
    import torch

    if device != "cpu" and torch.cuda.is_available():
        n = torch.cuda.device_count()
        return [{"CUDA_VISIBLE_DEVICES": str(i % n), "threads": 0} for i in range(jobs)]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return [{"threads": max(1, cores // jobs) if jobs > 1 else 0} for _ in range(jobs)]


_WORKER: dict = {}


def _init_worker(queue) -> None:
    resources = queue.get()
    if "CUDA_VISIBLE_DEVICES" in resources:
        os.environ["CUDA_VISIBLE_DEVICES"] = resources["CUDA_VISIBLE_DEVICES"]
    _WORKER.update(resources)


def _execute_in_worker(plan: dict) -> str:
    return execute_run(plan, _WORKER.get("threads", 0))


def execute_all(plans: list[dict], jobs: int, launcher: str, device: str, folder: Path,
                slurm: dict | None = None, on_done: Callable[[dict, str], None] = lambda p, s: None,
                shape: tuple[int, int] = (1, 1)) -> dict[str, str]:
    """Run every plan; returns run_id -> 'skipped' | 'done' | 'failed'. ``shape``: (nodes, tasks per
    node) of each run's job under submitit."""
    states: dict[str, str] = {}

    def finished(plan, state):
        states[plan["run_id"]] = state
        on_done(plan, state)

    if launcher == "local" and jobs == 1:
        for plan in plans:
            finished(plan, execute_run(plan))
    elif launcher == "local":
        ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no inherited torch state
        queue = ctx.Queue()
        for resources in worker_resources(jobs, device):
            queue.put(resources)
        with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker, initargs=(queue,)) as pool:
            futures = {pool.submit(_execute_in_worker, plan): plan for plan in plans}
            for future, plan in futures.items():
                finished(plan, _result_or_failed(future.result))
    else:
        gpus = {"gpus_per_node": shape[1]} if launcher == "submitit" and device != "cpu" else {}  # one per task
        _execute_submitit(plans, jobs, launcher, folder, {**gpus, **(slurm or {})}, finished, shape)
    return states


def _result_or_failed(get: Callable[[], str]) -> str:
    try:
        return get()
    except Exception:  # noqa: BLE001 - a worker that died (OOM-killed, segfault): report the run as failed
        return "failed"


def _execute_submitit(plans, jobs, launcher, folder, slurm, finished, shape=(1, 1)) -> None:
    """One submitit job per run, of ``shape`` = (nodes, tasks per node) tasks that form the run's
    process group; ``submitit-local`` runs them as local subprocesses, ``jobs`` runs at a time."""
    try:
        import submitit
    except ImportError:
        raise RuntimeError("--launcher submitit needs submitit: pip install 'polycom[cluster]'") from None
    cluster = "local" if launcher == "submitit-local" else None
    nodes, tasks = shape
    executor = submitit.AutoExecutor(folder=str(folder / "submitit"), cluster=cluster)
    params = {"timeout_min": 24 * 60, "nodes": nodes, "tasks_per_node": tasks, **slurm}
    if cluster == "local":
        params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
    executor.update_parameters(**params)
    threads = max(1, worker_resources(jobs, "cpu")[0]["threads"] // tasks) if cluster == "local" else 0
    batch = jobs if cluster == "local" else len(plans)  # Slurm queues them all; locally, jobs at a time
    for start in range(0, len(plans), batch):
        chunk = plans[start:start + batch]
        submitted = [(executor.submit(execute_run, plan, threads), plan) for plan in chunk]
        for job, plan in submitted:
            finished(plan, _result_or_failed(lambda: job.results()[0]))  # task 0's (every task returns the same)
