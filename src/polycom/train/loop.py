"""The trainer: ``run(config) -> RunResult``.

    from polycom.train import run
    result = run("tiny", ["model.activation=polynorm", "train.steps=100"])
    result.val_loss, result.val_bpb, result.evals[-1].tokens

One optimizer step = ``grad_accum`` micro-batches per rank (``batch_size =
micro_batch_size * grad_accum * world_size`` sequences); the loss is the mean
cross-entropy over the whole global batch, so a run gives the same losses
under any split of that batch into ranks and micro-steps. The loop body is
device- and rank-agnostic; ``distributed.py`` owns processes and wrapping,
``run_folder.py`` what may be written where (lock, rerun and resume rules).

Ctrl-C checkpoints the last completed step and raises ``Interrupted`` (a
KeyboardInterrupt) saying how to resume; a full disk while checkpointing raises
``DiskFullError`` naming the file and the last good checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import torch

from ..data import BatchSampler, prepare_data
from ..data.corpus import describe_source
from ..errors import UsageError
from . import distributed as D
from . import preflight
from .async_checkpoint import AsyncCheckpointer
from .checkpoint import (checkpoint_step, latest_checkpoint, load_checkpoint, rng_state, save_checkpoint,
                         set_rng_state)
from .config import Config, check_paths, load_config
from .eval_sets import prepare_eval_sets
from .files import write_json_atomic
from .guard import diagnose, format_report
from .logging import MetricsLogger, ProgressBar
from .monitor import ActivationMonitor
from .optim import build_optimizer, build_scheduler, clip_grads_to_norm_, describe_groups, total_grad_norm
from .result import Eval, RunResult, peak_memory_bytes
from .run_folder import RunFolderError, open_run_folder
from .sharded_checkpoint import load_sharded, save_sharded

__all__ = ["run", "Trainer", "Interrupted"]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training, raised after the last completed step was checkpointed;
    the message is the one line that says how to continue."""


def run(config: Config | dict | str | Path | None = None, overrides: list[str] = (), *,
        setup_hook: Callable[[torch.nn.Module], None] | None = None) -> RunResult:
    """Train with ``config`` (a Config, dict, preset name or YAML path) and dotted
    ``overrides``; returns a RunResult. ``setup_hook(model)`` is called on the
    built model before wrapping (instrumentation, tests)."""
    cfg = load_config(config, list(overrides))
    D.adopt_launcher_env()  # a task of a submitit or Slurm job: torchrun's variables from the job's
    check_paths(cfg)
    preflight.check(cfg)  # device, launch, folders, tokenizer path: one-line errors before anything is built
    owns_group = not torch.distributed.is_initialized()
    info, device = D.init_distributed(cfg.train.device, cfg.train.parallel)
    try:
        with _claim_run_folder(cfg, info) as resume_changes:
            return Trainer(cfg, info, device, setup_hook, resume_changes).fit()
    finally:
        if owns_group:
            D.shutdown()


@contextlib.contextmanager
def _claim_run_folder(cfg: Config, info: D.DistInfo):
    """Rank 0 locks and checks ``train.out_dir`` (run_folder.py) and holds the lock to the
    end; a refusal (a ValueError) is raised on every rank, not left waiting at a barrier."""
    with contextlib.ExitStack() as stack:
        yield D.main_first(lambda main: stack.enter_context(open_run_folder(cfg)) if main else {}, info)


