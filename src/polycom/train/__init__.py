"""polycom.train: config tree, trainer loop, optimizer/schedule, checkpoints, distributed.

    from polycom.train import run, load_config
    metrics = run("tiny", ["model.activation=polynorm", "train.steps=50"])
"""

from .config import Config, ConfigError, DataSection, ModelSection, OptimSection, TrainSection, load_config
from .loop import Trainer, run
from .summary import dry_run

__all__ = ["Config", "ConfigError", "DataSection", "ModelSection", "OptimSection", "TrainSection",
           "load_config", "Trainer", "run", "dry_run"]
