"""From a ``SweepSpec`` to the list of runs: one resolved ``polycom train`` config each.

Phases:
- ``lr``: with ``lr_sweep``, every activation (at every tuned size) at every LR of its
  grid, with the tuning seed, on ``lr_sweep_fraction`` of the size's steps (default: all
  of them, the main runs' own schedule); ``lr_policy`` extends a grid whose best LR sits
  on its edge;
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

__all__ = ["RunPlan", "base_config", "plan_runs", "scaling_steps", "size_params", "sizes", "lr_tuned_sizes",
           "initial_lr_grids", "run_hash", "identity_conflicts", "sweep_key",
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
        """The run's folder name. No phase in it: an LR-phase run that is also a main run (same
        config, same hash) has one folder, trained once."""
        size = "" if self.size == "base" else f"-{self.size}"
        return f"{self.activation}{size}-lr{self.lr:g}-s{self.seed}-{self.run_hash[:10]}"

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
        for name in [n for n in values if n in defaults.get(section, {}) and _same(values[n], defaults[section][n])]:
            del values[name]
        if not values:
            del tree[section]
    return tree


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _same(a, b) -> bool:
    """Equal as the hash sees them: the same canonical JSON (sorted keys; a tuple reads as a list)."""
    return _canonical(a) == _canonical(b)


def _digest(tree: dict) -> str:
    return hashlib.sha256(_canonical(tree).encode()).hexdigest()


def run_hash(config: dict) -> str:
    return _digest(_identity(config))


def identity_conflicts(stored: dict, planned: dict) -> list[str]:
    """Keys, ``section.name``, that both configs set and set differently, outside ``IGNORED_KEYS``.
    Two configs with one hash differ like this only when a default changed between the run and
    now (the hash omits defaults); a key only one of them has (an option added later) is no conflict."""
    a, b = _without(stored, IGNORED_KEYS), _without(planned, IGNORED_KEYS)
    return [f"{section}.{name}" for section in a if isinstance(a[section], dict) and isinstance(b.get(section), dict)
            for name in a[section] if name in b[section] and not _same(a[section][name], b[section][name])]


def base_config(spec: SweepSpec) -> Config:
    """The ``polycom train`` config shared by every run: preset, then the sweep's overrides."""
    return load_config(spec.train_config, list(spec.overrides))


def sweep_key(spec: SweepSpec) -> dict:
    """What makes two sweeps the same sweep (their runs are interchangeable): the shared
    config and the LR policy. Activations and seeds may grow between invocations."""
    key = {"config": _identity(base_config(spec).to_dict(), SWEEP_IGNORED_KEYS), "lr_sweep": spec.lr_sweep,
           "lr_grid": spec.lr_grid if spec.lr_sweep else None,
           "lr_sweep_fraction": spec.lr_sweep_fraction if spec.lr_sweep else None,
           "scaling_sizes": spec.scaling_sizes if spec.scaling else None, "eval_points": spec.eval_points}
    if spec.lr_sweep:
        key.update(lr_grid_extensions=spec.lr_grid_extensions, lr_tune_seed=spec.lr_tune_seed,
                   lr_tie_tolerance=spec.lr_tie_tolerance,
                   lr_tune_sizes=spec.lr_tune_sizes if spec.scaling else None)
    if spec.scaling and spec.tokens_per_param:
        key["tokens_per_param"] = spec.tokens_per_param
    return key


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


def _size_tree(base: dict, size: dict) -> dict:
    tree = json.loads(json.dumps(base))
    for key, value in size.items():
        if key != "label":
            section, name = key.split(".", 1)
            tree[section][name] = value
    return tree


def size_params(spec: SweepSpec) -> dict[str, int]:
    """Non-embedding parameters of each scaling size (of the first activation; the models match
    parameters across activations), counted on the meta device."""
    from ...train.summary import dry_run

    base = base_config(spec).to_dict()
    params = {}
    for size in spec.scaling_sizes:
        tree = _size_tree(base, size)
        tree["model"]["activation"] = spec.activations[0]
        params[size["label"]] = dry_run(Config.from_dict(tree))["num_params_non_embedding"]
    return params


