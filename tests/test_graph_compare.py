"""polycom graph train / compare: training learns, the comparison's statistics, the report, the CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

pytest.importorskip("torch_geometric")

from polycom.cli import main  # noqa: E402
from polycom.errors import UsageError  # noqa: E402
from polycom.graph.compare import GraphCompareSpec, RunRecord, analyse  # noqa: E402
from polycom.graph.train import GraphRunResult, GraphTrainConfig, train_node_classifier  # noqa: E402


def test_training_learns_an_easy_graph_in_both_phases():
    """Strong features and homophily: chance is 1/3, a working model gets > 0.9 (measured 0.97-1.0)."""
    cfg = GraphTrainConfig(data="csbm:n=100,signal=2.0,homophily=0.8", activation="none", local_epochs=10,
                           global_epochs=10, hidden=8)
    r = train_node_classifier(cfg)
    assert r.ok and r.test_acc > 0.9, r
    assert len(r.val_curve) == 20 and r.train_loss[-1] < r.train_loss[0]


def _records(arm, accs):
    return [RunRecord(arm, s, "csbm", None, GraphRunResult({}, a, a, 1, a, 10, 1.0)) for s, a in enumerate(accs)]


def test_analysis_pairs_by_seed_and_adjusts_with_holm():
    spec = GraphCompareSpec(activations=("none", "relu", "gelu"), baselines=(), seeds=5, sweep=())
    base = [0.60, 0.70, 0.65, 0.75, 0.55]
    main_runs = (_records("relu", base) + _records("none", [b + d for b, d in zip(base, [.10, .11, .09, .10, .12])])
                 + _records("gelu", [b + d for b, d in zip(base, [.02, -.03, .01, -.01, .00])]))
    s = analyse(spec, main_runs, [])
    none, gelu = s["comparisons"]["none"], s["comparisons"]["gelu"]
    assert none["test_acc"]["mean_diff"] == pytest.approx(0.104)  # the per-seed differences' mean
    assert none["verdict"] == "better" and gelu["verdict"] == "no significant difference at this budget"
    # Holm with two tests: the smaller p doubled, the larger kept (and not below the first)
    p_none, p_gelu = none["test_acc"]["p_value"], gelu["test_acc"]["p_value"]
    assert p_none < p_gelu
    assert none["test_acc"]["p_holm"] == pytest.approx(2 * p_none)
    assert gelu["test_acc"]["p_holm"] == pytest.approx(max(p_gelu, 2 * p_none))
    # unpaired, the spread of the seeds (sd 0.08) would hide a 0.10 difference; paired it does not
    assert none["test_acc"]["se_paired"] < none["test_acc"]["se_unpaired"] / 5


def test_spec_errors_name_the_field():
    for kwargs, field in [(dict(seeds=0), "seeds"), (dict(baselines=("mlp",)), "baselines"),
                          (dict(baseline="silu"), "baseline"), (dict(data="karate"), "sweep"),
                          (dict(train={"epochs": 3}), "train"), (dict(activations=("relu", "swiglu")), "activation")]:
        with pytest.raises(UsageError, match=f"^{field}:"):
            GraphCompareSpec(**kwargs)


def test_compare_end_to_end_through_the_cli(tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["graph", "compare", "--data", "csbm:n=90", "--activations", "none,relu", "--baselines", "gcn",
                 "--seeds", "2", "--sweep", "0.2,0.8", "--sweep-seeds", "1", "--jobs", "1", "local_epochs=3",
                 "global_epochs=3", "hidden=8", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    for name in ("REPORT.md", "summary.json", "runs.csv", "accuracy.png", "differences.png", "curves.png",
                 "homophily.png"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert len(rows) == 3 * 2 + 3 * 2 * 1
    acc = {(r["arm"], int(r["seed"])): float(r["test_acc"]) for r in rows if r["part"] == "main"}
    diffs = [acc["none", s] - acc["relu", s] for s in (0, 1)]
    assert summary["comparisons"]["none"]["test_acc"]["mean_diff"] == pytest.approx(sum(diffs) / 2)
    assert set(summary["sweep"]["test_acc"]["gcn"]) == {"0.2", "0.8"}
    report = (out / "REPORT.md").read_text()
    assert "| none |" in report and "Δ accuracy vs relu" in report and "Homophily sweep" in report


def test_train_cli_and_its_errors(tmp_path, capsys):
    assert main(["graph", "train", "data=karate", "local_epochs=2", "global_epochs=2", "hidden=8",
                 "--out", str(tmp_path / "run.json")]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert json.loads((tmp_path / "run.json").read_text())["config"]["data"] == "karate"
    assert main(["graph", "train", "activation=swiglu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("polycom graph train: error: activation:") and err.count("\n") == 1
    assert main(["graph", "train", "data=csbm:homophily=3"]) == 2
    assert capsys.readouterr().err.startswith("polycom graph train: error: homophily:")
    assert main(["graph", "compare", "--sweep", "0.1,high"]) == 2
    assert capsys.readouterr().err.startswith("polycom graph compare: error: --sweep:")


def test_import_polycom_and_the_parser_do_not_import_torch_geometric():
    code = ("import sys, polycom, polycom.cli; polycom.cli.build_parser(); "
            "print('torch_geometric' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_without_torch_geometric_one_line_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch_geometric", None)  # import torch_geometric -> ImportError
    assert main(["graph", "train"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'polycom[graph]'" in err
