"""The files ``polycom approx`` writes: a markdown table, a JSON file and PNGs per part.

rates.md / rates.json / rates.png, theory.md / theory.json / sawtooth.png,
width.md / width.json / width.png. The JSON holds every raw measurement, so each
table can be recomputed from it (the tests do).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from .width import PREDICTED_SLOPES  # noqa: E402

__all__ = ["write_rates", "write_theory", "write_width", "format_slope"]


def _num(v: float, fmt: str = ".3f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if v == -math.inf:
        return "-inf"
    return format(v, fmt)


def format_slope(row: dict) -> str:
    """'mean [low, high]', the form the table and its test share."""
    return f"{_num(row['mean'])} [{_num(row['ci_low'])}, {_num(row['ci_high'])}]"


def _json(obj, path: Path) -> None:
    # JSON has no inf/nan: write them as strings so the file stays standard JSON
    def clean(o):
        if isinstance(o, float) and not math.isfinite(o):
            return str(o)
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    path.write_text(json.dumps(clean(obj), indent=1))


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_rates(result: dict, spec, out: Path) -> list[Path]:
    rows = ["| target | d | n assumed | activation | params | RMSE at largest (geo. mean) | slope [95% CI] "
            "| predicted slope | seeds | failed fits |", "|---|---|---|---|---|---|---|---|---|---|"]
    for s in result["slopes"]:
        group = [f for f in result["fits"] if (f["target"], f["dim"], f["activation"]) ==
                 (s["target"], s["dim"], s["activation"])]
        params = sorted({f["params"] for f in group})
        largest = [f["test_rmse"] for f in group if f["params"] == params[-1] and f["ok"]]
        rmse = float(np.exp(np.mean(np.log(largest)))) if largest else math.nan
        rows.append(f"| {s['target']} | {s['dim']} | {_num(s['smoothness'], 'g')} | {s['activation']} | "
                    f"{params[0]}-{params[-1]} | {_num(rmse, '.2e')} | {format_slope(s)} | "
                    f"{_num(s['predicted'])} | {s['seeds']} | {s['failed_fits']} |")
    md = out / "rates.md"
    md.write_text("# Test RMSE vs parameter count\n\n" + _rates_preamble(spec) + "\n".join(rows) + "\n")
    _json({"settings": asdict(spec), **result}, out / "rates.json")
    return [md, out / "rates.json", _plot_rates(result, spec, out / "rates.png")]


def _rates_preamble(spec) -> str:
    f = spec.fit
    return (f"MLP with {f.depth} hidden layer(s), widths {list(spec.widths)}, float64, full-batch L-BFGS "
            f"({f.steps} iterations), {f.n_train} training and {f.n_test} held-out points, {spec.seeds} seeds. "
            "Slope: log-log least squares per seed (scipy.stats.linregress), mean and 95% t-interval over seeds. "
            "Predicted: -n/d (W^{n,inf} rate); ReLU: -min(n, 2)/d (fixed-depth piecewise-linear reference); "
            "-inf: analytic target (faster than every power). See docs/approx.md.\n\n")


def _plot_rates(result: dict, spec, path: Path) -> Path:
    nt, nd = len(spec.targets), len(spec.dims)
    fig, axes = plt.subplots(nt, nd, figsize=(4.2 * nd + 1.5, 3.2 * nt), squeeze=False)
    colors = {a: f"C{i}" for i, a in enumerate(spec.activations)}
    for i, target in enumerate(spec.targets):
        for j, d in enumerate(spec.dims):
            ax = axes[i][j]
            for act in spec.activations:
                group = [f for f in result["fits"] if (f["target"], f["dim"], f["activation"]) == (target, d, act)]
                ok = [f for f in group if f["ok"]]
                ax.scatter([f["params"] for f in ok], [f["test_rmse"] for f in ok], s=8, alpha=0.35,
                           color=colors[act])
                params = sorted({f["params"] for f in ok})
                means = [np.exp(np.mean([np.log(f["test_rmse"]) for f in ok if f["params"] == p])) for p in params]
                slope = next(s for s in result["slopes"] if (s["target"], s["dim"], s["activation"]) ==
                             (target, d, act))
                ax.plot(params, means, "-o", ms=3, color=colors[act], label=f"{act} ({_num(slope['mean'], '.2f')})")
                if math.isfinite(slope["predicted"]) and params and act == spec.activations[-1]:
                    p = np.array([params[0], params[-1]], float)
                    ax.plot(p, means[0] * (p / p[0]) ** slope["predicted"], "k--", lw=1,
                            label=f"theory -n/d = {slope['predicted']:.2f}")
            ax.set_xscale("log")
            ax.set_yscale("log")
            # the first activation's sizes as x ticks: a short log range's minor labels collide
            sizes = sorted({f["params"] for f in result["fits"]
                            if (f["target"], f["dim"], f["activation"]) == (target, d, spec.activations[0])})
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xticks(sizes, [str(s) for s in sizes], fontsize=7)
            ax.set_title(f"{target}, d = {d}", fontsize=10)
            ax.set_xlabel("parameters")
            ax.set_ylabel("test RMSE")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7, title="activation (slope)", title_fontsize=7)
    return _save(fig, path)


def write_theory(checks, sawtooth, out: Path) -> list[Path]:
    rows = ["| check | what | max abs diff | tolerance | passed |", "|---|---|---|---|---|"]
    rows += [f"| {c.name} | {c.description} | {c.max_abs_diff:.3g} | {c.tolerance:g} | {c.passed} |" for c in checks]
    saw = ["| compositions m | ReLU units | max error on [0,1] | 4^-(m+1) | ratio |", "|---|---|---|---|---|"]
    saw += [f"| {p.compositions} | {p.relu_units} | {p.max_error:.6g} | {p.predicted:.6g} | "
            f"{p.max_error / p.predicted:.6f} |" for p in sawtooth]
    md = out / "theory.md"
    md.write_text("# Exactness checks (float64)\n\n" + "\n".join(rows) +
                  "\n\n# Sawtooth ReLU network for x^2 (Yarotsky 2017)\n\n" + "\n".join(saw) +
                  "\n\nPolyReLU: x^2 with 2 units, exactly (check square/2_units above).\n")
    _json({"checks": [c.to_dict() for c in checks], "sawtooth": [p.to_dict() for p in sawtooth]},
          out / "theory.json")
    return [md, out / "theory.json", _plot_sawtooth(sawtooth, out / "sawtooth.png")]


def _plot_sawtooth(sawtooth, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    m = [p.compositions for p in sawtooth]
    ax.semilogy(m, [p.max_error for p in sawtooth], "o", ms=7, label="measured max |f_m(x) - x^2| (ReLU net)")
    ax.semilogy(m, [p.predicted for p in sawtooth], "k--", label="theory 4^-(m+1)")
    ax.set_xlabel("sawtooth compositions m (hidden layers; 5m ReLU units)")
    ax.set_ylabel("max error on [0, 1]")
    ax.set_title("ReLU approximation of x^2 vs depth\n(PolyReLU: 2 units, error 0)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, path)


# Frobenius norms; written with the double bar so markdown tables keep their columns
_QUANTITIES = {"rel_change_u": "‖U_T - U_0‖ / ‖U_0‖", "rel_change_v": "‖v_T - v_0‖ / ‖v_0‖",
               "rel_change_ntk": "‖K_T - K_0‖ / ‖K_0‖ (empirical NTK)"}


def write_width(result: dict, spec, out: Path) -> list[Path]:
    s = spec.settings
    rows = ["| activation | quantity | slope vs width [95% CI] | predicted | seeds |", "|---|---|---|---|---|"]
    rows += [f"| {r['activation']} | {_QUANTITIES[r['quantity']]} | {format_slope(r)} | {r['predicted']:g} | "
             f"{r['seeds']} |" for r in result["slopes"]]
    md = out / "width.md"
    md.write_text("# Relative change in training vs width (NTK parameterisation)\n\n"
                  f"One hidden layer, d = {s.d}, {s.n_points} training points, full-batch GD, lr {s.lr}, "
                  f"{s.steps} steps, widths {list(spec.widths)}, {spec.seeds} seeds; slope: log-log per seed, "
                  "mean and 95% t-interval over seeds. See docs/approx.md.\n\n" + "\n".join(rows) + "\n")
    _json({"settings": asdict(spec), **result}, out / "width.json")
    return [md, out / "width.json", _plot_width(result, spec, out / "width.png")]


def _plot_width(result: dict, spec, path: Path) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for ax, (q, label) in zip(axes, _QUANTITIES.items()):
        for i, act in enumerate(spec.activations):
            pts = [p for p in result["points"] if p["activation"] == act]
            widths = sorted({p["width"] for p in pts})
            means = [np.exp(np.mean([np.log(p[q]) for p in pts if p["width"] == w])) for w in widths]
            slope = next(r for r in result["slopes"] if r["activation"] == act and r["quantity"] == q)
            ax.plot(widths, means, "-o", ms=4, color=f"C{i}", label=f"{act} (slope {_num(slope['mean'], '.2f')})")
        predicted = PREDICTED_SLOPES[q]
        w = np.array([min(spec.widths), max(spec.widths)], float)
        first = np.mean([p[q] for p in result["points"] if p["width"] == min(spec.widths)])
        ax.plot(w, first * (w / w[0]) ** predicted, "k--", lw=1, label=f"theory slope {predicted:g}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("hidden width W")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle("Relative change after training vs width (NTK parameterisation, mean over seeds)", fontsize=10)
    return _save(fig, path)
