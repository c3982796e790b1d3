"""``polycom generate``: sample text from a run folder or an exported model, with a KV cache."""

from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    p = sub.add_parser("generate", help="sample a continuation of a prompt (KV-cached decoding)",
                       description="Loads the latest checkpoint of a run folder, or an exported Hugging Face "
                                   "folder, and prints the prompt followed by the sampled continuation.")
    p.add_argument("path", metavar="RUN_OR_HF_DIR", help="a polycom run folder or a `polycom export` folder")
    p.add_argument("--prompt", required=True, help="the text to continue")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens to sample at most (default 64)")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default 1.0)")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest tokens (0 = all)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler")
    p.add_argument("--no-cache", action="store_true", help="recompute the whole prefix every step (slower, same tokens)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.generate import SamplingConfig, generate_ids
    from ..evaluation.load import eager_activations, load_model_and_tokenizer

    try:
        cfg = SamplingConfig(args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.seed)
        model, tok = load_model_and_tokenizer(args.path)
        eager_activations(model)
        new = generate_ids(model, tok.encode(args.prompt), cfg, use_cache=not args.no_cache, stop_id=tok.eot_id)
    except (FileNotFoundError, ValueError) as e:
        print(f"polycom generate: error: {e}", file=sys.stderr)
        return 2
    if new and new[-1] == tok.eot_id:
        new = new[:-1]  # the end-of-document token is not text
    print(args.prompt + tok.decode(new))
    return 0
