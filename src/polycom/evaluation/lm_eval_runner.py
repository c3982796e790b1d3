"""lm-evaluation-harness on a polycom model (``polycom eval``; optional extra ``polycom[eval]``).

``PolyComLM`` is an ``lm_eval`` LM subclass over polycom's own Transformer and
tokenizer, so a run folder is evaluated directly (no export) and an exported
folder the same way. Scores are exact sums of token log-probabilities in fp32:

    loglikelihood(context, continuation) = sum_t log p(c_t | context, c_<t)

from one forward over (context + continuation)[-max_seq_len - 1:][:-1] (a
context longer than the model's window loses its oldest tokens; a continuation
longer than the window is scored window by window). An empty
context is the end-of-document token. Rolling log-likelihoods use lm-eval's
own disjoint windows with that token as the first context, as its Hugging
Face wrapper does.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import torch
import torch.nn.functional as F

LM_EVAL_MISSING = 'lm-evaluation-harness is not installed: pip install "polycom[eval]"'

try:
    from lm_eval.api.model import LM
except ImportError as e:
    raise ImportError(LM_EVAL_MISSING) from e

from lm_eval import utils as lm_utils  # noqa: E402

from ..models import Transformer  # noqa: E402
from .generate import SamplingConfig, generate_ids  # noqa: E402
from .load import eager_activations, load_model_and_tokenizer  # noqa: E402

# Resamples for the standard errors of non-mean metrics (perplexities); lm-eval's
# default 100000 takes longer than a small model's whole evaluation.
BOOTSTRAP_ITERS = 1000

__all__ = ["LM_EVAL_MISSING", "PolyComLM", "evaluate", "task_manager"]


class PolyComLM(LM):
    """lm-eval's three request types on a polycom Transformer (one sequence per forward: the
    models polycom evaluates are small, and no padding means no padding mistakes)."""

    def __init__(self, model: Transformer, tokenizer, device: str = "cpu"):
        super().__init__()
        self.model = model.to(device).eval()
        self.tok, self.device_name = tokenizer, device
        self.max_length = model.config.max_seq_len
        if tokenizer.eot_id is None:
            raise ValueError("the tokenizer has no end-of-document token; lm-eval needs one as the empty context")
        self.eot_id = tokenizer.eot_id

    # --- tokens ----------------------------------------------------------------
    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of context and continuation, split where the joint encoding splits (a BPE may
        merge across the boundary); the context's trailing spaces move to the continuation."""
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        if not context:
            return [self.eot_id], self.tok.encode(continuation)
        whole = self.tok.encode(context + continuation)
        n_context = len(self.tok.encode(context))
        return whole[:n_context], whole[n_context:]

    @torch.no_grad()
    def _continuation_logprobs(self, context: list[int], continuation: list[int]) -> tuple[float, bool]:
        """(sum of log p of the continuation tokens, whether each is the argmax).

        Windows of at most max_seq_len predicted tokens, each reading as many tokens
        before it as fit: one forward when context + continuation fit the model."""
        ids, L = context + continuation, self.max_length
        total, greedy = 0.0, True
        for start in range(len(context), len(ids), L):
            end = min(start + L, len(ids))
            inputs = torch.tensor([ids[max(0, end - 1 - L):end - 1]], device=self.device_name)  # (1, <= L)
            logp = F.log_softmax(self.model(inputs).logits[0, -(end - start):].float(), dim=-1)  # (n, V)
            targets = torch.tensor(ids[start:end], device=self.device_name)  # (n,)
            total += float(logp.gather(1, targets[:, None]).sum())
            greedy = greedy and bool((logp.argmax(-1) == targets).all())
        return total, greedy

    # --- the LM interface --------------------------------------------------------
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return [self._continuation_logprobs(*self._encode_pair(*req.args)) for req in requests]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        out = []
        for req in requests:
            (text,) = req.args[:1]
            windows = lm_utils.get_rolling_token_windows(
                token_list=self.tok.encode(text), prefix_token=self.eot_id, max_seq_len=self.max_length,
                context_len=1)
            total = 0.0
            for window in map(lm_utils.make_disjoint_window, windows):
                total += self._continuation_logprobs(*window)[0]
            out.append(total)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out = []
        for req in requests:
            context, kwargs = req.args
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            # Greedy unless the task asks for sampling (lm-eval's convention: do_sample + temperature).
            temperature = float(kwargs.get("temperature", 1.0)) if kwargs.get("do_sample", False) else 0.0
            cfg = SamplingConfig(max_new_tokens=int(kwargs.get("max_gen_toks", 256)), temperature=temperature)
            prompt = (self.tok.encode(context) or [self.eot_id])[-self.max_length:]
            text = self.tok.decode(generate_ids(self.model, prompt, cfg, stop_id=self.eot_id))
            for stop in until:
                text = text.split(stop)[0]
            out.append(text)
        return out


def task_manager(tasks: list[str], include_path: str | Path | None = None):
    """An lm-eval ``TaskManager`` that knows ``tasks`` (the packaged ones, ``include_path``'s,
    lm-eval's own); an unknown name is a ValueError with the closest names."""
    from lm_eval.tasks import TaskManager

    from .tasks import TASK_NAMES, build_tasks

    paths = [str(build_tasks())] + ([str(include_path)] if include_path is not None else [])
    # Indexing lm-eval's own few thousand task files takes most of a small run: skip it
    # when the requested tasks are all local.
    manager = TaskManager(include_path=paths, include_defaults=False)
    if any(t not in manager.all_tasks for t in tasks):
        manager = TaskManager(include_path=paths)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        hints = "".join(f"; {t!r}: did you mean {', '.join(close)}?" for t in unknown
                        if (close := difflib.get_close_matches(t, manager.all_tasks, n=3)))
        raise ValueError(f"--tasks: unknown task(s) {', '.join(unknown)}{hints} (`lm_eval ls tasks` lists all; "
                         f"packaged with polycom: {', '.join(TASK_NAMES)})")
    return manager


def evaluate(path: str | Path, tasks: list[str], include_path: str | Path | None = None,
             limit: int | None = None, out_file: str | Path | None = None, log=print, manager=None) -> dict:
    """Run lm-eval ``tasks`` on the model at ``path`` (run folder or exported folder).

    The packaged tasks (polycom_cloze, polycom_bpb) are always available; ``include_path``
    adds a folder of the user's own task YAMLs (``manager``: a ``task_manager`` already built
    for these tasks, reused across runs). Writes ``eval.json`` (into a run folder by default)
    and returns ``{"results": ..., "tasks": ..., ...}``."""
    from lm_eval import simple_evaluate

    manager = manager or task_manager(tasks, include_path)
    model, tokenizer = load_model_and_tokenizer(path)
    eager_activations(model)
    results = simple_evaluate(model=PolyComLM(model, tokenizer), tasks=list(tasks), task_manager=manager,
                              limit=limit, log_samples=False, bootstrap_iters=BOOTSTRAP_ITERS)
    summary = {"model": str(Path(path).resolve()), "tasks": list(tasks), "limit": limit,
               "results": results["results"], "n_samples": results.get("n-samples"),
               "versions": results.get("versions"), "lm_eval": _version()}
    path = Path(path)
    out_file = Path(out_file) if out_file is not None else path / "eval.json"
    out_file.write_text(json.dumps(summary, indent=1, default=str))
    log(lm_utils.make_table(results))
    log(f"wrote {out_file}")
    return summary


def _version() -> str:
    from importlib.metadata import version

    return version("lm_eval")
