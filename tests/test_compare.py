"""`polycom compare` end to end on a very small sweep, plus its bad-input messages."""

import csv
import json
import math

import pytest
import torch

from polycom.cli import main
from polycom.experiments.compare import execute
from polycom.experiments.compare.spec import SweepSpec
from polycom.experiments.compare.stats import describe
from polycom.experiments.compare.sweep import compare
from polycom.train.config import ConfigError


def small_spec(tmp_path, **kw) -> SweepSpec:
    overrides = ["model.preset=debug", "model.n_layers=1", "model.d_model=32", "model.n_heads=2",
                 "data.tokenizer=byte", "data.max_documents=200", f"data.cache_dir={tmp_path / 'cache'}",
                 "data.seq_len=32", "train.batch_size=4", "train.micro_batch_size=4", "train.steps=8",
                 "train.eval_batches=1", "optim.warmup_steps=2"]
    settings = dict(train_config="tiny", overrides=overrides, activations=["gelu", "polynorm"], seeds=2,
                    eval_points=4, throughput_rounds=2)
    settings.update(kw)
    return SweepSpec(**settings)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    return compare(small_spec(tmp), tmp / "out", say=lambda *a: None), tmp


def test_small_sweep_writes_every_file_and_tables_match_runs_csv(sweep):
    result, _ = sweep
    out = result.out
    for name in ("REPORT.md", "runs.csv", "summary.json", "sweep.json", "figures/loss_curves.png",
                 "figures/final_loss.png", "figures/paired_differences.png", "figures/throughput.png"):
        assert (out / name).exists(), name
    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"completed"}
    summary = json.loads((out / "summary.json").read_text())["summary"]
    for act in ("gelu", "polynorm"):
        losses = [float(r["val_loss"]) for r in rows if r["activation"] == act]
        expect = describe(losses)
        got = summary["per_activation"][act]["val_loss"]
        assert got["mean"] == pytest.approx(expect.mean, rel=1e-12)
        assert got["ci_low"] == pytest.approx(expect.ci_low, rel=1e-12)
    by_seed = {(r["activation"], r["seed"]): float(r["val_loss"]) for r in rows}
    diffs = [by_seed[("polynorm", s)] - by_seed[("gelu", s)] for s in ("0", "1")]
    assert summary["baseline"] == "gelu"
    assert summary["comparisons"]["polynorm"]["val_loss"]["mean_diff"] == pytest.approx(sum(diffs) / 2, rel=1e-9)
    report = (out / "REPORT.md").read_text()
    assert "## Verdict" in report and "shared" in report and "polynorm" in report
    assert "tokenizer `byte` (vocab 256)" in report  # the runs' vocabulary, not data.vocab_size (BPE's target)
    assert f"{summary['per_activation']['gelu']['val_loss']['mean']:.4f}" in report
    # the throughput table carries the reference's control copy, whose spread is stated as the noise floor
    control = summary["throughput"]["gelu (control)"]
    assert control["control"] and control["activation"] == "gelu" and "Noise floor" in report
    timings = json.loads((out / "summary.json").read_text())["timings"]
    runs_s = sum(float(r["elapsed_s"]) for r in rows)
    assert timings["runs_training_s"] == pytest.approx(runs_s, rel=1e-6) and timings["report_s"] > 0
    assert timings["overhead_share"] == pytest.approx((timings["planning_s"] + timings["report_s"]) / runs_s)


def test_paired_design_same_batches_and_shared_weights(sweep):
    """Seed k: GELU and PolyNorm read the same batches and start from identical weights in
    every tensor outside the MLPs, rebuilt from the configs the runs saved."""
    from polycom.data import BatchSampler, prepare_data
    from polycom.models import build_model
    from polycom.train import Config

    result, _ = sweep
    cfgs = {r.activation: Config.from_dict(json.loads((result.out / "runs" / r.run_id / "plan.json").read_text())
                                           ["config"]) for r in result.records if r.seed == 1}
    assert set(cfgs) == {"gelu", "polynorm"}
    states, batches = {}, {}
    for act, cfg in cfgs.items():
        torch.manual_seed(cfg.train.seed)  # as the trainer does before building
        states[act] = build_model(cfg.model.build_config(256, cfg.data.seq_len)).state_dict()
        data = prepare_data(cfg.data.corpus_spec(), cfg.data.tokenizer, cfg.data.vocab_size, cfg.data.cache_dir,
                            log=lambda *a: None)
        sampler = BatchSampler(data.stream("train"), cfg.data.seq_len, seed=cfg.train.seed)
        batches[act] = [sampler.micro_batch(step, 0, 0, 1, cfg.train.micro_batch_size, 1) for step in range(3)]
    shared = [k for k in states["gelu"] if "mlp" not in k]
    assert shared and all(torch.equal(states["gelu"][k], states["polynorm"][k]) for k in shared)
    assert all(torch.equal(x, y) for x, y in zip(batches["gelu"], batches["polynorm"]))


