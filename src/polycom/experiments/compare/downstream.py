"""``--eval-tasks``: lm-evaluation-harness on every completed run of the main phase.

``check_eval_tasks`` runs before any training: lm-eval must be installed (else a
ConfigError naming the extra) and every task name known. ``evaluate_runs`` then scores
each completed run's final checkpoint (``polycom eval``'s code path) into
``RUN/eval.json``; a rerun keeps an eval.json made with the same tasks and limit, so
an interrupted sweep resumes its evaluations too. The numbers reach the report through
``records.read_downstream`` and ``metric_tables.metric_table`` (mean and CI over
seeds, paired difference from the baseline with Holm's adjustment).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from ...train.config import ConfigError
from .plan import RunPlan
from .records import DOWNSTREAM_FILE, load_record
from .spec import SweepSpec

__all__ = ["check_eval_tasks", "evaluate_runs", "LM_EVAL_EXTRA"]

LM_EVAL_EXTRA = 'pip install "polycom[eval]"'


def check_eval_tasks(spec: SweepSpec):
    """The lm-eval TaskManager for ``spec.eval_tasks`` (None without tasks); a ConfigError when
    lm-eval is missing or a task is unknown. Called before the first run trains."""
    if not spec.eval_tasks:
        return None
    if importlib.util.find_spec("lm_eval") is None:
        raise ConfigError(f"--eval-tasks: lm-evaluation-harness is not installed: {LM_EVAL_EXTRA}")
    from ...evaluation.lm_eval_runner import task_manager

    try:
        return task_manager(spec.eval_tasks)
    except ValueError as e:
        raise ConfigError(str(e).replace("--tasks:", "--eval-tasks:", 1)) from None


def _up_to_date(path: Path, spec: SweepSpec) -> bool:
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return saved.get("tasks") == list(spec.eval_tasks) and saved.get("limit") == (spec.eval_limit or None)


def evaluate_runs(plans: list[RunPlan], spec: SweepSpec, manager, say=print) -> dict[str, str]:
    """run_id -> "evaluated" | "kept" (an eval.json with these tasks exists) | "not completed"."""
    from ...evaluation.lm_eval_runner import evaluate

    states = {}
    for i, plan in enumerate(plans, 1):
        target = plan.out_dir / DOWNSTREAM_FILE
        if not load_record(plan).ok:
            states[plan.run_id] = "not completed"
        elif _up_to_date(target, spec):
            states[plan.run_id] = "kept"
        else:
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")  # a killed evaluation leaves no half file
            evaluate(plan.out_dir, list(spec.eval_tasks), limit=spec.eval_limit or None, out_file=tmp,
                     log=lambda *a: None, manager=manager)
            os.replace(tmp, target)
            states[plan.run_id] = "evaluated"
        say(f"  [{i}/{len(plans)}] {plan.run_id}: downstream {states[plan.run_id]}")
    return states
