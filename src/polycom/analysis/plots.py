"""The analysis figures (matplotlib, Agg), drawn from analysis.json's numbers only."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

__all__ = ["plot_all", "plot_ranks", "plot_similarity", "plot_coefficients"]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_ranks(result: dict, path: Path) -> Path:
    """Effective rank / max rank per layer, one line per matrix kind (experts averaged)."""
    by_layer = result["effective_rank"]["by_layer"]
    rows = result["effective_rank"]["matrices"]
    ratio: dict[str, dict[int, list[float]]] = {}
    for r in rows:
        if r["layer"] is None:
            continue
        kind = r["kind"] + (" (experts)" if r["expert"] is not None else "")
        ratio.setdefault(kind, {}).setdefault(r["layer"], []).append(r["effective_rank"] / r["max_rank"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind, per_layer in ratio.items():
        layers = sorted(per_layer)
        ax.plot(layers, [np.mean(per_layer[la]) for la in layers], "o-", label=kind)
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("effective rank / min(out, in)")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{result.get('activation', result['model'])}: effective rank of the weights "
                 f"({len(by_layer)} layers)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return _save(fig, path)


def plot_similarity(result: dict, path: Path) -> Path:
    """Left: the layer-by-layer cosine similarity matrix; right: consecutive layers."""
    sim = result["similarity"]
    S = np.array(sim["matrix"])
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4.2))
    im = a.imshow(S, vmin=min(0.0, S.min()), vmax=1, cmap="viridis")
    fig.colorbar(im, ax=a, fraction=0.046)
    a.set_xlabel("layer j (0 = embeddings)")
    a.set_ylabel("layer i")
    a.set_title("mean cosine similarity of hidden states", fontsize=10)
    c = sim["consecutive"]
    b.plot(range(1, len(c) + 1), c, "o-")
    b.set_xlabel("block l")
    b.xaxis.set_major_locator(MaxNLocator(integer=True))
    b.set_ylabel("cos(h_{l-1}, h_l), mean over tokens")
    b.set_title(f"consecutive layers (mean {sim['mean_consecutive']:.3f}, {sim['tokens']} tokens)", fontsize=10)
    b.grid(alpha=0.3)
    return _save(fig, path)


def plot_coefficients(result: dict, path: Path) -> Path:
    """Left: final a_0..a_r per MLP; right: their trajectory over the run's checkpoints (a_r dashed)."""
    rows = result["coefficients"]
    traj = result.get("coefficient_trajectory") or {"steps": [], "a": {}}
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    order = max(len(r["a"]) for r in rows)
    width = 0.8 / order
    for i in range(order):
        a.bar(np.arange(len(rows)) + (i - (order - 1) / 2) * width, [r["a"][i] if i < len(r["a"]) else 0 for r in rows],
              width, label=f"a_{i}")
    a.set_xticks(range(len(rows)), [r["name"].replace(".mlp", "").replace("layers.", "L") for r in rows],
                 rotation=60, fontsize=7)
    a.axhline(0, color="k", lw=0.8)
    a.set_title(f"PolyCom coefficients at step {result.get('step')}", fontsize=10)
    a.legend(fontsize=8)
    for k, (name, per_step) in enumerate(traj["a"].items()):
        values = np.array(per_step)  # (checkpoints, r + 1)
        for i in range(values.shape[1]):
            b.plot(traj["steps"], values[:, i], "o-" if i else "s--", color=f"C{i}", alpha=0.6, lw=1,
                   label=f"a_{i}" if k == 0 else None)
    b.set_xlabel("step (kept checkpoints)")
    b.set_title("trajectory (one line per MLP and coefficient)", fontsize=10)
    b.grid(alpha=0.3)
    b.legend(fontsize=8)
    return _save(fig, path)


def plot_all(result: dict, out: Path) -> list[Path]:
    figs = [plot_ranks(result, out / "effective_rank.png")]
    if "similarity" in result:
        figs.append(plot_similarity(result, out / "similarity.png"))
    if result["coefficients"]:
        figs.append(plot_coefficients(result, out / "coefficients.png"))
    return figs