def test_rerun_skips_finished_runs(sweep):
    result, tmp = sweep
    again = compare(small_spec(tmp), tmp / "out", say=lambda *a: None)
    assert list(again.states.values()) == ["skipped"] * 4
    assert [r.val_loss for r in again.records] == [r.val_loss for r in result.records]


def test_killed_run_is_resumed_and_failed_run_is_reported(tmp_path, monkeypatch):
    spec = small_spec(tmp_path, activations=["gelu", "relu"], seeds=1, throughput_rounds=0)
    real = execute.execute_run

    def flaky(plan, threads=0):
        if plan["activation"] == "relu":
            plan = json.loads(json.dumps(plan))
            plan["config"]["model"]["activation_kwargs"] = {"no_such_argument": 1}  # fails inside the run
        return real(plan, threads)

    monkeypatch.setattr(execute, "execute_run", flaky)
    result = compare(spec, tmp_path / "out", say=lambda *a: None)
    status = {r.activation: r.status for r in result.records}
    assert status == {"gelu": "completed", "relu": "failed"}
    assert "relu seed 0: failed" in (result.out / "REPORT.md").read_text()


def test_killed_run_resumes_from_its_checkpoint_to_the_same_losses(tmp_path, monkeypatch):
    spec = small_spec(tmp_path, activations=["gelu", "relu"], seeds=1, throughput_rounds=0)
    full = compare(spec, tmp_path / "full", say=lambda *a: None)
    real = execute.execute_run

    def killed_at_step_4(plan, threads=0):  # stops as a kill would: checkpoint at step 4, no summary of a finish
        plan = json.loads(json.dumps(plan))
        plan["config"]["train"]["stop_at_step"] = 4
        return real(plan, threads)

    monkeypatch.setattr(execute, "execute_run", killed_at_step_4)
    first = compare(spec, tmp_path / "out", say=lambda *a: None)
    assert {r.status for r in first.records} == {"stopped"}  # not a completed run: no verdict from it
    monkeypatch.setattr(execute, "execute_run", real)
    resumed = compare(spec, tmp_path / "out", say=lambda *a: None)
    assert list(resumed.states.values()) == ["done", "done"]
    log = (tmp_path / "out" / "runs" / resumed.records[0].run_id / "train.log").read_text()
    assert "resumed from" in log
    assert [r.val_loss for r in resumed.records] == [r.val_loss for r in full.records]  # bit-exact resume
    assert [r.curve_val_loss for r in resumed.records] == [r.curve_val_loss for r in full.records]


@pytest.mark.parametrize("kwargs, message", [
    ({"activations": ["gelu", "nope"]}, "--activations: unknown activation"),
    ({"activations": []}, "--activations: the list is empty"),
    ({"seeds": 0}, "--seeds: must be an integer >= 1"),
    ({"baseline": "relu"}, "--baseline: 'relu' is not among"),
    ({"lr_sweep": True, "lr_grid": [1e-3, -1.0]}, "--lr-grid: every learning rate must be a positive"),
])
def test_bad_sweep_settings_fail_before_training(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        compare(small_spec(tmp_path, **kwargs), tmp_path / "out", say=lambda *a: None)
    assert not (tmp_path / "out").exists()


def test_bad_override_and_foreign_folder_and_small_corpus(tmp_path, capsys):
    with pytest.raises(ConfigError, match="optim.nope"):
        compare(small_spec(tmp_path, overrides=small_spec(tmp_path).overrides + ["optim.nope=1"]), tmp_path / "o")
    with pytest.raises(ConfigError, match="model.activation: set by the sweep"):
        compare(small_spec(tmp_path, overrides=["model.activation=relu"]), tmp_path / "o")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="--out: .* is not a polycom compare folder"):
        compare(small_spec(tmp_path), foreign, say=lambda *a: None)
    big = small_spec(tmp_path, overrides=small_spec(tmp_path).overrides + ["train.steps=100000"])
    with pytest.raises(ConfigError, match="train.steps: .* need"):
        compare(big, tmp_path / "big", say=lambda *a: None)
    assert main(["compare", "--seeds", "0", "--out", str(tmp_path / "cli")]) == 2
    assert "--seeds: must be an integer >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("preset", ["tiny", "scaling", "scaling-gpu", "small", "paper-dense-1b", "paper-moe-1b-7b"])
