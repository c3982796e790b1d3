"""One table of a metric other than the main validation loss: per activation the mean and
95% CI over seeds, and the paired difference from the baseline with Holm's adjustment
over the activations (the main table's statistics, ``stats.py``, on another number).

Used for the extra validation sets (``eval.sets``: loss and bits per byte on each) and
for the downstream tasks of ``--eval-tasks`` (one table per task and metric). A run
counts when it completed and has the number (finite); the pairs are by seed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

from . import stats
from .records import RunRecord

__all__ = ["metric_table"]


def _value(record: RunRecord, value_of: Callable[[RunRecord], float | None]) -> float:
    v = value_of(record) if record.ok else None
    return math.nan if v is None else float(v)


def metric_table(at_size: dict[str, list[RunRecord]], activations: list[str], baseline: str,
                 value_of: Callable[[RunRecord], float | None]) -> dict:
    """``{"per_activation": {act: {n, mean, std, ci_low, ci_high} or None}, "comparisons":
    {act: PairedComparison dict with p_holm}}``; the baseline has no comparison."""
    values = {a: {r.seed: _value(r, value_of) for r in at_size.get(a, [])} for a in activations}
    values = {a: {s: v for s, v in by_seed.items() if math.isfinite(v)} for a, by_seed in values.items()}
    per_activation = {a: stats.describe(list(v.values())).to_dict() if v else None for a, v in values.items()}
    raw = {}
    for act in activations:
        if act == baseline:
            continue
        seeds = sorted(set(values[act]) & set(values[baseline]))
        raw[act] = stats.paired_comparison([values[act][s] for s in seeds], [values[baseline][s] for s in seeds])
    adjusted = stats.holm({a: c.p_value for a, c in raw.items()})
    comparisons = {a: dataclasses.replace(c, p_holm=adjusted[a]).to_dict() for a, c in raw.items()}
    return {"per_activation": per_activation, "comparisons": comparisons}
