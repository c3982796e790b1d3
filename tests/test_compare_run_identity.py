"""Run identity (issue 22 item 9): a run's hash leaves out keys at their defaults, so a config
option added later never changes an existing run's hash or orphans a sweep folder; a default
that changed under an existing run is caught, not silently reused."""

from __future__ import annotations

import dataclasses
import json

import pytest

from polycom.experiments.compare import plan as plan_module
from polycom.experiments.compare.execute import run_state
from polycom.experiments.compare.plan import plan_runs, run_hash, same_sweep, sweep_key
from polycom.experiments.compare.spec import SweepSpec
from polycom.train import config as config_module
from polycom.train.config import load_config


def _config_with_option(default):
    """``Config`` as it would be after someone adds ``train.dummy_option`` (default ``default``)."""
    train = dataclasses.make_dataclass("TrainSection", [("dummy_option", int, dataclasses.field(default=default))],
                                       bases=(config_module.TrainSection,))
    return dataclasses.make_dataclass("Config", [("train", train, dataclasses.field(default_factory=train))],
                                      bases=(config_module.Config,))


def test_a_new_option_at_its_default_keeps_every_run_hash_and_a_set_one_changes_it(monkeypatch):
    tree = load_config("tiny", ["train.steps=40"]).to_dict()
    before = run_hash(tree)
    monkeypatch.setattr(plan_module, "Config", _config_with_option(7))
    with_default = json.loads(json.dumps(tree))
    with_default["train"]["dummy_option"] = 7  # what every config resolved after the change holds
    assert run_hash(with_default) == before
    with_default["train"]["dummy_option"] = 8
    assert run_hash(with_default) != before


def test_keys_at_their_defaults_do_not_enter_the_hash_in_any_section():
    tree = load_config("tiny", []).to_dict()
    defaults = config_module.Config().to_dict()
    for section in ("model", "data", "optim", "train", "eval"):
        trimmed = json.loads(json.dumps(tree))
        name = next(n for n in defaults[section] if trimmed[section].get(n) == defaults[section][n])
        del trimmed[section][name]
        assert run_hash(trimmed) == run_hash(tree), f"{section}.{name} at its default changed the hash"
    changed = json.loads(json.dumps(tree))
    changed["optim"]["lr"] = tree["optim"]["lr"] * 2
    assert run_hash(changed) != run_hash(tree)


def test_a_sweep_folder_key_from_before_the_option_still_matches(monkeypatch, tmp_path):
    spec = SweepSpec(train_config="tiny", overrides=["train.steps=40"], activations=["gelu", "relu"], seeds=1)
    stored = json.loads(json.dumps(sweep_key(spec)))
    # A sweep.json written before keys at their defaults were left out held the whole config:
    stored_full = dict(stored, config=plan_module._without(load_config("tiny", ["train.steps=40"]).to_dict(),
                                                           plan_module.SWEEP_IGNORED_KEYS))
    monkeypatch.setattr(plan_module, "Config", _config_with_option(7))
    assert same_sweep(stored, sweep_key(spec)) and same_sweep(stored_full, sweep_key(spec))
    other = SweepSpec(train_config="tiny", overrides=["train.steps=41"], activations=["gelu", "relu"], seeds=1)
    assert not same_sweep(stored, sweep_key(other))


def test_a_changed_default_under_an_existing_run_is_refused_naming_the_key(tmp_path):
    spec = SweepSpec(train_config="tiny", overrides=["train.steps=40"], activations=["gelu", "relu"], seeds=1)
    plan = plan_runs(spec, tmp_path)["main"][0]
    plan.out_dir.mkdir(parents=True)
    stored = plan.to_dict()
    stored["config"] = json.loads(json.dumps(plan.config))
    stored["config"]["optim"]["weight_decay"] = 0.123  # what the run used when that was the default
    (plan.out_dir / "plan.json").write_text(json.dumps(stored))
    assert run_state(plan.out_dir, plan.run_hash) == "new"  # without the config: only the hash is checked
    with pytest.raises(ValueError, match=r"optim\.weight_decay=0\.123 then"):
        run_state(plan.out_dir, plan.run_hash, plan.config)
    stored["config"]["optim"]["weight_decay"] = plan.config["optim"]["weight_decay"]
    del stored["config"]["train"]["seed"]  # an option the run did not have yet: no conflict
    (plan.out_dir / "plan.json").write_text(json.dumps(stored))
    assert run_state(plan.out_dir, plan.run_hash, plan.config) == "new"