def test_every_sweep_preset_plans_with_dry_run(preset, capsys):
    assert main(["compare", "--preset", preset, "--dry-run"]) == 0
    out = capsys.readouterr().out
    runs = [line for line in out.splitlines() if line.startswith("main ")]
    lr_runs = [line for line in out.splitlines() if line.startswith("lr ")]
    spec_acts = {"paper-moe-1b-7b": 2, "paper-dense-1b": 5}.get(preset, 6)
    # tiny tunes every LR on 3 grid points; seed 0's main runs are its LR-phase runs, not listed twice
    scaling = preset.startswith("scaling")
    spec_acts, sizes = (3, 5) if scaling else (spec_acts, 1)
    tuned_sizes = 2 if preset == "scaling-gpu" else sizes  # scaling-gpu tunes the two ends, interpolates between
    seeds, grid = (2, 3) if preset == "tiny" or scaling else (3, 0)
    untuned = sizes - tuned_sizes  # their seed-0 main runs are runs of their own
    assert len(runs) == spec_acts * (seeds * tuned_sizes + (seeds + 1) * untuned)
    assert len(lr_runs) == spec_acts * grid * tuned_sizes
    assert all(" params, " in line and " FLOPs" in line for line in runs + lr_runs)
    assert "GPU-hours" in out


def test_scaling_mode_fits_the_shared_law_and_reports_multiplier_lack_of_fit_and_wall_clock(tmp_path):
    sizes = [{"label": "d16", "model.d_model": 16}, {"label": "d24", "model.d_model": 24},
             {"label": "d32", "model.d_model": 32}, {"label": "d40", "model.d_model": 40}]
    spec = small_spec(tmp_path, activations=["gelu", "relu"], seeds=2, baseline="gelu", scaling=True, scaling_sizes=sizes,
                      throughput_rounds=3)
    result = compare(spec, tmp_path / "out", say=lambda *a: None)
    steps = {r.size: r.steps for r in result.records}
    assert steps["d40"] == 8 and steps["d16"] < steps["d24"] < steps["d32"] < steps["d40"]
    scaling = result.summary["scaling"]
    c = scaling["comparisons"]["relu"]
    assert c["law"] == "E + A C^-b, E shared" and c["n_seeds"] == 2
    assert math.isfinite(c["at_c_max"]["value"]) and [m["factor"] for m in c["extrapolated"]] == [10.0, 100.0]
    assert all(m["extrapolated"] for m in c["extrapolated"]) and not c["at_c_max"]["extrapolated"]
    assert scaling["laws"]["relu"]["E"] == scaling["laws"]["gelu"]["E"]  # one irreducible loss for both
    assert c["wall_clock"]["n_rounds"] == 3 and math.isfinite(c["wall_clock"]["value"])
    assert c["wall_clock"]["value"] == pytest.approx(c["at_c_max"]["value"] / c["wall_clock"]["speed"])
    report = (result.out / "REPORT.md").read_text()
    assert "Across the 4 sizes" in report and "Extrapolated with the fitted law, not measured" in report
    assert "Lack of fit" in report and "2 paired seeds" in report
    for name in ("scaling", "scaling_residuals", "scaling_multiplier"):
        assert (result.out / "figures" / f"{name}.png").exists()


def test_submitit_local_executor_gives_the_same_numbers_as_the_local_path(sweep, tmp_path):
    pytest.importorskip("submitit")
    result, tmp = sweep
    spec = small_spec(tmp, launcher="submitit-local", jobs=2, throughput_rounds=0)
    other = compare(spec, tmp_path / "out", say=lambda *a: None)
    assert [r.val_loss for r in other.records] == [r.val_loss for r in result.records]
    assert other.summary["comparisons"]["polynorm"]["val_loss"] == result.summary["comparisons"]["polynorm"]["val_loss"]
