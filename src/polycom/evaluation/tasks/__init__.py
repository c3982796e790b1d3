"""lm-evaluation-harness tasks that ship with polycom, built offline from the embedded corpus.

- ``polycom_cloze`` (multiple choice, acc / acc_norm): a window of a held-out
  document, then four candidate next lines: the true one and three other lines
  of the same document.
- ``polycom_bpb`` (rolling log-likelihood): the first ``BPB_CHARS`` characters
  of held-out documents; bits per byte, byte and word perplexity.

"Held out" = the validation split of the stdlib corpus at val_fraction 0.05.
The split is a hash of the document id compared to the fraction, so these
documents are validation documents of every run on ``data.source=stdlib``
with ``data.val_fraction >= 0.05`` (the default): never trained on.

The stdlib corpus is the running Python's own standard library, so the items
depend on the Python version (like the training corpus); ``build_tasks``
writes them, with the task YAML files, into a folder keyed by the corpus
content, which ``polycom eval`` passes to lm-eval as an include path.
"""

from .build import BPB_CHARS, TASK_NAMES, build_tasks, cloze_items

__all__ = ["BPB_CHARS", "TASK_NAMES", "build_tasks", "cloze_items"]
