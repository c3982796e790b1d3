"""``polycom export``: a run folder's latest checkpoint as a Hugging Face model folder."""

from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    p = sub.add_parser("export", help="write a run's latest checkpoint as a Hugging Face model folder",
                       description="Config, safetensors weights and tokenizer (PreTrainedTokenizerFast), loadable "
                                   "with AutoModelForCausalLM / AutoTokenizer (trust_remote_code=True: the folder carries its "
                                   "model code, so the reader needs no polycom).")
    p.add_argument("run_dir", metavar="RUN", help="a polycom run folder (train.out_dir)")
    p.add_argument("--out", help="output folder (default: RUN/hf)")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        from ..evaluation.export import export_run

        export_run(args.run_dir, args.out, force=args.force)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"polycom export: error: {e}", file=sys.stderr)
        return 2
    return 0
