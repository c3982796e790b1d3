"""One ModelConfig, three views: the training config's model section, its YAML, and the HF config.

The model settings are written once (``polycom.models.ModelConfig``); ``ModelSection`` and
``PolyComConfig`` are derived from its fields. These tests pin that: the same fields and
defaults everywhere, and a ModelConfig that survives YAML and the Hugging Face config unchanged.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from dataclasses import field

import pytest
from omegaconf import OmegaConf

from polycom.models import PRESETS, ModelConfig
from polycom.train import Config, ConfigError, ModelSection, load_config
from polycom.train.config import model_section_fields
from polycom.train.summary import dry_run

# Non-default values in every type the section has (float, int, bool, str, mapping), with floats
# written the way YAML 1.1 reads as strings (1e-6) to exercise the float parsing.
OVERRIDES = ["model.norm_eps=1e-6", "model.rope_theta=5e5", "model.n_kv_heads=2", "model.qk_norm=true",
             "model.activation=polyrelu", "model.activation_kwargs={order: 2}"]


@pytest.mark.parametrize("preset, extra", [
    ("tiny", []),  # dense
    ("paper-moe-1b-7b", ["model.moe={aux_loss_weight: 2e-2, shared_expert: true}"]),  # MoE
])
def test_model_config_round_trips_through_yaml_and_hf(preset, extra, tmp_path):
    pytest.importorskip("transformers")
    from polycom.hf import PolyComConfig

    cfg = load_config(preset, OVERRIDES + extra)
    mc = cfg.model_config()
    # The overrides reached the ModelConfig as typed values (the literals above, not strings).
    assert (mc.norm_eps, mc.rope_theta, mc.n_kv_heads, mc.qk_norm) == (1e-6, 5e5, 2, True)
    assert (mc.activation, mc.activation_kwargs) == ("polyrelu", {"order": 2})
    if extra:
        assert (mc.moe.num_experts, mc.moe.top_k, mc.moe.aux_loss_weight, mc.moe.shared_expert) == (64, 8, 2e-2, True)

    path = tmp_path / "config.yaml"
    path.write_text(cfg.to_yaml())
    again = load_config(str(path))
    assert again == cfg and again.to_dict() == cfg.to_dict()
    assert again.model_config() == mc

    hf = PolyComConfig.from_model_config(mc)
    assert hf.to_model_config() == mc
    hf.save_pretrained(tmp_path / "hf")  # through config.json as well
    assert PolyComConfig.from_pretrained(tmp_path / "hf").to_model_config() == mc


def test_the_three_views_have_the_same_fields_and_defaults():
    pytest.importorskip("transformers")
    from polycom.hf import PolyComConfig

    model_fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    section = {f.name: f for f in dataclasses.fields(ModelSection)}
    params = dict(inspect.signature(PolyComConfig).parameters)
    params.pop("kwargs")
    assert list(section) == ["preset", *model_fields]
    assert list(params) == list(model_fields)
    # The section's None means "the preset's value"; every field is optional there.
    assert all(section[name].default is None for name in model_fields)
    hf = PolyComConfig()
    for name, f in model_fields.items():
        if f.default is not dataclasses.MISSING:
            expected = f.default
        elif f.default_factory is not dataclasses.MISSING:
            expected = f.default_factory()
        else:  # required by ModelConfig: the HF config defaults to the "debug" preset's shape
            expected = PRESETS["debug"][name]
        assert getattr(hf, name) == expected == params[name].default, name
    # The help text is ModelConfig's.
    assert section["rope_theta"].metadata["help"].startswith(model_fields["rope_theta"].metadata["help"])


def test_a_new_model_config_field_appears_in_the_section_typed():
    extended = dataclasses.make_dataclass(
        "Extended", [("new_knob", float, field(default=0.5, metadata={"help": "a new knob"}))], bases=(ModelConfig,))
    section = dataclasses.make_dataclass("Section", model_section_fields(extended))
    (new,) = [f for f in dataclasses.fields(section) if f.name == "new_knob"]
    assert new.default is None and "a new knob" in new.metadata["help"]
    assert typing.get_type_hints(section)["new_knob"] == typing.Optional[float]
    # OmegaConf types it: a string from the command line becomes the float, a bad one names the key.
    schema = OmegaConf.structured(section)
    assert OmegaConf.to_object(OmegaConf.merge(schema, OmegaConf.from_dotlist(["new_knob=2.5e-1"]))).new_knob == 0.25
    with pytest.raises(Exception, match="new_knob"):
        OmegaConf.merge(schema, {"new_knob": "abc"})


@pytest.mark.parametrize("overrides, message", [
    (["model.activaton=gelu"], "model.activaton: unknown key; did you mean model.activation?"),
    (["trian.steps=1"], "trian: unknown key; did you mean train?"),
    (["optim.lrr=1"], "optim.lrr: unknown key; did you mean optim.lr?"),
    (["model.moe={topk: 1}"], "model.moe.topk: unknown key; did you mean model.moe.top_k?"),
    (["bogus.x=1"], "bogus: unknown key; valid keys: model, data, optim, train"),
    (["optim.lr=abc"], "optim.lr: expected float, got 'abc'"),
    (["train.steps=1.5"], "train.steps: expected int, got 1.5"),
    (["train.resume=maybe"], "train.resume: expected bool, got 'maybe'"),
    (["model.n_layers=[2]"], "model.n_layers: expected int or None, got [2]"),
    (["model=3"], "model: expected a section"),
    (["model.activation_kwargs={a: 1"], "model.activation_kwargs: value is not valid YAML"),
    (["optim.lr"], "optim.lr: overrides look like key=value"),
])
def test_errors_name_the_key_and_what_is_valid(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config("tiny", overrides)
    assert str(err.value).startswith(message)


def test_misspelled_key_in_yaml_and_dicts(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  preset: tiny\n  d_modle: 64\n")
    with pytest.raises(ConfigError, match=r"^model.d_modle: unknown key; did you mean model.d_model\?"):
        load_config(str(path))
    with pytest.raises(ConfigError, match=r"^data.seq_lne: unknown key; did you mean data.seq_len\?"):
        Config.from_dict({"data": {"seq_lne": 8}})


def test_numeric_looking_strings_stay_strings_and_yaml_floats_are_floats(tmp_path):
    # A shell passes train.out_dir="2024" as train.out_dir=2024; both spellings must give the string.
    for item in ["train.out_dir=2024", 'train.out_dir="2024"', "train.out_dir='2024'"]:
        assert load_config("tiny", [item]).train.out_dir == "2024"
    path = tmp_path / "run.yaml"
    path.write_text('train:\n  out_dir: "2024"\noptim:\n  lr: 3e-4\n  eps: 1e-10\n'
                    "model:\n  moe: {aux_loss_weight: 1e-2}\n")
    cfg = load_config(str(path))
    assert cfg.train.out_dir == "2024"
    # PyYAML alone reads 3e-4 (no dot) as the string '3e-4'; the config must hold the float.
    assert (cfg.optim.lr, cfg.optim.eps) == (3e-4, 1e-10) and isinstance(cfg.optim.lr, float)
    assert cfg.model.moe == {"aux_loss_weight": 1e-2}  # untyped mapping: still a float
    assert load_config(str(path)).to_yaml() == cfg.to_yaml()


def test_the_model_config_is_built_once_per_run(monkeypatch):
    calls = []
    build = ModelSection.build_config
    monkeypatch.setattr(ModelSection, "build_config", lambda self, *a: calls.append(a) or build(self, *a))
    cfg = load_config("tiny", ["model.activation=gelu"])  # validation builds it ...
    info = dry_run(cfg)  # ... and the dry run reuses it
    assert len(calls) == 1 and info["vocab_size"] == cfg.data.vocab_size == 4096
    assert cfg.model_config(4096) is cfg.model_config()
    cfg.model.activation = "relu"  # an edited section is rebuilt, not served stale
    assert cfg.model_config().activation == "relu" and len(calls) == 2
