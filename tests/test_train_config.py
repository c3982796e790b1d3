"""The config tree: YAML presets, dotted overrides, validation naming the key, dry runs."""

from __future__ import annotations

import re

import pytest

from polycom.train import Config, ConfigError, load_config
from polycom.train.config import check_paths, config_help, list_presets
from polycom.train.summary import dry_run


def test_presets_load_and_overrides_apply():
    assert {"tiny", "small", "paper-dense-1b", "paper-moe-1b-7b"} <= set(list_presets())
    cfg = load_config("tiny", ["model.activation=gelu", "optim.lr=3e-4", "train.steps=7", "model.moe={top_k: 1}"])
    assert cfg.model.activation == "gelu" and cfg.optim.lr == 3e-4 and cfg.train.steps == 7
    assert cfg.model.moe == {"top_k": 1}
    assert isinstance(cfg.optim.lr, float)
    assert load_config(cfg) == cfg and Config.from_dict(cfg.to_dict()) == cfg


def test_yaml_file_round_trip(tmp_path):
    cfg = load_config("tiny", ["train.seed=5"])
    path = tmp_path / "run.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(str(path)) == cfg


@pytest.mark.parametrize("overrides, key", [
    (["optim.lrr=1"], "optim.lrr"),
    (["bogus.x=1"], "bogus"),
    (["optim.lr=abc"], "optim.lr"),
    (["train.steps=1.5"], "train.steps"),
    (["train.resume=maybe"], "train.resume"),
    (["optim.lr=-3e-4"], "optim.lr"),
    (["optim.lr=0"], "optim.lr"),
    (["train.batch_size=10", "train.micro_batch_size=4"], "train.batch_size"),
    (["data.val_fraction=1.5"], "data.val_fraction"),
    (["data.tokenizer=sentencepiece"], "data.tokenizer"),
    (["model.activation=nope"], "activation"),
    (["model.n_heads=3"], "n_heads"),
    (["model.max_seq_len=16", "data.seq_len=32"], "model.max_seq_len"),
    (["train.parallel=tp"], "train.parallel"),
])
def test_bad_configs_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        load_config("tiny", overrides)
    assert key in str(err.value)


def test_missing_data_path_is_caught_before_training(tmp_path):
    from polycom.train import run

    cfg = load_config("tiny", [f"data.source={tmp_path / 'missing'}"])
    with pytest.raises(ConfigError, match="data.source"):
        check_paths(cfg)
    with pytest.raises(ConfigError, match="data.source"):
        run(cfg)
    assert not (tmp_path / "missing").exists()


def test_help_documents_every_field():
    text = config_help()
    for section, obj in load_config("tiny").to_dict().items():
        for key in obj:
            assert f"{section}.{key} " in text


@pytest.mark.parametrize("preset, params, tokens_per_step", [
    ("paper-dense-1b", (1.0e9, 1.6e9), 64 * 4096),
    ("paper-moe-1b-7b", (6.0e9, 7.5e9), 1024 * 4096),
    ("tiny", (1e6, 1e7), 16 * 128),
])
def test_dry_run_sizes_presets_without_allocating(preset, params, tokens_per_step):
    cfg = load_config(preset)
    info = dry_run(cfg)
    assert params[0] < info["num_params"] < params[1]
    assert info["tokens_per_step"] == tokens_per_step


def test_paper_configs_match_the_paper():
    dense, moe = load_config("paper-dense-1b"), load_config("paper-moe-1b-7b")
    assert (dense.optim.lr, dense.optim.lr * dense.optim.min_lr_ratio) == (3e-4, pytest.approx(3e-5))
    assert (dense.optim.beta1, dense.optim.beta2, dense.optim.weight_decay) == (0.9, 0.95, 0.1)
    assert (dense.data.seq_len, dense.train.batch_size) == (4096, 64)
    moe_cfg = moe.model_config(50304).moe
    assert (moe_cfg.num_experts, moe_cfg.top_k, moe.optim.lr) == (64, 8, 4e-4)


@pytest.mark.parametrize("override,key", [
    ("optim.eps=.inf", "optim.eps"), ("model.norm_eps=.inf", "model.norm_eps"), ("optim.lr=.nan", "optim.lr"),
    ("optim.weight_decay=.inf", "optim.weight_decay"), ("optim.grad_clip=.nan", "optim.grad_clip"),
    ("model.moe.router_temperature=.inf", "model.moe.router_temperature"),
    ("data.val_fraction=.nan", "data.val_fraction"),
])
def test_every_float_key_rejects_inf_and_nan_naming_the_key(override, key):
    """inf passes every range check written as a comparison (inf > 0): once accepted, optim.eps=inf
    or model.norm_eps=inf trained nothing (validation loss stayed at ln 256)."""
    with pytest.raises(ConfigError, match=f"^{key}: must be a finite number, got (inf|nan)$"):
        load_config(None, [override])


@pytest.mark.parametrize("override", ["eval.sets.../x=foo.txt", "eval.sets..=foo.txt", "optim..lr=1"])
def test_a_key_with_an_empty_part_is_named_as_invalid(override):
    """It used to read "eval.sets: unknown key; did you mean eval.sets?"."""
    key = override.partition("=")[0]
    with pytest.raises(ConfigError, match=f"^{re.escape(key)}: not a valid key: a dotted key has no empty parts"):
        load_config(None, [override])