def scaling_steps(spec: SweepSpec) -> dict[str, int]:
    """Steps per scaling size: tokens grow in proportion to non-embedding parameters. With
    ``tokens_per_param`` set, each size trains that many tokens per non-embedding parameter;
    otherwise the largest size trains the config's ``train.steps`` and the others in proportion.
    A size may set ``train.steps`` itself."""
    base = base_config(spec).to_dict()
    params = size_params(spec)
    by_label = {s["label"]: s for s in spec.scaling_sizes}
    largest = max(params.values())

    def steps(label: str) -> int:
        size = by_label[label]
        if size.get("train.steps"):
            return size["train.steps"]
        if spec.tokens_per_param:  # a size may set its own batch (larger models, larger batches)
            tokens_per_step = (size.get("train.batch_size", base["train"]["batch_size"])
                               * size.get("data.seq_len", base["data"]["seq_len"]))
            return max(1, round(spec.tokens_per_param * params[label] / tokens_per_step))
        return max(1, round(base["train"]["steps"] * params[label] / largest))

    return {label: steps(label) for label in params}


def sizes(spec: SweepSpec) -> list[tuple[str, dict]]:
    """(label, config overrides) of every model size: the scaling sizes, or the one base size."""
    if not spec.scaling:
        return [("base", {})]
    return [(s["label"], {k: v for k, v in s.items() if k != "label"}) for s in spec.scaling_sizes]


def lr_tuned_sizes(spec: SweepSpec) -> list[str]:
    """The sizes whose LR the LR phase tunes: every size, or (``lr_tune_sizes: ends``) the
    smallest and the largest, the others interpolated (``lr_policy.interpolate_lrs``)."""
    labels = [label for label, _ in sizes(spec)]
    return labels if spec.lr_tune_sizes == "each" or len(labels) < 3 else [labels[0], labels[-1]]


def initial_lr_grids(spec: SweepSpec) -> dict[tuple[str, str], list[float]]:
    """(activation, size) -> the LRs its LR phase trains before any grid extension."""
    if not spec.lr_sweep:
        return {}
    return {(act, size): [float(lr) for lr in spec.lr_grid] for size in lr_tuned_sizes(spec) for act in spec.activations}


def plan_runs(spec: SweepSpec, out: Path, lr_grids: dict[tuple[str, str], list[float]] | None = None,
              lrs: dict[tuple[str, str], float] | None = None,
              size_steps: dict[str, int] | None = None) -> dict[str, list[RunPlan]]:
    """Every run of the sweep, by phase. ``lr_grids``: (activation, size) -> the LRs of its LR
    phase (default: the initial grid, with ``lr_sweep``); ``lrs``: (activation, size) -> its LR in
    the main phase (default: the config's shared LR); ``size_steps``: the steps of each scaling
    size. An LR-phase run on the full schedule with a main seed is the same run (same config and
    hash, one folder) as the main run of that seed at that LR: it is trained once."""
    base = base_config(spec).to_dict()
    steps, shared_lr = base["train"]["steps"], base["optim"]["lr"]
    overrides = dict(sizes(spec))
    lr_grids = initial_lr_grids(spec) if lr_grids is None else lr_grids

    def resolved(phase, act, seed, lr, n_steps, label):
        return _resolved(base, out, phase, act, seed, lr, n_steps, spec.eval_points, label, overrides[label])

    def size_steps_of(label):
        return (size_steps or {}).get(label, steps)

    plans: dict[str, list[RunPlan]] = {"lr": [], "main": []}
    for (act, label), grid in lr_grids.items():
        n_steps = max(1, round(size_steps_of(label) * spec.lr_sweep_fraction))
        plans["lr"] += [resolved("lr", act, spec.lr_tune_seed, float(lr), n_steps, label) for lr in sorted(grid)]
    for label in overrides:
        for act in spec.activations:
            lr = (lrs or {}).get((act, label), shared_lr)
            plans["main"] += [resolved("main", act, seed, lr, size_steps_of(label), label) for seed in range(spec.seeds)]
    return plans
