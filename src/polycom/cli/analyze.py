"""``polycom analyze``: effective rank, layer similarity and PolyCom coefficients of a trained run."""

from __future__ import annotations

import argparse
import os
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "analyze",
        help="look inside a trained run: effective rank, layer similarity, PolyCom coefficients",
        description="Analyse the final checkpoint of a polycom run folder (config.yaml and checkpoints/) or one "
                    "checkpoint folder: effective rank of every weight matrix, cosine similarity between the "
                    "layers' hidden states on validation tokens, the learned PolyCom coefficients and their "
                    "trajectory over the kept checkpoints. Writes analysis.json and PNGs (docs/analysis.md).",
    )
    p.add_argument("path", metavar="RUN_OR_CHECKPOINT", help="a run folder or a checkpoints/step_N folder")
    p.add_argument("--out", help="output folder (default: RUN/analysis, or RUN/analysis-step_N for a checkpoint)")
    p.add_argument("--sequences", type=int, default=8, help="validation sequences for the layer similarity")
    p.add_argument("--no-similarity", action="store_true",
                   help="skip the layer similarity (needs no validation data)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis import AnalysisError, analyze

    if args.sequences < 1:
        print(f"polycom analyze: error: --sequences must be >= 1, got {args.sequences}", file=sys.stderr)
        return 2
    if args.out and os.path.exists(args.out) and not os.path.isdir(args.out):
        print(f"polycom analyze: error: --out {args.out} is a file; give a folder (new or existing)", file=sys.stderr)
        return 2
    try:
        result = analyze(args.path, args.out, n_sequences=args.sequences, similarity=not args.no_similarity)
    except AnalysisError as e:
        print(f"polycom analyze: error: {e}", file=sys.stderr)
        return 2
    ranks = result["effective_rank"]
    print(f"{result['source']} step {result['step']} ({result['activation']}): "
          f"{len(ranks['matrices'])} matrices, mean effective rank / max rank {ranks['mean_ratio']:.3f}")
    print("  by kind: " + ", ".join(f"{k} {v:.1f}" for k, v in ranks["by_kind"].items()))
    if "similarity" in result:
        s = result["similarity"]
        print(f"  consecutive-layer cosine similarity: mean {s['mean_consecutive']:.3f} "
              f"({', '.join(f'{v:.3f}' for v in s['consecutive'])})")
    if result["coefficients"]:
        print(f"  PolyCom coefficients: {len(result['coefficients'])} modules, "
              f"{len(result['coefficient_trajectory']['steps'])} checkpoints in the trajectory")
    print(f"  wrote {', '.join(result['figures'])} and analysis.json")
    return 0