class Trainer:
    def __init__(self, cfg: Config, info: D.DistInfo, device: torch.device, setup_hook=None,
                 resume_changes: dict | None = None):
        self.cfg, self.info, self.device = cfg, info, device
        self.resume_changes = resume_changes or {}  # key -> (saved, new): what this resume changed
        self.out_dir = Path(cfg.train.out_dir)
        self.say = print if info.is_main else (lambda *a, **k: None)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        if cfg.train.tensor_parallel > 1:  # one line naming the key for a launch or model it cannot split
            from .tensor_parallel import check_tensor_parallel

            check_tensor_parallel(cfg.model_config(256), cfg.train.tensor_parallel, info.world_size)
            self.info = info = dataclasses.replace(info, tensor_parallel=cfg.train.tensor_parallel)
        # The ranks of a tensor-parallel group read the same data: the batch splits over data ranks.
        self.accum = cfg.grad_accum(info.data_size)
        if self.accum < 1 or cfg.train.batch_size != cfg.train.micro_batch_size * self.accum * info.data_size:
            raise ValueError(f"train.batch_size={cfg.train.batch_size} must be a multiple of "
                             f"train.micro_batch_size * data-parallel size = {cfg.train.micro_batch_size * info.data_size}")
        self._setup_data()
        self._setup_model(setup_hook)
        self.tokens_per_step = cfg.train.batch_size * cfg.data.seq_len
        self.async_checkpointer = AsyncCheckpointer() if cfg.train.checkpoint_async else None

    # --- setup ---------------------------------------------------------------

    def _setup_data(self) -> None:
        cfg = self.cfg
        prepare = lambda log: prepare_data(cfg.data.corpus_spec(), cfg.data.tokenizer, cfg.data.vocab_size,
                                           cfg.data.cache_dir, log=log)
        # Rank 0 tokenizes, the others then find everything cached; a data error is raised on every rank.
        self.data = D.main_first(lambda main: prepare(self.say if main else lambda *a: None), self.info)
        self.train_sampler = BatchSampler(self.data.stream("train"), cfg.data.seq_len, seed=cfg.train.seed)
        windows = self.train_sampler.n_windows
        if cfg.train.batch_size > windows:
            # Memory is no limit here (micro-batches take turns), but each step would repeat every
            # sequence, one micro-batch after another, and take batch_size / windows epochs.
            raise UsageError(f"train.batch_size={cfg.train.batch_size}: one step would read more sequences than the "
                             f"{windows:,} of {cfg.data.seq_len} tokens in the training split of "
                             f"data.source={cfg.data.source!r}; lower train.batch_size or use more data")
        self.val_sampler = BatchSampler.validation(self.data.stream("val"), cfg.data.seq_len)
        self.set_samplers = D.main_first(  # eval.sets: name -> sampler, tokenised with the run's tokenizer
            lambda main: prepare_eval_sets(cfg, self.data.tokenizer, self.say if main else lambda *a: None), self.info)
        self.token_bytes = torch.from_numpy(self.data.tokenizer.token_byte_lengths()).to(self.device)

    def _setup_model(self, setup_hook) -> None:
        from ..models import build_model

        cfg, dev = self.cfg, self.device
        self.model_config = cfg.model_config(self.data.tokenizer.vocab_size)

        def build():
            torch.manual_seed(cfg.train.seed)  # same init on every rank, and on meta or not
            return build_model(self.model_config)

        tensor_parallel = self.info.tensor_parallel > 1
        mode = "fsdp" if tensor_parallel else D.resolve_mode(cfg.train.parallel, self.info)
        checkpointing = lambda m: D.apply_activation_checkpointing(m, cfg.train.activation_checkpointing)
        if tensor_parallel:  # a (data, tensor) mesh: tensor parallelism inside, FSDP2 across
            model = self.model = D.build_tensor_parallel(build, self.info, dev, checkpointing, cfg.train.precision)
        elif mode == "fsdp":
            # Only rank 0 ever holds the full model (on CPU); the others allocate their shards.
            model = self.model = D.build_sharded(build, self.info, dev, checkpointing, cfg.train.precision)
        else:
            model = build().to(dev)
            checkpointing(model)
        self.num_params = model.num_params()
        self.flops_per_token = float(model.flops_per_token(cfg.data.seq_len))
        if setup_hook is not None:
            setup_hook(model)
        self.raw_model = model
        if mode != "fsdp":
            self.model = D.parallelize(model, cfg.train.parallel, self.info, dev)
        # DDP all-reduces gradients in every backward; no_sync() defers that to the last micro-step.
        self.is_ddp = isinstance(self.model, torch.nn.parallel.DistributedDataParallel)
        if cfg.train.compile:
            model.compile()
        self.optimizer = build_optimizer(self.model, cfg.optim, dev.type)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, cfg.train.steps)
        # bf16-fsdp: FSDP2 casts the parameters (distributed.py); autocast stays off.
        bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and dev.type == "cuda"
                                                 and torch.cuda.is_bf16_supported())
        self.autocast = lambda: torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16)
        self.precision = "bf16" if bf16 else "bf16-fsdp" if cfg.train.precision == "bf16-fsdp" else "fp32"
        self.say(f"model: {self.model_config.activation}, {self.num_params:,} parameters, "
                 f"{self.flops_per_token / 1e6:.1f} MFLOPs/token; device {dev}, {self.precision}, "
                 f"world {self.info.world_size} ({cfg.train.parallel}), grad accum {self.accum}"
                 + (f", tensor parallel {self.info.tensor_parallel} x data {self.info.data_size}" if tensor_parallel else "")
                 + (f", activation checkpointing every {cfg.train.activation_checkpointing} block(s)"
                    if cfg.train.activation_checkpointing else ""))
        self.say(f"optimizer groups: {describe_groups(self.optimizer.param_groups)}; "
                 f"decay_activation_coefficients={cfg.optim.decay_activation_coefficients}")

    # --- one step --------------------------------------------------------------

    def _micro_batch(self, step: int, micro: int) -> torch.Tensor:
        mb = self.cfg.train.micro_batch_size
        batch = self.train_sampler.micro_batch(step, micro, self.info.data_rank, self.info.data_size, mb, self.accum)
        return batch.pin_memory() if self.device.type == "cuda" else batch  # async host-to-device copy

    def _forward(self, batch: torch.Tensor, model: torch.nn.Module | None = None):
        batch = batch.to(self.device, non_blocking=True)
        with self.autocast():
            model = self.model if model is None else model
            return model(batch[:, :-1], targets=batch[:, 1:])  # inputs, next-token targets: (B, T)

    def train_step(self, step: int, next_batch) -> dict:
        """Forward/backward over all micro-batches, then clip and (if finite) step."""
        self.model.train()
        ce_sum = torch.zeros((), device=self.device)
        aux_sum = torch.zeros((), device=self.device)  # MoE load-balancing + z-loss (0 for dense)
        for micro in range(self.accum):
            batch = next_batch(step, micro)
            last = micro == self.accum - 1
            sync = contextlib.nullcontext() if last or not self.is_ddp else self.model.no_sync()
            with sync:
                out = self._forward(batch)
                (out.loss / self.accum).backward()
            ce_sum += out.ce_loss.detach().float()
            aux_sum += out.aux_loss.detach().float()
        grad_norm = total_grad_norm([p.grad for p in self.model.parameters() if p.grad is not None])
        if self.cfg.optim.grad_clip > 0:  # 0: no clipping at all (an infinite limit would still multiply)
            # A non-finite norm is passed as 0, which scales by exactly 1: the guard sees the
            # unclipped gradients (clipping by inf makes them all 0 or NaN), and no host sync.
            finite_norm = torch.where(torch.isfinite(grad_norm), grad_norm, torch.zeros_like(grad_norm))
            clip_grads_to_norm_(self.model.parameters(), self.cfg.optim.grad_clip, finite_norm)
        grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
        loss = D.all_reduce(ce_sum / self.accum) / self.info.world_size
        stats = torch.stack([loss, grad_norm.float(), aux_sum / self.accum])
        guard = self.cfg.train.nan_guard
        if self.optimizer.defaults.get("fused"):
            # Fused AdamW skips its whole update when found_inf is 1 (GradScaler's mechanism), so
            # the step is queued before the host reads the loss: no device sync in mid-step.
            self.optimizer.found_inf = (~torch.isfinite(stats).all()).float() if guard else None
            self.optimizer.step()
        loss_value, norm_value, aux_value = stats.tolist()  # the one host sync of the step
        record = {"loss": loss_value, "grad_norm": norm_value, "lr": self.scheduler.get_last_lr()[0]}
        if self.model_config.moe is not None:
            record["aux_loss"] = aux_value  # rank 0's share; the loss above is the global mean
        if guard and not (math.isfinite(loss_value) and math.isfinite(norm_value)):
            # The unwrapped model: the diagnostic backward must not start DDP's gradient all-reduce.
            record["report"] = diagnose(self.raw_model, self.optimizer.param_groups, step + 1, loss_value,
                                        norm_value, lambda: self._forward(batch, self.raw_model))
            self.optimizer.zero_grad(set_to_none=True)
            return record
        if not self.optimizer.defaults.get("fused"):
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return record

    # --- validation ------------------------------------------------------------

    def evaluate(self) -> dict:
        """Mean loss (nats/token) and bits per byte over the validation sample (the same windows every
        run), and, when ``eval.sets`` names extra sets, ``sets: {name: {loss, bpb, tokens}}`` on each."""
        main = self._score(self.val_sampler, "the validation split")
        out = {f"val_{key}": value for key, value in main.items()}
        if self.set_samplers:
            out["sets"] = {name: self._score(sampler, f"eval.sets.{name}") for name, sampler in self.set_samplers.items()}
        return out

    @torch.no_grad()
    def _score(self, sampler: BatchSampler, what: str) -> dict:
        """``{loss, bpb, tokens}`` (nats/token, bits per byte, target tokens) over the first
        ``train.eval_batches`` global batches of ``sampler``'s windows, summed over ranks."""
        self.model.eval()
        mb, world, rank = self.cfg.train.micro_batch_size, self.info.data_size, self.info.data_rank
        # A fixed set of windows whatever the world size: eval_batches global batches.
        per_rank = min(sampler.n_windows, self.cfg.train.eval_batches * self.cfg.train.batch_size) // world
        if per_rank == 0:
            raise ValueError(f"{what} has fewer windows than ranks; lower data.seq_len")
        sums = torch.zeros(3, device=self.device, dtype=torch.float64)  # nll, tokens, bytes
        mine = list(range(rank * per_rank, (rank + 1) * per_rank))
        for i in range(0, per_rank, mb):  # the same number of forwards on every rank (FSDP needs it)
            batch = sampler.batch(mine[i:i + mb])
            out = self._forward(batch)
            targets = batch[:, 1:].to(self.device)
            sums += torch.stack([out.ce_loss.double() * targets.numel(), torch.tensor(targets.numel()).to(sums),
                                 self.token_bytes[targets].sum().double()])
        D.reshard(self.model)
        # Summed over all ranks: each data rank's windows once per rank of its tensor group.
        nll, tokens, n_bytes = (D.all_reduce(sums) / self.info.tensor_parallel).tolist()
        if n_bytes == 0:  # a corpus of NUL bytes or special tokens only: bits per byte are 0 / 0
            raise ValueError(f"{what} holds no text bytes (a corpus of NUL bytes or only special tokens?), so "
                             "bits per byte are undefined; check the corpus (data.source)")
        return {"loss": nll / tokens, "bpb": nll / (math.log(2) * n_bytes), "tokens": int(tokens)}

    # --- checkpoints -----------------------------------------------------------

    def save(self, step: int) -> Path | None:
        """Checkpoint ``step``: one process writes full files; several write DCP shards, each rank its own;
        with ``train.checkpoint_async`` DCP shards in the background (returns None: not yet published)."""
        state = {"scheduler": self.scheduler.state_dict(), "rng": rng_state(),
                 "data": {"samples_seen": step * self.cfg.train.batch_size, "seed": self.cfg.train.seed},
                 "corpus_hash": self.data.corpus_hash}
        keep = self.cfg.train.keep_checkpoints
        if self.async_checkpointer is not None:
            self.async_checkpointer.save(self.out_dir, step, self.model, self.optimizer, state, self.cfg.to_yaml(), keep)
            return None
        if self.info.enabled:
            return save_sharded(self.out_dir, step, self.model, self.optimizer, state, self.cfg.to_yaml(), keep)
        return save_checkpoint(self.out_dir, step, D.model_state_dict(self.model),
                               D.optimizer_state_dict(self.model, self.optimizer), state, self.cfg.to_yaml(), keep)

    def resume(self) -> int:
        folder = latest_checkpoint(self.out_dir)
        if folder is None:
            self.say(f"train.resume: no checkpoint in {self.out_dir}/checkpoints, starting from step 0")
            return 0
        ckpt = load_checkpoint(folder)
        saved_hash = ckpt["state"].get("corpus_hash")
        if saved_hash and saved_hash != self.data.corpus_hash:
            raise RunFolderError(f"train.resume: the training data differ from the run in {self.out_dir} "
                                 f"(corpus hash {saved_hash[:12]}... now {self.data.corpus_hash[:12]}...); "
                                 "resume with the same data.* settings and files, or start a new train.out_dir")
        if ckpt["sharded"]:  # DCP reshards onto this run's world size and wrapping
            load_sharded(ckpt["folder"], self.model, self.optimizer, ckpt["state"]["param_groups"])
        else:
            D.load_model_state_dict(self.model, ckpt["model"])
            D.load_optimizer_state_dict(self.model, self.optimizer, ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["state"]["scheduler"])
        set_rng_state(ckpt["state"]["rng"])
        self.say(f"resumed from {ckpt['folder']} (step {ckpt['state']['step']})")  # an intact earlier one after a fallback
        return int(ckpt["state"]["step"])

    # --- the loop --------------------------------------------------------------

    def fit(self) -> RunResult:
        cfg, t = self.cfg, self.cfg.train
        finished = self._finished_run() if t.resume else None
        if finished is not None:
            return finished
        start = self.resume() if t.resume else 0
        if self.info.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.yaml").write_text(cfg.to_yaml())
        logger = MetricsLogger(self.out_dir, self.info.is_main, t.tensorboard,
                               resume_step=start if t.resume else None, say=self.say)
        try:
            if start == 0:
                logger.log({"kind": "run", "step": 0, **self._run_info()})
            else:  # the history of the folder: where each resume began and what it changed
                logger.log({"kind": "resume", "step": start,
                            "changed": {k: list(v) for k, v in self.resume_changes.items()}})
            result, step_times, elapsed = self._loop(start, logger)
            history = []
            if start == t.steps:  # finished, but its summary.json is missing (died just after the last save)
                result["evals"].append({"kind": "val", "step": start, "tokens": start * self.tokens_per_step,
                                        **self.evaluate()})
                history = _logged_records(self.out_dir / "metrics.jsonl", "train")
                step_times = [r["step_time_s"] for r in history]
            result.update(self._summary(start, result, step_times, self._data_wait_s, elapsed))
            if history:  # the summary's numbers come from the logged steps; this call ran none
                result.update(train_loss=history[-1]["loss"], step_times_s=[])
            logger.log({"kind": "summary", "step": result["final_step"],
                        **{k: v for k, v in result.items()
                           if k not in ("train_losses", "evals", "nan_report", "step_times_s")}})
        finally:
            logger.close()
        run_result = _to_result(result)
        if self.info.is_main:
            write_json_atomic(self.out_dir / "summary.json", run_result.to_dict())  # a full disk leaves no torn file
        return run_result

    def _loop(self, start: int, logger: MetricsLogger) -> tuple[dict, list[float], float]:
        """Steps ``start`` to the end (or ``train.stop_at_step``), with their logs, evaluations
        and checkpoints; (result dict, step times, elapsed seconds)."""
        t = self.cfg.train
        end = min(t.steps, t.stop_at_step) if t.stop_at_step else t.steps
        result = {"status": "completed" if end == t.steps else "stopped", "train_losses": [], "evals": []}
        bar = ProgressBar(t.steps, start, t.progress and self.info.is_main, quiet=not self.info.is_main)
        prefetch = _Prefetcher(self._micro_batch, self.accum)
        step_times, t_start = [], time.perf_counter()
        completed, saved = start, start  # the weights are those after `completed` steps; `saved` is on disk
        monitor = ActivationMonitor(self.raw_model, t.monitor_every, enabled=self.info.is_main)  # escaping activations
        try:
            if start < end and t.eval_every and start % t.eval_every == 0 and start > 0 and not any(
                    r["step"] == start for r in _logged_records(self.out_dir / "metrics.jsonl", "val")):
                self._evaluate_at(start, result, logger, bar)  # interrupted during that evaluation: redo it
            for step in range(start, end):
                t0 = time.perf_counter()
                monitor.begin(step + 1)  # monitor: hooks on monitored steps only
                record = self.train_step(step, prefetch.get)
                dt = time.perf_counter() - t0
                monitor.end(logger, bar.write)  # monitor: log the step's statistics and warnings
                step_times.append(dt)
                if "report" in record:
                    result.update(self._diverged(record["report"], logger, bar))
                    break
                done = completed = step + 1
                record.update(step=done, kind="train", tokens=done * self.tokens_per_step,
                              tokens_per_s=self.tokens_per_step / dt, step_time_s=dt)
                result["train_losses"].append(record["loss"])
                if done % t.log_every == 0 or done == end:
                    logger.log(record)
                bar.update(record["loss"], record["tokens_per_s"])
                if (t.eval_every and done % t.eval_every == 0) or done == t.steps:
                    self._evaluate_at(done, result, logger, bar)
                if (t.checkpoint_every and done % t.checkpoint_every == 0) or done == end:
                    self.save(done)
                    saved = done
        except KeyboardInterrupt:
            bar.close()
            raise self._interrupted(completed, saved) from None
        finally:
            prefetch.close()
            bar.close()
            if self.async_checkpointer is not None:  # the last save is published (or its error raised) here
                self.async_checkpointer.close()
        monitor.finish(self.out_dir)  # monitor: monitor.png
        self._data_wait_s = prefetch.wait_s
        return result, step_times, time.perf_counter() - t_start

    def _evaluate_at(self, done: int, result: dict, logger: MetricsLogger, bar: ProgressBar) -> None:
        ev = {"kind": "val", "step": done, "tokens": done * self.tokens_per_step, **self.evaluate()}
        result["evals"].append(ev)
        logger.log(ev)
        bar.write(f"step {done}: val loss {ev['val_loss']:.4f}, val bpb {ev['val_bpb']:.4f}"
                  + "".join(f"; {n} {v['loss']:.4f}" for n, v in ev.get("sets", {}).items()))

    def _interrupted(self, completed: int, saved: int) -> Interrupted:
        """Ctrl-C: checkpoint the last completed step (unless it is on disk already)."""
        self._wait_for_save()
        if completed == 0:
            return Interrupted("interrupted before the first step completed; nothing was saved")
        if completed != saved or latest_checkpoint(self.out_dir) is None:
            self.save(completed)
        return Interrupted(f"interrupted at step {completed}, checkpoint saved in {self.out_dir}/checkpoints; "
                           f"continue with --resume (train.resume=true) and train.out_dir={self.out_dir}")

    def _wait_for_save(self) -> None:
        """Publish the checkpoint being written in the background, if any, before ``latest`` is read."""
        if self.async_checkpointer is not None:
            self.async_checkpointer.wait()

    def _finished_run(self) -> RunResult | None:
        """Resuming a run that already reached ``train.steps``: its summary.json, kept as it is
        (its losses and speed are those of the steps that ran), and no step runs."""
        last = latest_checkpoint(self.out_dir)
        summary = self.out_dir / "summary.json"
        if last is None or checkpoint_step(last) != self.cfg.train.steps or not summary.exists():
            return None
        try:
            stored = RunResult.from_dict(json.loads(summary.read_text()))
        except (ValueError, TypeError, KeyError) as e:  # torn by a crash before writes were atomic
            self.say(f"warning: {summary} is unreadable ({' '.join(str(e).split())[:100]}); the final evaluation "
                     "is redone from the last checkpoint and the file rewritten")
            return None
        if stored.status != "completed" or stored.final_step != self.cfg.train.steps:
            return None
        self.say(f"train.resume: the run in {self.out_dir} already finished at step {stored.final_step} "
                 f"(val loss {stored.val_loss:.4f}); its summary.json is kept")
        return dataclasses.replace(stored, train_losses=[], step_times_s=[])  # this call ran no step

    def _run_info(self) -> dict:
        return {"corpus": describe_source(self.cfg.data.source), "corpus_hash": self.data.corpus_hash,
                "tokenizer": self.data.tokenizer.name, "vocab_size": self.data.tokenizer.vocab_size,
                "num_params": self.num_params, "flops_per_token": self.flops_per_token,
                "world_size": self.info.world_size, "precision": self.precision, "device": str(self.device),
                "decay_activation_coefficients": self.cfg.optim.decay_activation_coefficients,
                "torch": torch.__version__}

    def _diverged(self, report: dict, logger: MetricsLogger, bar: ProgressBar) -> dict:
        self._wait_for_save()
        last = latest_checkpoint(self.out_dir)
        report["checkpoint"] = str(last) if last else None
        logger.log({"kind": "nan", **report})
        if self.info.is_main:
            (self.out_dir / "nan_report.json").write_text(json.dumps(report, indent=1, default=str))
        bar.write(format_report(report))
        return {"status": "diverged", "nan_report": report}

    def _summary(self, start: int, result: dict, step_times: list[float], data_wait_s: float,
                 elapsed: float) -> dict:
        steady = sorted(step_times[3:] or step_times)  # the first steps include compilation / warm-up
        step_time = steady[len(steady) // 2] if steady else 0.0  # median: robust to a busy machine
        final = start + len(result["train_losses"])
        last_eval = result["evals"][-1] if result["evals"] else {}
        return {"final_step": final, "train_loss": (result["train_losses"] or [None])[-1],
                "val_loss": last_eval.get("val_loss"), "val_bpb": last_eval.get("val_bpb"),
                "val_sets": last_eval.get("sets", {}),
                "elapsed_s": elapsed, "step_time_s": step_time, "step_times_s": step_times,
                "tokens_per_s": self.tokens_per_step / step_time if step_time else 0.0,
                "data_wait_s": data_wait_s, "tokens": final * self.tokens_per_step,
                "flops": final * self.tokens_per_step * self.flops_per_token,
                "peak_memory_bytes": peak_memory_bytes(self.device),
                "out_dir": str(self.out_dir), **self._run_info()}


def _logged_records(path: Path, kind: str) -> list[dict]:
    if not path.exists():
        return []
    records = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return [r for r in records if isinstance(r, dict) and r.get("kind") == kind]


def _to_result(d: dict) -> RunResult:
    """The loop's working dict -> RunResult: known fields typed, the run info kept in ``info``."""
    names = {f.name for f in dataclasses.fields(RunResult)} - {"info", "evals"}
    evals = [Eval(**{k: v for k, v in e.items() if k != "kind"}) for e in d["evals"]]
    info = {k: v for k, v in d.items() if k not in names and k != "evals"}
    return RunResult(evals=evals, info=info, **{k: v for k, v in d.items() if k in names})


class _Prefetcher:
    """Builds the next micro-batch on a worker thread while the model runs on this one."""

    def __init__(self, make: Callable[[int, int], torch.Tensor], accum: int):
        self.make, self.accum = make, accum
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.pending, self.wait_s = None, 0.0

    def _next(self, step: int, micro: int) -> tuple[int, int]:
        return (step, micro + 1) if micro + 1 < self.accum else (step + 1, 0)

    def get(self, step: int, micro: int) -> torch.Tensor:
        t0 = time.perf_counter()
        if self.pending is not None and self.pending[0] == (step, micro):
            batch = self.pending[1].result()
        else:
            batch = self.make(step, micro)
        self.wait_s += time.perf_counter() - t0
        key = self._next(step, micro)
        self.pending = (key, self.pool.submit(self.make, *key))
        return batch

    def close(self) -> None:
        self.pool.shutdown(wait=True)
