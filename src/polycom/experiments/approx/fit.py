"""One fit: an MLP trained to a target with full-batch L-BFGS and a fixed budget.

Full batch and a fixed iteration budget make a fit a deterministic function of its
seed (float64 on CPU): the seed sets the initial weights and the training inputs; the
held-out test inputs are the same for every seed and activation. The error reported
is the test RMSE, sqrt(mean((f(x) - y)^2)) over ``n_test`` fresh points.

L-BFGS (strong Wolfe line search, memory 50) rather than Adam: its line search sets
the step, so no learning rate has to be tuned per activation and width, which would
otherwise be a hidden per-activation advantage. The rate is only visible where
optimisation error is small; docs/approx.md says where it is not.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch

from .mlp import ApproxMLP, count_parameters
from .targets import get_target, sample_inputs, target_function

__all__ = ["FitSettings", "FitResult", "fit_one", "TEST_SEED"]

TEST_SEED = 1_000_003  # the held-out inputs: one set shared by every fit


@dataclass(frozen=True)
class FitSettings:
    depth: int = 2
    steps: int = 300  # L-BFGS iterations
    n_train: int = 2000
    n_test: int = 2000


@dataclass(frozen=True)
class FitResult:
    target: str
    dim: int
    activation: str
    width: int
    seed: int
    params: int
    test_rmse: float  # nan when training diverged
    train_rmse: float
    target_std: float  # std of y on the test points: the RMSE of predicting the mean
    ok: bool
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def _data(target_name: str, d: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    target = get_target(target_name)
    x = sample_inputs(target, d, n, torch.Generator().manual_seed(seed))
    return x, target_function(target, d)(x)


def _rmse(model, x, y) -> float:
    with torch.no_grad():
        return math.sqrt(float((model(x) - y).square().mean()))


def fit_one(target: str, d: int, activation: str, width: int, seed: int, settings: FitSettings) -> FitResult:
    start = time.perf_counter()
    x_tr, y_tr = _data(target, d, settings.n_train, seed)
    x_te, y_te = _data(target, d, settings.n_test, TEST_SEED)
    torch.manual_seed(seed)
    model = ApproxMLP(d, width, settings.depth, activation)
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=settings.steps, history_size=50,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-15)

    def closure():
        opt.zero_grad()
        loss = (model(x_tr) - y_tr).square().mean()
        loss.backward()
        return loss

    opt.step(closure)
    train, test = _rmse(model, x_tr, y_tr), _rmse(model, x_te, y_te)
    ok = math.isfinite(train) and math.isfinite(test)
    return FitResult(target, d, activation, width, seed, count_parameters(model), test if ok else math.nan,
                     train if ok else math.nan, float(y_te.std()), ok, time.perf_counter() - start)
