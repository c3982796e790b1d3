"""What a comparison sweep is: ``SweepSpec``, its presets and its validation.

A sweep preset (``src/polycom/configs/compare/NAME.yaml``) names the ``polycom train``
config every run starts from, the overrides that size the runs, and the sweep's own
settings (activations, seeds, LR grid, scaling sizes). Command-line flags override
the preset; ``KEY=VALUE`` overrides apply to every run exactly as in ``polycom train``.
Every error names the flag or key at fault, and all of them are raised before any
data is read or any model trained.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ...registry import list_activations
from ...train.config import ConfigError

__all__ = ["SweepSpec", "BASELINE_CANDIDATES", "DEFAULT_ACTIVATIONS", "load_sweep_preset", "list_sweep_presets",
           "PER_RUN_KEYS"]

DEFAULT_ACTIVATIONS = ("relu", "gelu", "swiglu", "relu2", "polyrelu", "polynorm")
BASELINE_CANDIDATES = ("relu", "gelu", "swiglu", "relu2")  # "auto" picks the best of these present
LAUNCHERS = ("local", "submitit", "submitit-local")
# Keys the sweep sets for each run: an override of one would silently undo the design.
PER_RUN_KEYS = ("model.activation", "train.seed", "train.out_dir", "train.resume", "train.stop_at_step")


def _presets_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "configs" / "compare"


def list_sweep_presets() -> list[str]:
    return sorted(p.stem for p in _presets_dir().glob("*.yaml"))


@dataclass
class SweepSpec:
    """Everything that defines a sweep. ``overrides`` are ``polycom train`` KEY=VALUE strings."""

    train_config: str = "tiny"  # a `polycom train` preset name or YAML path
    overrides: list[str] = field(default_factory=list)
    activations: list[str] = field(default_factory=lambda: list(DEFAULT_ACTIVATIONS))
    seeds: int = 3
    baseline: str = "auto"
    eval_points: int = 10  # validations per run (the token-efficiency curve); 0 = keep train.eval_every
    lr_sweep: bool = False  # tune each activation's LR (lr_policy.py); the presets for CPU turn it on
    lr_grid: list[float] = field(default_factory=lambda: [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2])  # geometric
    # Share of train.steps each LR-phase run trains. 1 (default): the main runs' own schedule, and the
    # tuning seed's run at the chosen LR is its main run; below 1 is a shortened proxy (docs/compare.md).
    lr_sweep_fraction: float = 1.0
    lr_grid_extensions: int = 2  # grid steps added past an edge holding the best LR, per side, at most
    # Nats: the smallest LR within this of the lowest loss is chosen (lr_policy.choose_lr). 0.02 is about
    # half the seed-to-seed std of the tiny preset's final loss (0.035-0.045 at 5 seeds, 2026-12-03).
    lr_tie_tolerance: float = 0.02
    lr_tune_seed: int = 0  # the seed of the LR phase; one of the main seeds reuses its runs
    lr_tune_sizes: str = "each"  # scaling: tune at "each" size, or at the two "ends" and interpolate
    scaling: bool = False
    scaling_sizes: list[dict] = field(default_factory=list)  # model overrides per size, smallest first
    tokens_per_param: float = 0.0  # scaling: training tokens per non-embedding parameter (0: see scaling_steps)
    throughput_rounds: int = 10  # interleaved train steps per activation in the speed measurement
    eval_tasks: list[str] = field(default_factory=list)  # lm-eval tasks run on every main run (--eval-tasks)
    eval_limit: int = 0  # documents per task for --eval-tasks (0 = all)
    jobs: int = 1
    launcher: str = "local"
    slurm: dict = field(default_factory=dict)  # submitit executor parameters (partition, gpus_per_node, ...)
    # The shape of each run's job: machines, and processes per machine (one per GPU; train.parallel
    # picks DDP or FSDP2 across them). Several processes need a submitit launcher.
    nodes: int = 1
    tasks_per_node: int = 1

    @property
    def world_size(self) -> int:
        """Processes per run."""
        return self.nodes * self.tasks_per_node

    def validate(self) -> None:
        known = list_activations()
        if not self.activations:
            raise ConfigError("--activations: the list is empty; give at least two registry names")
        unknown = [a for a in self.activations if a not in known]
        if unknown:
            raise ConfigError(f"--activations: unknown activation(s) {', '.join(unknown)}; valid: {', '.join(known)}")
        if len(set(self.activations)) != len(self.activations):
            raise ConfigError(f"--activations: duplicates in {self.activations}")
        if len(self.activations) < 2:
            raise ConfigError("--activations: a comparison needs at least two activations")
        if not _whole(self.seeds) or self.seeds < 1:
            raise ConfigError(f"--seeds: must be an integer >= 1, got {self.seeds!r}")
        if self.baseline != "auto" and self.baseline not in self.activations:
            raise ConfigError(f"--baseline: {self.baseline!r} is not among --activations ({', '.join(self.activations)})")
        if self.baseline == "auto" and not any(a in BASELINE_CANDIDATES for a in self.activations):
            raise ConfigError(f"--baseline: 'auto' picks among {', '.join(BASELINE_CANDIDATES)}, none of which is in "
                              "--activations; name one with --baseline")
        if not all(isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr) for lr in self.lr_grid):
            raise ConfigError(f"--lr-grid: every learning rate must be a positive number, got {self.lr_grid}")
        if self.lr_sweep and len(self.lr_grid) < 2:
            raise ConfigError(f"--lr-grid: an LR sweep needs at least two values, got {self.lr_grid}")
        if not 0 < self.lr_sweep_fraction <= 1:
            raise ConfigError(f"lr_sweep_fraction: must be in (0, 1], got {self.lr_sweep_fraction}")
        if self.lr_sweep and len(set(self.lr_grid)) < len(self.lr_grid):
            raise ConfigError(f"--lr-grid: duplicates in {self.lr_grid}")
        if not _whole(self.lr_grid_extensions) or self.lr_grid_extensions < 0:
            raise ConfigError(f"lr_grid_extensions: must be an integer >= 0, got {self.lr_grid_extensions!r}")
        if not isinstance(self.lr_tie_tolerance, (int, float)) or not 0 <= self.lr_tie_tolerance < math.inf:
            raise ConfigError(f"lr_tie_tolerance: must be a number >= 0 (nats), got {self.lr_tie_tolerance!r}")
        if not _whole(self.lr_tune_seed) or self.lr_tune_seed < 0:
            raise ConfigError(f"lr_tune_seed: must be an integer >= 0, got {self.lr_tune_seed!r}")
        if self.lr_tune_sizes not in ("each", "ends"):
            raise ConfigError(f"lr_tune_sizes: must be 'each' or 'ends', got {self.lr_tune_sizes!r}")
        if not isinstance(self.tokens_per_param, (int, float)) or not 0 <= self.tokens_per_param < math.inf:
            raise ConfigError(f"tokens_per_param: must be a number >= 0, got {self.tokens_per_param!r}")
        if self.scaling and len(self.scaling_sizes) < 3:
            raise ConfigError(f"scaling_sizes: the scaling mode needs at least 3 model sizes, got "
                              f"{len(self.scaling_sizes)} (set them in the sweep preset)")
        if self.jobs < 1:
            raise ConfigError(f"--jobs: must be >= 1, got {self.jobs}")
        if self.launcher not in LAUNCHERS:
            raise ConfigError(f"--launcher: must be one of {', '.join(LAUNCHERS)}, got {self.launcher!r}")
        for key in ("nodes", "tasks_per_node"):
            if not _whole(getattr(self, key)) or getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be an integer >= 1, got {getattr(self, key)!r}")
        if self.eval_points < 0:
            raise ConfigError(f"eval_points: must be >= 0, got {self.eval_points}")
        if self.throughput_rounds < 0:
            raise ConfigError(f"--throughput-rounds: must be >= 0, got {self.throughput_rounds}")
        if not all(isinstance(t, str) and t.strip() for t in self.eval_tasks):
            raise ConfigError(f"--eval-tasks: expected comma-separated task names, got {self.eval_tasks!r}")
        if len(set(self.eval_tasks)) != len(self.eval_tasks):
            raise ConfigError(f"--eval-tasks: duplicates in {self.eval_tasks}")
        if not _whole(self.eval_limit) or self.eval_limit < 0:
            raise ConfigError(f"--eval-limit: must be an integer >= 0, got {self.eval_limit!r}")
        for item in self.overrides:
            key = item.split("=", 1)[0].strip()
            if key in PER_RUN_KEYS:
                raise ConfigError(f"{key}: set by the sweep for each run and cannot be overridden "
                                  "(use --activations, --seeds, --out)")
            if key == "optim.lr" and self.lr_sweep:
                raise ConfigError("optim.lr: the LR sweep chooses each activation's LR; drop the override, or add "
                                  "--no-lr-sweep for one shared LR")

    def validate_launch(self) -> None:
        """What running (not planning: ``--dry-run`` plans a cluster preset anywhere) needs of the launcher."""
        if self.world_size > 1 and self.launcher == "local":
            raise ConfigError(f"tasks_per_node: a run of {self.world_size} processes (nodes={self.nodes} x "
                              f"tasks_per_node={self.tasks_per_node}) is a job of several tasks; use --launcher "
                              "submitit (Slurm) or submitit-local")
        if self.nodes > 1 and self.launcher != "submitit":
            raise ConfigError(f"nodes: {self.nodes} machines per run need --launcher submitit (Slurm), "
                              f"got --launcher {self.launcher}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def load_sweep_preset(name_or_path: str) -> dict:
    """The mapping in a sweep preset (a name from ``list_sweep_presets`` or a YAML path)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = _presets_dir() / f"{name_or_path}.yaml"
        if not path.exists():
            raise ConfigError(f"--preset: no sweep preset {name_or_path!r} (presets: {', '.join(list_sweep_presets())})")
    if not path.exists():
        raise ConfigError(f"--preset: no such file {str(path)!r}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"--preset: {path} must hold a mapping")
    fields = {f.name for f in dataclasses.fields(SweepSpec)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(f"{path}: unknown sweep key {unknown[0]!r} (valid: {', '.join(sorted(fields))})")
    if "lr_grid" in data:  # YAML 1.1 reads 3e-3 as a string
        data["lr_grid"] = [float(v) for v in data["lr_grid"]]
    return data
