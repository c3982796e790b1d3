"""What ``polycom approx`` runs: the settings of each part, their validation, and the loops.

Three parts: ``rates`` (fit every target x dimension x activation x width x seed and
fit slopes), ``theory`` (the exact constructions) and ``width`` (weight and NTK change
vs width). Settings are validated before anything runs; a ValueError names the flag.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace

import torch

from ...registry import list_activations
from .fit import FitSettings, fit_one
from .rates import fit_slopes, predicted_slope
from .targets import get_target, list_targets
from .width import LOCAL_ACTIVATIONS, PREDICTED_SLOPES, WidthSettings, measure_width, width_activation

__all__ = ["RateSpec", "WidthSpec", "quick", "validate_rates", "validate_width", "run_rates", "run_width",
           "run_theory", "slopes_from_fits", "MAX_DIM"]

MAX_DIM = 8


@dataclass(frozen=True)
class RateSpec:
    targets: tuple = ("sines", "bump", "cubic", "hermite", "norm3", "abs")
    activations: tuple = ("relu", "relu2", "gelu", "polyrelu", "polynorm")
    dims: tuple = (1, 4)
    widths: tuple = (4, 8, 16, 32)
    seeds: int = 3
    fit: FitSettings = field(default_factory=lambda: FitSettings(depth=1, steps=100, n_train=384, n_test=1024))


@dataclass(frozen=True)
class WidthSpec:
    activations: tuple = ("monomial2", "monomial3", "polyrelu", "relu")
    widths: tuple = (64, 256, 1024, 4096)
    seeds: int = 3
    settings: WidthSettings = field(default_factory=WidthSettings)


def quick(rates: RateSpec, width: WidthSpec) -> tuple[RateSpec, WidthSpec]:
    """The --quick sizes: the same code on a grid small enough for a smoke run (< 1 min)."""
    return (replace(rates, targets=("sines", "abs"), activations=("relu", "polyrelu"), dims=(1,),
                    widths=(4, 8, 16), seeds=2, fit=replace(rates.fit, steps=40, n_train=256, n_test=512)),
            replace(width, activations=("monomial2", "relu"), widths=(64, 256, 1024), seeds=2,
                    settings=replace(width.settings, steps=30)))


def _positive_ints(values, flag: str) -> None:
    if not values:
        raise ValueError(f"{flag}: needs at least one value")
    bad = [v for v in values if not isinstance(v, int) or v < 1]
    if bad:
        raise ValueError(f"{flag}: values must be positive integers, got {bad}")


def validate_rates(spec: RateSpec) -> None:
    if not spec.targets:
        raise ValueError(f"--targets: needs at least one target; valid targets: {', '.join(list_targets())}")
    for t in spec.targets:
        try:
            get_target(t)
        except ValueError as e:
            raise ValueError(f"--targets: {e}") from None
    if not spec.activations:
        raise ValueError(f"--activations: needs at least one; valid: {', '.join(list_activations())}")
    for a in spec.activations:
        if a not in list_activations():
            raise ValueError(f"--activations: unknown activation {a!r}; valid: {', '.join(list_activations())}")
    _positive_ints(spec.dims, "--dims")
    out = [d for d in spec.dims if d > MAX_DIM]
    if out:
        raise ValueError(f"--dims: dimensions must be in 1..{MAX_DIM}, got {out}")
    _positive_ints(spec.widths, "--widths")
    _positive_ints([spec.seeds], "--seeds")
    _positive_ints([spec.fit.steps], "--steps")
    _positive_ints([spec.fit.depth], "--depth")


def validate_width(spec: WidthSpec) -> None:
    valid = ", ".join([*LOCAL_ACTIVATIONS, *list_activations(gated=False)])
    if not spec.activations:
        raise ValueError(f"--ntk-activations: needs at least one; valid: {valid}")
    for a in spec.activations:
        if a not in LOCAL_ACTIVATIONS and a not in list_activations():
            raise ValueError(f"--ntk-activations: unknown activation {a!r}; valid: {valid}")
        width_activation(a)  # a gated one raises, naming the flag
    _positive_ints(spec.widths, "--ntk-widths")
    _positive_ints([spec.seeds], "--seeds")
    _positive_ints([spec.settings.steps], "--steps")


@contextlib.contextmanager
def _one_thread():
    """These networks are tiny: a second intra-op thread only adds synchronisation, and on a shared
    CPU it made a fit ~30x slower (measured: 1.8 s vs 0.06 s CPU for one L-BFGS fit)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_rates(spec: RateSpec, progress=print) -> dict:
    with _one_thread():
        return _run_rates(spec, progress)


def run_width(spec: WidthSpec, progress=print) -> dict:
    with _one_thread():
        return _run_width(spec, progress)


def run_theory():
    from .theory import run_theory_checks

    with _one_thread():
        return run_theory_checks()


def _run_rates(spec: RateSpec, progress) -> dict:
    """Every fit of the sweep, then one slope fit per (target, d, activation)."""
    start = time.perf_counter()
    fits = []
    for target in spec.targets:
        for d in spec.dims:
            for act in spec.activations:
                for width in spec.widths:
                    for seed in range(spec.seeds):
                        fits.append(fit_one(target, d, act, width, seed, spec.fit))
                progress(f"  rates: {target} d={d} {act}: done ({len(fits)} fits, "
                         f"{time.perf_counter() - start:.0f} s)")
    raw = [f.to_dict() for f in fits]
    return {"fits": raw, "slopes": slopes_from_fits(raw, spec), "seconds": time.perf_counter() - start}


def slopes_from_fits(fits: list[dict], spec: RateSpec) -> list[dict]:
    """One slope fit per (target, d, activation) from the raw fits (also used to re-check a report)."""
    rows = []
    for target in spec.targets:
        n = get_target(target).smoothness
        for d in spec.dims:
            for act in spec.activations:
                group = [f for f in fits if (f["target"], f["dim"], f["activation"]) == (target, d, act)]
                per_seed = {}
                for f in sorted(group, key=lambda f: f["width"]):
                    per_seed.setdefault(f["seed"], ([], []))
                    per_seed[f["seed"]][0].append(f["params"])
                    per_seed[f["seed"]][1].append(f["test_rmse"])
                slope = fit_slopes(per_seed, predicted_slope(act, n, d))
                rows.append({"target": target, "dim": d, "activation": act, "smoothness": n,
                             "failed_fits": sum(not f["ok"] for f in group), **slope.to_dict()})
    return rows


def _run_width(spec: WidthSpec, progress) -> dict:
    start = time.perf_counter()
    points = []
    for act in spec.activations:
        for width in spec.widths:
            for seed in range(spec.seeds):
                points.append(measure_width(act, width, seed, spec.settings))
        progress(f"  width: {act} done ({time.perf_counter() - start:.0f} s)")
    slopes = []
    for act in spec.activations:
        for quantity, predicted in PREDICTED_SLOPES.items():
            per_seed = {}
            for p in sorted((p for p in points if p.activation == act), key=lambda p: p.width):
                per_seed.setdefault(p.seed, ([], []))
                per_seed[p.seed][0].append(p.width)
                per_seed[p.seed][1].append(getattr(p, quantity))
            slopes.append({"activation": act, "quantity": quantity, **fit_slopes(per_seed, predicted).to_dict()})
    return {"points": [p.to_dict() for p in points], "slopes": slopes, "seconds": time.perf_counter() - start}
