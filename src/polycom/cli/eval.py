"""``polycom eval``: lm-evaluation-harness tasks on a run folder or an exported model."""

from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    p = sub.add_parser("eval", help="run lm-evaluation-harness tasks (packaged: polycom_cloze, polycom_bpb)",
                       description="Scores a run's latest checkpoint (or an exported folder) on lm-eval tasks and "
                                   "writes eval.json into the folder. polycom_cloze (next-line multiple choice) and "
                                   "polycom_bpb (bits per byte) are built offline from held-out stdlib documents.")
    p.add_argument("path", metavar="RUN_OR_HF_DIR", help="a polycom run folder or a `polycom export` folder")
    p.add_argument("--tasks", required=True, help="comma-separated lm-eval task names, e.g. polycom_cloze,polycom_bpb")
    p.add_argument("--include-path", help="a folder of extra lm-eval task YAML files")
    p.add_argument("--limit", type=int, help="evaluate at most N documents per task")
    p.add_argument("--out", help="where to write the results (default: RUN_OR_HF_DIR/eval.json)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        from ..evaluation.lm_eval_runner import evaluate
    except ImportError as e:
        print(f"polycom eval: {e}", file=sys.stderr)
        return 2
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    try:
        if args.limit is not None and args.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {args.limit}")
        evaluate(args.path, tasks, include_path=args.include_path, limit=args.limit, out_file=args.out)
    except (FileNotFoundError, ValueError) as e:
        print(f"polycom eval: error: {e}", file=sys.stderr)
        return 2
    return 0
