"""polycom compare with extra validation sets (eval.sets) and downstream tasks (--eval-tasks).

The per-set and downstream tables are checked against stats.py run on the numbers in runs.csv;
the downstream statistics are fed eval.json-shaped results (no lm-eval needed); a missing lm-eval
fails before any training; the end-to-end lm-eval path skips without lm-eval."""

from __future__ import annotations

import csv
import json

import pytest

from polycom.cli import main
from polycom.experiments.compare import downstream
from polycom.experiments.compare.stats import describe, holm, paired_comparison
from polycom.experiments.compare.sweep import compare
from polycom.train.config import ConfigError
from test_compare import small_spec

ACTS = ["gelu", "polynorm", "relu"]


def write_sets(tmp):
    for name, word in (("prose", "the cat sat"), ("code", "x = f(y)")):
        (tmp / f"{name}.txt").write_text("".join(f"{word} {i} and {i * 7}\n" for i in range(400)))
    return [f"eval.sets.prose={tmp / 'prose.txt'}", f"eval.sets.code={tmp / 'code.txt'}"]


def spec_with_sets(tmp, **kw):
    spec = small_spec(tmp, activations=ACTS, seeds=3, throughput_rounds=0, **kw)
    spec.overrides += write_sets(tmp)
    return spec


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare_sets")
    return compare(spec_with_sets(tmp), tmp / "out", say=lambda *a: None), tmp


def rows_of(out):
    return list(csv.DictReader((out / "runs.csv").open()))


def test_per_set_tables_equal_the_statistics_of_runs_csv(sweep):
    result, _ = sweep
    rows = rows_of(result.out)
    summary = json.loads((result.out / "summary.json").read_text())["summary"]
    base = summary["baseline"]
    assert base == "relu" and list(summary["eval_sets"]) == ["prose", "code"]
    for name in ("prose", "code"):
        for metric in ("loss", "bpb"):
            col = f"val_{metric}[{name}]"
            value = {(r["activation"], int(r["seed"])): float(r[col]) for r in rows}
            table = summary["eval_sets"][name][metric]
            for act in ACTS:
                want = describe([value[(act, s)] for s in range(3)])
                assert table["per_activation"][act]["mean"] == pytest.approx(want.mean, rel=1e-12)
                assert table["per_activation"][act]["ci_high"] == pytest.approx(want.ci_high, rel=1e-12)
            paired = {a: paired_comparison([value[(a, s)] for s in range(3)], [value[(base, s)] for s in range(3)])
                      for a in ("gelu", "polynorm")}
            adjusted = holm({a: c.p_value for a, c in paired.items()})
            for act, c in paired.items():
                got = table["comparisons"][act]
                assert got["mean_diff"] == pytest.approx(c.mean_diff, rel=1e-12)
                assert got["p_holm"] == pytest.approx(adjusted[act], rel=1e-12)
    # runs.csv's per-set numbers are the runs' own (their summary.json)
    for rec in result.records:
        row = next(r for r in rows if r["run_id"] == rec.run_id)
        own = json.loads((result.out / "runs" / rec.run_id / "summary.json").read_text())["val_sets"]
        assert float(row["val_loss[code]"]) == own["code"]["loss"]
    report = (result.out / "REPORT.md").read_text()
    assert "## Extra validation sets (eval.sets)" in report and (result.out / "figures" / "eval_sets.png").exists()
    tally = summary["eval_sets_tally"]["polynorm"]
    verdicts = [summary["eval_sets"][n]["loss"]["comparisons"]["polynorm"]["verdict"] for n in ("prose", "code")]
    assert tally == {"better": verdicts.count("better"), "worse": verdicts.count("worse"), "n_sets": 2}
    assert f"{tally['better']} / {tally['worse']} of 2 sets" in report


def fake_eval_json(acc: float, bpb: float) -> dict:
    """The shape `polycom eval` writes: lm-eval's results with "metric,filter" keys and standard errors."""
    return {"tasks": ["polycom_cloze", "polycom_bpb"], "limit": None, "results": {
        "polycom_cloze": {"alias": "polycom_cloze", "acc,none": acc, "acc_stderr,none": 0.03},
        "polycom_bpb": {"alias": "polycom_bpb", "bits_per_byte,none": bpb, "bits_per_byte_stderr,none": "N/A"}}}


