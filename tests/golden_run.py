"""The golden loss curve: a small fixed CPU run whose losses are pinned in tests/golden/.

Regenerate after an *intended* numerical change (new init, data order, validation windows, ...)
and say why in the commit message:

    python tests/golden_run.py          # rewrites tests/golden/train_debug_polynorm.json
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden" / "train_debug_polynorm.json"

# The pinned run: 12 steps of the debug model (2 x 64) on 300 documents of the embedded corpus with the
# byte tokenizer (no tokenizer training, so the data is fixed by the corpus alone).
SETTINGS = ["model.preset=debug", "model.activation=polynorm", "data.tokenizer=byte", "data.max_documents=300",
            "data.seq_len=32", "train.batch_size=8", "train.micro_batch_size=4", "train.steps=12",
            "train.eval_every=6", "train.eval_batches=2", "train.checkpoint_every=0", "train.progress=false",
            "train.seed=0", "optim.lr=3e-3", "optim.warmup_steps=2"]


def measure(work_dir: Path, extra: list[str] = ()) -> dict:
    """Train the pinned run under ``work_dir``; its train and validation losses."""
    from polycom.train import run

    r = run("tiny", [*SETTINGS, f"data.cache_dir={work_dir / 'cache'}", f"train.out_dir={work_dir / 'run'}",
                     *extra])
    return {"train_losses": r.train_losses, "val_losses": [e.val_loss for e in r.evals],
            "eval_steps": [e.step for e in r.evals]}


def mismatches(got: dict, want: dict, atol: float) -> list[str]:
    """Every loss that differs from the golden one by more than ``atol``, named by kind and index."""
    out = [f"{key}: {len(got[key])} values, golden has {len(want[key])}"
           for key in ("train_losses", "val_losses") if len(got[key]) != len(want[key])]
    for key in ("train_losses", "val_losses"):
        out += [f"{key}[{i}]: {g:.6f} vs golden {w:.6f}" for i, (g, w) in enumerate(zip(got[key], want[key]))
                if abs(g - w) > atol]
    return out


def main() -> None:
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        losses = measure(Path(tmp))
    record = {"settings": SETTINGS, "torch": torch.__version__, "threads": torch.get_num_threads(), **losses}
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {GOLDEN}: train {losses['train_losses'][0]:.4f} -> {losses['train_losses'][-1]:.4f}, "
          f"val {losses['val_losses']}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    main()
