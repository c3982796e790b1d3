"""From a ``SweepSpec`` to the list of runs: one resolved ``polycom train`` config each.

Phases:
- ``lr``: with ``--lr-sweep``, every activation at every grid LR, seed 0, for
  ``lr_sweep_fraction`` of the steps (its own shorter cosine schedule);
- ``main``: every activation x seed (x size in scaling mode) at equal tokens and
  matched parameters, each at its chosen LR (swept) or the config's shared LR.

A run is identified by the SHA-256 of its resolved config without the keys that do
not change what is computed (folders, logging, threads) and without the keys that hold
their defaults: a rerun of the same command finds the same folders, a changed setting
never reuses an old run, and a config option added later (which holds its default in
every existing run) leaves every existing run's identity, and so its folder, as it was.
The price is that a changed default would make an old run look current; the run's own
``plan.json`` keeps its whole config, and ``identity_conflicts`` catches that case.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ...train.config import Config, ConfigError, load_config
from .spec import SweepSpec

__all__ = ["RunPlan", "base_config", "plan_runs", "scaling_steps", "run_hash", "identity_conflicts", "sweep_key",
           "same_sweep", "IGNORED_KEYS"]

# Config keys that do not change a run's numbers (where it writes, how it logs, how many
# threads it uses): excluded from the run's identity.
IGNORED_KEYS = ("train.out_dir", "train.resume", "train.progress", "train.stop_at_step", "train.threads",
                "train.tensorboard", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
                "data.cache_dir")
SWEEP_IGNORED_KEYS = IGNORED_KEYS + ("model.activation", "train.seed")  # set per run by the sweep


@dataclass(frozen=True)
class RunPlan:
    phase: str  # "lr" or "main"
    activation: str
    seed: int
    lr: float
    size: str  # "base", or the scaling size label
    config: dict  # resolved Config.to_dict(), out_dir filled in
    run_hash: str

    @property
    def run_id(self) -> str:
        lr = f"-lr{self.lr:g}" if self.phase == "lr" else ""
        size = "" if self.size == "base" else f"-{self.size}"
        return f"{self.phase}-{self.activation}{size}{lr}-s{self.seed}-{self.run_hash[:10]}"

    @property
    def out_dir(self) -> Path:
        return Path(self.config["train"]["out_dir"])

    def to_dict(self) -> dict:
        return {"phase": self.phase, "activation": self.activation, "seed": self.seed, "lr": self.lr,
                "size": self.size, "config": self.config, "run_hash": self.run_hash, "run_id": self.run_id}


def _without(tree: dict, keys) -> dict:
    tree = json.loads(json.dumps(tree))  # deep copy of a JSON-able tree
    for key in keys:
        section, name = key.split(".")
        tree.get(section, {}).pop(name, None)
    return tree


def _identity(config: dict, ignored=IGNORED_KEYS) -> dict:
    """The part of a resolved config that decides a run's numbers: every key that is not in
    ``ignored`` and does not hold its default. Keys are dropped one by one (the config is
    two levels deep: section, key), and a section left empty is dropped whole."""
    defaults = Config().to_dict()
    tree = _without(config, ignored)
    for section in list(tree):
        values = tree[section]
        if not isinstance(values, dict):
            continue
        for name in [n for n in values if n in defaults.get(section, {}) and
                     json.dumps(values[n], sort_keys=True, default=str)
                     == json.dumps(defaults[section][n], sort_keys=True, default=str)]:
            del values[name]
        if not values:
            del tree[section]
    return tree


def _digest(tree: dict) -> str:
    return hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()


def run_hash(config: dict) -> str:
    return _digest(_identity(config))


def identity_conflicts(stored: dict, planned: dict) -> list[str]:
    """Keys, ``section.name``, that both configs set and set differently, outside ``IGNORED_KEYS``.
    Two configs with one hash differ like this only when a default changed between the run and
    now (the hash omits defaults); a key only one of them has (an option added later) is no conflict."""
    a, b = _without(stored, IGNORED_KEYS), _without(planned, IGNORED_KEYS)
    return [f"{section}.{name}" for section in a if isinstance(a[section], dict) and isinstance(b.get(section), dict)
            for name in a[section] if name in b[section]
            and json.dumps(a[section][name], sort_keys=True, default=str)
            != json.dumps(b[section][name], sort_keys=True, default=str)]


def base_config(spec: SweepSpec) -> Config:
    """The ``polycom train`` config shared by every run: preset, then the sweep's overrides."""
    return load_config(spec.train_config, list(spec.overrides))