def test_downstream_table_from_eval_json_results(sweep):
    result, tmp = sweep
    accs = {}
    for i, rec in enumerate(result.records):
        accs[(rec.activation, rec.seed)] = acc = 0.25 + 0.01 * i
        (result.out / "runs" / rec.run_id / "eval.json").write_text(json.dumps(fake_eval_json(acc, 3.0 - acc)))
    again = compare(spec_with_sets(tmp), tmp / "out", say=lambda *a: None)  # finished runs are skipped
    assert set(again.states.values()) == {"skipped"}
    table = again.summary["downstream"]["polycom_cloze/acc"]
    assert set(again.summary["downstream"]) == {"polycom_cloze/acc", "polycom_bpb/bits_per_byte"}
    for act in ACTS:
        want = describe([accs[(act, s)] for s in range(3)])
        assert table["per_activation"][act]["mean"] == pytest.approx(want.mean, rel=1e-12)
        assert table["per_activation"][act]["ci_low"] == pytest.approx(want.ci_low, rel=1e-12)
    c = paired_comparison([accs[("polynorm", s)] for s in range(3)], [accs[("relu", s)] for s in range(3)])
    assert table["comparisons"]["polynorm"]["mean_diff"] == pytest.approx(c.mean_diff, rel=1e-12)
    rows = rows_of(again.out)
    assert {float(r["polycom_cloze/acc"]) for r in rows} == set(accs.values())
    report = (again.out / "REPORT.md").read_text()
    assert "## Downstream tasks (--eval-tasks)" in report and "polycom_bpb/bits_per_byte" in report
    assert f"{table['per_activation']['gelu']['mean']:.4f}" in report


def test_eval_tasks_without_lm_eval_fail_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(downstream.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r'^--eval-tasks: .*pip install "polycom\[eval\]"'):
        compare(small_spec(tmp_path, eval_tasks=["polycom_cloze"]), tmp_path / "out", say=lambda *a: None)
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()  # nothing prepared or trained
    rc = main(["compare", "--out", str(tmp_path / "cli"), "--eval-tasks", "polycom_cloze", "--activations", "gelu,relu",
               "train.steps=2"])
    assert rc == 2 and 'pip install "polycom[eval]"' in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"eval_tasks": ["a", "a"]}, "--eval-tasks: duplicates"),
    ({"eval_tasks": [""]}, "--eval-tasks: expected comma-separated task names"),
    ({"eval_limit": -1}, "--eval-limit: must be an integer >= 0"),
])
def test_bad_eval_task_settings(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match="^" + message):
        small_spec(tmp_path, **kwargs).validate()


def test_compare_with_eval_tasks_end_to_end(tmp_path):
    pytest.importorskip("lm_eval")
    spec = small_spec(tmp_path, seeds=2, throughput_rounds=0, eval_tasks=["polycom_bpb"], eval_limit=2)
    result = compare(spec, tmp_path / "out", say=lambda *a: None)
    table = result.summary["downstream"]["polycom_bpb/bits_per_byte"]
    for act in ("gelu", "polynorm"):
        values = []
        for rec in (r for r in result.records if r.activation == act):
            saved = json.loads((tmp_path / "out" / "runs" / rec.run_id / "eval.json").read_text())
            assert saved["tasks"] == ["polycom_bpb"] and saved["limit"] == 2
            values.append(saved["results"]["polycom_bpb"]["bits_per_byte,none"])
        assert table["per_activation"][act]["mean"] == pytest.approx(describe(values).mean, rel=1e-12)
    assert "## Downstream tasks (--eval-tasks)" in (tmp_path / "out" / "REPORT.md").read_text()
    again = compare(spec, tmp_path / "out", say=lambda *a: None)
    assert {v for k, v in again.states.items() if k.endswith("(downstream)")} == {"kept"}


def test_an_empty_eval_section_leaves_run_hashes_as_before_it_existed():
    """Sweep folders made before `eval.sets` existed stay valid: the default section hashes as absent."""
    from polycom.experiments.compare.plan import run_hash
    from polycom.train.config import load_config

    tree = load_config("tiny", []).to_dict()
    before = {k: v for k, v in tree.items() if k != "eval"}  # a config from before the section
    assert tree["eval"] == {"sets": {}}
    assert run_hash(tree) == run_hash(before)
    with_set = load_config("tiny", ["eval.sets.docs=notes.txt"]).to_dict()
    assert run_hash(with_set) != run_hash(tree)  # a real set is part of the run's identity
