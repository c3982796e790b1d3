"""polycom.train: config tree, trainer loop, optimizer/schedule, checkpoints, distributed.

    from polycom.train import run, load_config
    result = run("tiny", ["model.activation=polynorm", "train.steps=50"])  # a RunResult
"""

from ..extras import require

require("lab", "polycom.train")  # one line naming the extra, before a bare ModuleNotFoundError

from .config import Config, ConfigError, DataSection, ModelSection, OptimSection, TrainSection, load_config
from .loop import Trainer, run
from .result import Eval, RunResult
from .summary import dry_run

__all__ = ["Config", "ConfigError", "DataSection", "ModelSection", "OptimSection", "TrainSection",
           "load_config", "Trainer", "run", "dry_run", "Eval", "RunResult"]