def sweep_key(spec: SweepSpec) -> dict:
    """What makes two sweeps the same sweep (their runs are interchangeable): the shared
    config and the LR policy. Activations and seeds may grow between invocations."""
    return {"config": _identity(base_config(spec).to_dict(), SWEEP_IGNORED_KEYS), "lr_sweep": spec.lr_sweep,
            "lr_grid": spec.lr_grid if spec.lr_sweep else None,
            "lr_sweep_fraction": spec.lr_sweep_fraction if spec.lr_sweep else None,
            "scaling_sizes": spec.scaling_sizes if spec.scaling else None, "eval_points": spec.eval_points}


def same_sweep(stored: dict, key: dict) -> bool:
    """Whether ``stored`` (a ``sweep.json`` key) and ``key`` describe one sweep. The stored config
    is reduced as ``sweep_key`` reduces a config today, so a folder written before a config option
    existed, or before keys at their defaults were left out, still matches."""
    stored = json.loads(json.dumps(stored, default=str))
    if isinstance(stored.get("config"), dict):
        stored["config"] = _identity(stored["config"], SWEEP_IGNORED_KEYS)
    return stored == json.loads(json.dumps(key, default=str))


def _resolved(base: dict, out: Path, phase: str, activation: str, seed: int, lr: float, steps: int,
              eval_points: int, size: str, size_overrides: dict) -> RunPlan:
    tree = json.loads(json.dumps(base))
    for key, value in size_overrides.items():
        section, name = key.split(".", 1)
        if section not in tree or name not in tree[section]:
            raise ConfigError(f"scaling_sizes: {size}: unknown config key {key!r}")
        tree[section][name] = value
    tree["model"]["activation"] = activation
    tree["train"].update(seed=seed, steps=steps, progress=False, resume=False, stop_at_step=0)
    tree["optim"]["lr"] = lr
    if eval_points:
        # Validate eval_points times, evenly: the loss-vs-tokens curve behind the token multiplier.
        tree["train"]["eval_every"] = max(1, steps // eval_points)
    # Checkpoint at every validation: a killed run loses one eval interval at most.
    tree["train"]["checkpoint_every"] = tree["train"]["eval_every"] or steps
    try:
        Config.from_dict(tree)  # validate now: a bad size or LR fails before any run starts
    except ConfigError as e:
        raise ConfigError(f"{phase} run {activation} (seed {seed}, lr {lr:g}, size {size}): {e}") from None
    plan = RunPlan(phase, activation, seed, lr, size, tree, run_hash(tree))
    tree["train"]["out_dir"] = str(out / "runs" / plan.run_id)
    return plan


def scaling_steps(spec: SweepSpec) -> dict[str, int]:
    """Steps per scaling size, so tokens grow in proportion to non-embedding parameters and
    the largest size trains the config's ``train.steps`` (a size may set ``train.steps`` itself)."""
    from ...train.summary import dry_run

    base = base_config(spec).to_dict()
    params = {}
    for size in spec.scaling_sizes:
        tree = json.loads(json.dumps(base))
        for key, value in size.items():
            if key != "label":
                section, name = key.split(".", 1)
                tree[section][name] = value
        tree["model"]["activation"] = spec.activations[0]
        params[size["label"]] = (dry_run(Config.from_dict(tree))["num_params_non_embedding"],
                                 size.get("train.steps"))
    largest = max(n for n, _ in params.values())
    return {label: explicit or max(1, round(base["train"]["steps"] * n / largest))
            for label, (n, explicit) in params.items()}


def plan_runs(spec: SweepSpec, out: Path, chosen_lrs: dict[str, float] | None = None,
              size_steps: dict[str, int] | None = None) -> dict[str, list[RunPlan]]:
    """Every run of the sweep, by phase. ``chosen_lrs`` (from the LR phase) sets each
    activation's LR in the main phase; ``size_steps`` the steps of each scaling size."""
    base = base_config(spec).to_dict()
    steps, shared_lr = base["train"]["steps"], base["optim"]["lr"]
    plans: dict[str, list[RunPlan]] = {"lr": [], "main": []}

    def add(phase, act, seed, lr, n_steps, label, size_overrides):
        plans[phase].append(_resolved(base, out, phase, act, seed, lr, n_steps, spec.eval_points, label,
                                      size_overrides))

    if spec.lr_sweep:
        lr_steps = max(1, round(steps * spec.lr_sweep_fraction))
        for act in spec.activations:
            for lr in spec.lr_grid:
                add("lr", act, 0, float(lr), lr_steps, "base", {})
    sizes = [(s["label"], s) for s in spec.scaling_sizes] if spec.scaling else [("base", {})]
    for label, size in sizes:
        size_overrides = {k: v for k, v in size.items() if k != "label"}
        n_steps = (size_steps or {}).get(label, steps)
        for act in spec.activations:
            lr = (chosen_lrs or {}).get(act, shared_lr)
            for seed in range(spec.seeds):
                add("main", act, seed, lr, n_steps, label, size_overrides)
    return plans
