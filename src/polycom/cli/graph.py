"""``polycom graph train`` / ``polycom graph compare``: Polynormer node classification (docs/graph.md).

Registering the command imports nothing from PyTorch Geometric; running it without the extra prints one
line naming ``pip install 'polycom[graph]'``.
"""

from __future__ import annotations

import argparse
import json
import sys


def register(sub) -> None:
    p = sub.add_parser("graph", help="Polynormer node classification: train one run or compare activations",
                       description="Polynormer (Deng, Yue, Zhang, ICLR 2024) on graphs. See docs/graph.md.")
    gsub = p.add_subparsers(dest="graph_command", required=True)
    t = gsub.add_parser("train", help="train one node classifier and print its accuracies",
                        description="KEY=VALUE sets GraphTrainConfig fields: data, model, activation, seed, "
                                    "local_epochs, global_epochs, lr, hidden, heads, local_layers, global_layers, "
                                    "local_conv, beta, dropout, ...")
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    t.add_argument("--out", help="write the run (accuracies, curves, config) as JSON here")
    t.set_defaults(func=run_train)
    c = gsub.add_parser("compare", help="activations x seeds paired by seed, GCN/GAT baselines, homophily sweep",
                        description="Writes REPORT.md, figures, runs.csv and summary.json to --out. KEY=VALUE sets "
                                    "GraphTrainConfig fields for every run.")
    c.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    c.add_argument("--data", default="csbm", help="csbm[:k=v,...], karate, planetoid:PATH, heterophilous:PATH, "
                                                  "ogb:PATH (default csbm)")
    c.add_argument("--activations", help="comma-separated registry names or none (default none,relu,gelu,polynorm)")
    c.add_argument("--baselines", help="comma-separated of gcn,gat, or '' (default gcn,gat)")
    c.add_argument("--baseline", default="relu", help="reference arm of the paired differences (default relu)")
    c.add_argument("--seeds", type=int, default=5)
    c.add_argument("--sweep", help="comma-separated CSBM homophilies, or none (default 0.1,0.3,0.5,0.7,0.9 on csbm)")
    c.add_argument("--sweep-seeds", type=int, default=2)
    c.add_argument("--jobs", type=int, default=2, help="worker processes, one thread each")
    c.add_argument("--out", default="reports/graph-compare")
    c.set_defaults(func=run_compare)


def _overrides(items: list[str]) -> dict:
    from ..errors import UsageError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"{item}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _floats(text: str, option: str) -> tuple[float, ...]:
    from ..errors import UsageError

    try:
        return tuple(float(h) for h in text.split(","))
    except ValueError:
        raise UsageError(f"{option}: expected comma-separated numbers, got {text!r}") from None


def run_train(args: argparse.Namespace) -> int:
    from .errors import USER_ERRORS, report

    from ..graph import train  # without the extra: main() prints the one line naming it
    try:
        cfg = train.GraphTrainConfig(**_overrides(args.overrides))
        result = train.train_node_classifier(cfg)
    except TypeError as e:  # an unknown field
        return report("polycom graph train", ValueError(str(e).replace("__init__() ", "")))
    except USER_ERRORS as e:
        return report("polycom graph train", e)
    print(f"{cfg.label} seed {cfg.seed} on {cfg.data}: test accuracy {result.test_acc:.4f} at the best-validation "
          f"epoch {result.best_epoch} (val {result.val_acc:.4f}); last epoch test {result.final_test_acc:.4f}; "
          f"{result.num_params:,} parameters; {result.seconds:.1f} s")
    if args.out:
        from ..train.files import write_json_atomic

        write_json_atomic(args.out, result.to_dict())
    return 0 if result.ok else 1


def run_compare(args: argparse.Namespace) -> int:
    from .errors import USER_ERRORS, report

    from ..graph import compare
    from ..graph import report as report_module
    try:
        kwargs = dict(data=args.data, seeds=args.seeds, baseline=args.baseline, sweep_seeds=args.sweep_seeds,
                      jobs=args.jobs, train=_overrides(args.overrides))
        if args.activations is not None:
            kwargs["activations"] = tuple(a.strip() for a in args.activations.split(",") if a.strip())
        if args.baselines is not None:
            kwargs["baselines"] = tuple(b.strip() for b in args.baselines.split(",") if b.strip())
        if args.sweep is not None:
            kwargs["sweep"] = () if args.sweep in ("none", "") else _floats(args.sweep, "--sweep")
        elif not args.data.startswith("csbm"):
            kwargs["sweep"] = ()
        spec = compare.GraphCompareSpec(**kwargs)
        result = compare.run_comparison(spec)
        path = report_module.write_report(result, args.out)
    except KeyboardInterrupt:
        print("polycom graph compare: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        return report("polycom graph compare", e, {args.out: "--out"})
    print(f"report: {path} ({len(result.main) + len(result.sweep)} runs in {result.seconds:.0f} s)")
    for arm, c in result.summary["comparisons"].items():
        t = c["test_acc"]
        print(f"  {arm} vs {spec.baseline}: {c['verdict']} (accuracy {t['mean_diff']:+.4f}, Holm p {t['p_holm']:.3g})")
    return 0
