"""The training configuration: one dataclass tree, YAML presets, dotted overrides.

    cfg = load_config("tiny", ["model.activation=polynorm", "optim.lr=3e-4"])

Every field carries its help text (``polycom train --help`` prints them all).
The ``model`` section is derived from ``polycom.models.ModelConfig``'s fields, so
a model setting is declared once. OmegaConf does the parsing: the dataclass tree
is its structured schema, the YAML file and the overrides are merged onto it
(type-checked per field), and ``to_object`` builds the dataclasses. The tree
validates itself at construction and every error names the full key
(``optim.lr``), so a bad config fails before any data or model is touched.
The checks that need the file system (does ``data.source`` exist?) run in
``check_paths``, called by the trainer before it starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from ..models.config import ModelConfig, MoEConfig

__all__ = ["ConfigError", "Config", "ModelSection", "DataSection", "OptimSection", "TrainSection", "EvalSection",
           "EvalSet", "load_config", "config_help", "preset_path", "list_presets", "check_paths"]

_UNIONS = (typing.Union, types.UnionType)
PRECISIONS = ("auto", "fp32", "bf16", "bf16-fsdp")


class ConfigError(ValueError):
    """A configuration problem; the message starts with the offending key."""


def _f(default, help: str):
    kw = {"default_factory": default} if callable(default) else {"default": default}
    return field(metadata={"help": help}, **kw)


# --- the model section, derived from ModelConfig ---------------------------------

# How the section reads a field where that differs from "set: replaces the preset's value; unset
# (null): the preset's value".
_SECTION_NOTES = {
    "vocab_size": "unset (null): the tokenizer's vocabulary size",
    "max_seq_len": "unset (null): data.seq_len",
    "moe": "a mapping of MoEConfig fields merged into the preset's (e.g. {top_k: 1}); unset (null): the preset's",
}


def _section_annotation(tp):
    """A ModelConfig annotation as a ModelSection one: optional (None = the preset's value);
    ``moe`` (a dataclass) and ``activation_kwargs`` become plain mappings, merged into the preset's."""
    args = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) in _UNIONS else [tp]
    (base,) = args
    if base is dict or dataclasses.is_dataclass(base):
        base = Dict[str, Any]
    return Optional[base]


def model_section_fields(model_config_cls: type = ModelConfig) -> list:
    """``make_dataclass`` fields of the model section: ``preset``, then one optional field per
    field of ``model_config_cls`` with its help text."""
    hints = typing.get_type_hints(model_config_cls)
    out = [("preset", str, _f("tiny", "model preset from polycom.models.PRESETS"))]
    for f in dataclasses.fields(model_config_cls):
        note = _SECTION_NOTES.get(f.name, "unset (null): the preset's value")
        out.append((f.name, _section_annotation(hints[f.name]), _f(None, f"{f.metadata['help']}; {note}")))
    return out


def _overrides(self) -> dict:
    """The fields set (not None): they replace the preset's values."""
    return {k: v for k, v in dataclasses.asdict(self).items() if k != "preset" and v is not None}


def _build_config(self, vocab_size: int | None = None, seq_len: int | None = None) -> ModelConfig:
    """The ``ModelConfig``: the preset with the set fields replaced; ``vocab_size``/``seq_len``
    fill ``vocab_size``/``max_seq_len`` where left None. A run gets it through ``Config.model_config``."""
    from ..models import model_config

    kw = self.overrides()
    if vocab_size is not None:
        if "vocab_size" in kw and kw["vocab_size"] < vocab_size:
            raise ConfigError(f"model.vocab_size={kw['vocab_size']} is smaller than the tokenizer's {vocab_size}")
        kw.setdefault("vocab_size", vocab_size)
    if seq_len is not None:
        kw.setdefault("max_seq_len", seq_len)
    if isinstance(kw.get("moe"), dict):
        _reject_unknown_keys(kw["moe"], [f.name for f in dataclasses.fields(MoEConfig)], "model.moe")
    try:
        return model_config(self.preset, **kw)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model: {e}") from None


# One field per ModelConfig field (plus the preset), so a new ModelConfig field is one edit.
ModelSection = dataclasses.make_dataclass(
    "ModelSection", model_section_fields(),
    namespace={"__module__": __name__, "overrides": _overrides, "build_config": _build_config,
               "__doc__": "Maps onto ``polycom.models.ModelConfig``: a preset plus field overrides "
                          "(None = the preset's value)."})


@dataclass
class DataSection:
    source: str = _f("stdlib", "'stdlib' (embedded corpus), a .txt/.jsonl/.parquet file or folder, "
                               "'hf:NAME' or tinystories/fineweb-edu/wikitext-103/openwebtext")
    text_field: str = _f("text", "text field of .jsonl/.parquet/HF records")
    val_fraction: float = _f(0.05, "fraction of documents (by id hash) held out for validation")
    hf_config: str | None = _f(None, "Hugging Face dataset config name")
    hf_split: str = _f("train", "Hugging Face dataset split to read")
    max_documents: int = _f(0, "read at most this many documents (0 = all)")
    tokenizer: str = _f("bpe", "'bpe' (trained on the train split), 'byte' (vocab 256) or 'hf:NAME_OR_PATH'")
    vocab_size: int = _f(4096, "vocabulary size of the trained BPE tokenizer")
    seq_len: int = _f(256, "tokens per training sequence")
    cache_dir: str | None = _f(None, "tokenizer/shard cache (None = $POLYCOM_CACHE or ~/.cache/polycom)")

    def corpus_spec(self):
        from ..data import CorpusSpec

        return CorpusSpec(self.source, self.text_field, self.val_fraction, self.hf_config, self.hf_split,
                          self.max_documents)


@dataclass
class OptimSection:
    lr: float = _f(3e-3, "peak learning rate (AdamW)")
    min_lr_ratio: float = _f(0.1, "cosine decays the LR to lr * min_lr_ratio")
    warmup_steps: int = _f(20, "linear warmup steps")
    beta1: float = _f(0.9, "AdamW beta1")
    beta2: float = _f(0.95, "AdamW beta2")
    eps: float = _f(1e-8, "AdamW epsilon")
    weight_decay: float = _f(0.1, "decoupled weight decay on matrices (ndim >= 2) only")
    decay_activation_coefficients: bool = _f(False, "also decay the activation coefficients (official code: no)")
    grad_clip: float = _f(1.0, "clip the global gradient norm to this (0 = off)")


@dataclass
class TrainSection:
    steps: int = _f(300, "optimizer steps")
    batch_size: int = _f(16, "global batch: sequences per optimizer step, all ranks and micro-steps together")
    micro_batch_size: int = _f(16, "sequences per forward pass per rank (grad accumulation fills the rest)")
    seed: int = _f(0, "seed of the model init and the data order")
    device: str = _f("auto", "'auto' (cuda > mps > cpu), 'cpu', 'cuda', 'cuda:1', 'mps'")
    precision: str = _f("auto", "'auto' (bf16 autocast on CUDA, else fp32), 'fp32', 'bf16' (autocast; fp32 "
                                "weights) or 'bf16-fsdp' (FSDP2 MixedPrecisionPolicy: bf16 parameters in compute, "
                                "fp32 gradient reduction and fp32 sharded master weights; train.parallel=fsdp)")
    activation_checkpointing: int = _f(0, "recompute block forwards in backward: 0 = off, 1 = every block, "
                                          "k = every k-th block (blocks 0, k, 2k, ...)")
    tensor_parallel: int = _f(1, "ranks per tensor-parallel group (1 = off): a (data, tensor) mesh of world size / "
                                 "this x this; attention heads and the MLP width are split over a group, FSDP2 "
                                 "shards over the data dimension (train.parallel fsdp or auto)")
    compile: bool = _f(False, "torch.compile the model")
    parallel: str = _f("auto", "'auto' (ddp under torchrun), 'none', 'ddp' or 'fsdp' (FSDP2; in one process "
                                "too: a process group of one, e.g. for bf16-fsdp on one GPU)")
    threads: int = _f(0, "CPU threads for torch (0 = torch's default)")
    eval_every: int = _f(100, "validate every N steps (and always at the end; 0 = only at the end)")
    eval_batches: int = _f(4, "validation pass size in global batches (the same windows at any world size)")
    log_every: int = _f(1, "write train metrics every N steps")
    checkpoint_every: int = _f(100, "checkpoint every N steps (and at the end; 0 = only at the end)")
    keep_checkpoints: int = _f(2, "how many recent checkpoints to keep")
    checkpoint_async: bool = _f(False, "write checkpoints in the background (torch.distributed.checkpoint.async_save, "
                                       "sharded format, also in one process): training waits only for a host-memory "
                                       "copy; a checkpoint becomes latest once every rank's write has finished")
    out_dir: str = _f("runs/tiny", "run folder: config.yaml, metrics.jsonl, checkpoints/")
    resume: bool = _f(False, "continue from the latest checkpoint in out_dir")
    overwrite: bool = _f(False, "replace the run already in out_dir (removes its files) instead of refusing to start")
    stop_at_step: int = _f(0, "stop after this step with a checkpoint, as if interrupted (0 = run all steps)")
    tensorboard: bool = _f(False, "also write TensorBoard events to out_dir/tb")
    progress: bool = _f(True, "show a progress bar")
    nan_guard: bool = _f(True, "stop on a non-finite loss or gradient and report the first bad layer")
    monitor_every: int = _f(0, "log MLP pre/post-activation RMS, max and non-finite share every N steps (0 = off)")


@dataclass
class EvalSet:
    """One extra held-out corpus: every document of ``source`` validates (none is trained on)."""
    source: str = _f("", "a .txt/.jsonl/.parquet file or folder, 'hf:NAME' or a standard corpus alias "
                         "(as data.source; not data.source itself)")
    text_field: str = _f("text", "text field of .jsonl/.parquet/HF records")
    hf_config: str | None = _f(None, "Hugging Face dataset config name")
    hf_split: str = _f("train", "Hugging Face dataset split to read")
    max_documents: int = _f(0, "read at most this many documents (0 = all): the whole set is tokenised once")

    def corpus_spec(self):
        from ..data import CorpusSpec

        return CorpusSpec(self.source, self.text_field, hf_config=self.hf_config, hf_split=self.hf_split,
                          max_documents=self.max_documents)


@dataclass
class EvalSection:
    sets: Dict[str, EvalSet] = _f(dict, "extra validation sets, name -> {source, text_field, hf_config, hf_split, "
                                        "max_documents} (or name -> source): loss and bpb on each at every eval point")


@dataclass
class Config:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)

    def __post_init__(self):
        self._model_configs: dict[str, ModelConfig] = {}
        _validate(self)

    def model_config(self, vocab_size: int | None = None) -> ModelConfig:
        """The run's ``ModelConfig``: ``model.preset`` with the ``model.*`` fields set, ``max_seq_len``
        defaulting to ``data.seq_len`` and ``vocab_size`` to the tokenizer's (``vocab_size``, or the one
        this config implies without training it). Built once per config and vocabulary size: the
        validation at construction, the trainer and ``--dry-run`` all get the same object."""
        vocab_size = vocab_size or self.implied_vocab_size()
        # The key holds the model settings too: a section edited after construction is rebuilt.
        key = json.dumps([vocab_size, self.data.seq_len, dataclasses.asdict(self.model)], sort_keys=True)
        if key not in self._model_configs:
            self._model_configs[key] = self.model.build_config(vocab_size, self.data.seq_len)
        return self._model_configs[key]

    def implied_vocab_size(self) -> int:
        """The vocabulary size known without a tokenizer: ``model.vocab_size`` if set, 256 for
        ``byte``, ``data.vocab_size`` for ``bpe``; a placeholder 256 for ``hf:`` tokenizers, whose
        size is known only once loaded (the trainer passes it to ``model_config``)."""
        if self.model.vocab_size:
            return self.model.vocab_size
        return self.data.vocab_size if self.data.tokenizer == "bpe" else 256

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        return _build([d])

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def grad_accum(self, world_size: int = 1) -> int:
        return self.train.batch_size // (self.train.micro_batch_size * world_size)


# --- validation ---------------------------------------------------------------

def _non_finite_floats(node, prefix: str = ""):
    """(dotted key, value) of every float in the config tree that is inf or NaN."""
    items = node.items() if isinstance(node, dict) else ((f.name, getattr(node, f.name)) for f in dataclasses.fields(node))
    for name, value in items:
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(value) or isinstance(value, dict):
            yield from _non_finite_floats(value, key + ".")
        elif isinstance(value, float) and not math.isfinite(value):
            yield key, value


def _validate(cfg: Config) -> None:
    d, o, t = cfg.data, cfg.optim, cfg.train

    def need(ok: bool, key: str, msg: str):
        if not ok:
            raise ConfigError(f"{key}: {msg}")

    # inf and NaN pass every range check written as a comparison (inf > 0); no float key may hold them.
    for key, value in _non_finite_floats(cfg):
        need(False, key, f"must be a finite number, got {value}")

    need(0 < d.val_fraction < 1, "data.val_fraction", f"must be in (0, 1), got {d.val_fraction}")
    need(d.seq_len >= 1, "data.seq_len", f"must be >= 1, got {d.seq_len}")
    need(d.max_documents >= 0, "data.max_documents", f"must be >= 0, got {d.max_documents}")
    need(d.tokenizer in ("bpe", "byte") or d.tokenizer.startswith("hf:"), "data.tokenizer",
         f"must be 'bpe', 'byte' or 'hf:NAME', got {d.tokenizer!r}")
    need(d.tokenizer != "bpe" or d.vocab_size >= 257, "data.vocab_size", f"must be >= 257 for BPE, got {d.vocab_size}")
    need(d.source != "", "data.source", "must not be empty")
    need(o.lr > 0 and math.isfinite(o.lr), "optim.lr", f"must be a positive number, got {o.lr}")
    need(0 <= o.min_lr_ratio <= 1, "optim.min_lr_ratio", f"must be in [0, 1], got {o.min_lr_ratio}")
    need(o.warmup_steps >= 0, "optim.warmup_steps", f"must be >= 0, got {o.warmup_steps}")
    need(0 <= o.beta1 < 1, "optim.beta1", f"must be in [0, 1), got {o.beta1}")
    need(0 <= o.beta2 < 1, "optim.beta2", f"must be in [0, 1), got {o.beta2}")
    need(o.eps > 0, "optim.eps", f"must be > 0, got {o.eps}")
    need(o.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
    need(o.grad_clip >= 0, "optim.grad_clip", f"must be >= 0, got {o.grad_clip}")
    for key in ("steps", "batch_size", "micro_batch_size", "eval_batches", "log_every", "keep_checkpoints"):
        need(getattr(t, key) >= 1, f"train.{key}", f"must be >= 1, got {getattr(t, key)}")
    for key in ("eval_every", "checkpoint_every", "stop_at_step", "threads"):
        need(getattr(t, key) >= 0, f"train.{key}", f"must be >= 0, got {getattr(t, key)}")
    need(t.batch_size % t.micro_batch_size == 0, "train.batch_size",
         f"must be a multiple of train.micro_batch_size={t.micro_batch_size}, got {t.batch_size}")
    need(t.precision in PRECISIONS, "train.precision", f"must be one of {'/'.join(PRECISIONS)}, got {t.precision!r}")
    need(t.precision != "bf16-fsdp" or t.parallel == "fsdp", "train.precision",
         f"bf16-fsdp is FSDP2's mixed precision and needs train.parallel=fsdp, got train.parallel={t.parallel!r} "
         "(use train.precision=bf16 for autocast)")
    mc_layers = cfg.model_config().n_layers
    need(0 <= t.activation_checkpointing <= mc_layers, "train.activation_checkpointing",
         f"must be 0 (off), 1 (every block) or k <= model.n_layers={mc_layers} (every k-th block), "
         f"got {t.activation_checkpointing}")
    need(isinstance(t.tensor_parallel, int) and t.tensor_parallel >= 1, "train.tensor_parallel",
         f"must be an integer >= 1, got {t.tensor_parallel!r}")
    need(t.tensor_parallel == 1 or t.parallel in ("auto", "fsdp"), "train.tensor_parallel",
         f"{t.tensor_parallel} runs with FSDP2 over the data dimension: set train.parallel=fsdp (or auto), "
         f"got train.parallel={t.parallel!r}")
    need(t.parallel in ("auto", "none", "ddp", "fsdp"), "train.parallel",
         f"must be auto/none/ddp/fsdp, got {t.parallel!r}")
    need(t.device == "auto" or t.device.split(":")[0] in ("cpu", "cuda", "mps", "xpu"), "train.device",
         f"must be auto/cpu/cuda[:N]/mps, got {t.device!r}")
    _validate_eval_sets(cfg, need)
    mc = cfg.model_config()
    need(mc.max_seq_len >= d.seq_len, "model.max_seq_len",
         f"must be >= data.seq_len={d.seq_len}, got {mc.max_seq_len}")


# A set's name becomes part of dotted keys (eval.sets.NAME.source) and of CSV column names.
_SET_NAME = re.compile(r"[A-Za-z0-9_-]+")


def _validate_eval_sets(cfg: Config, need) -> None:
    seen: dict[tuple, str] = {}
    for name, entry in cfg.eval.sets.items():
        key = f"eval.sets.{name}"
        need(bool(_SET_NAME.fullmatch(name)), key, "a set name may hold only letters, digits, '_' and '-'")
        need(entry.source != "", f"{key}.source", "must not be empty")
        need(entry.max_documents >= 0, f"{key}.max_documents", f"must be >= 0, got {entry.max_documents}")
        spec = (entry.source, entry.text_field, entry.hf_config, entry.hf_split, entry.max_documents)
        need(spec[:4] != (cfg.data.source, cfg.data.text_field, cfg.data.hf_config, cfg.data.hf_split),
             f"{key}.source", f"is data.source ({entry.source!r}), the training corpus: its held-out "
                              "split is already the main validation")
        need(spec not in seen, f"{key}", f"the same corpus as eval.sets.{seen.get(spec)}")
        seen[spec] = name


def _check_source(source: str, key: str) -> None:
    from ..data import STANDARD_CORPORA

    if source != "stdlib" and source not in STANDARD_CORPORA and not source.startswith("hf:") \
            and not Path(source).exists():
        raise ConfigError(f"{key}: no such file or folder: {source!r}")


def check_paths(cfg: Config) -> None:
    """File-system checks, run before training (not at construction, so presets that
    point at data on another machine can still be dry-run here)."""
    _check_source(cfg.data.source, "data.source")
    for name, entry in cfg.eval.sets.items():
        _check_source(entry.source, f"eval.sets.{name}.source")


# --- parsing: OmegaConf merges the layers onto the typed tree ---------------------

@functools.cache
def _schema() -> DictConfig:
    """The typed tree with the dataclass defaults (built once: OmegaConf.structured is slow)."""
    return OmegaConf.structured(Config)


def _build(layers: list) -> Config:
    """Merge ``layers`` (dicts or OmegaConf nodes, later wins) onto the dataclass tree, type-checked
    by OmegaConf, then build the dataclasses (which validate the values)."""
    layers = [_expand_set_shorthand(layer) for layer in layers]
    for layer in layers:
        _check_sections(layer, Config, "")
    try:
        merged = OmegaConf.merge(_schema(), *layers)  # merge copies: the cached schema stays as it is
        return OmegaConf.to_object(merged)
    except ConfigKeyError as e:
        raise ConfigError(_unknown_key_message(e.full_key or str(e.key))) from None
    except ValidationError as e:
        raise ConfigError(_type_message(e)) from None
    except OmegaConfBaseException as e:  # interpolation errors and the like
        raise ConfigError(f"{e.full_key or 'config'}: {e.msg}") from None


def _expand_set_shorthand(layer):
    """``eval.sets.NAME: SOURCE`` is short for ``eval.sets.NAME: {source: SOURCE}``."""
    if not isinstance(layer, (dict, DictConfig)) or not isinstance(layer.get("eval"), (dict, DictConfig)):
        return layer
    sets = layer["eval"].get("sets")
    if not isinstance(sets, (dict, DictConfig)) or not any(isinstance(v, str) for v in sets.values()):
        return layer
    layer = OmegaConf.create(layer) if isinstance(layer, dict) else layer.copy()
    for name, value in list(layer.eval.sets.items()):
        if isinstance(value, str):
            layer.eval.sets[name] = {"source": value}
    return layer


def _check_sections(node, cls, prefix: str) -> None:
    """Sections must be mappings. (OmegaConf's merge error for ``model=3`` names no key.)"""
    if not isinstance(node, (dict, DictConfig)):
        keys = ", ".join(f.name for f in dataclasses.fields(cls))
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a section (a mapping of {keys}), "
                          f"got {node!r}")
    hints = typing.get_type_hints(cls)
    for name in node:
        if dataclasses.is_dataclass(hints.get(name)) and node[name] is not None:
            _check_sections(node[name], hints[name], f"{prefix}{name}.")


def _annotation(key: str):
    """The declared type of dotted ``key`` in the Config tree (None past a plain mapping)."""
    tp: Any = Config
    for part in key.split("."):
        if typing.get_origin(tp) is dict and dataclasses.is_dataclass(typing.get_args(tp)[1]):
            tp = typing.get_args(tp)[1]  # a named entry of a typed mapping (eval.sets.NAME)
            continue
        if not dataclasses.is_dataclass(tp):
            return None
        tp = typing.get_type_hints(tp).get(part)
    return tp


def _type_name(tp) -> str:
    if typing.get_origin(tp) in _UNIONS:
        return " or ".join("None" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is dict or tp is dict:
        return "mapping"
    if dataclasses.is_dataclass(tp):
        return "section"
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _type_message(e: ValidationError) -> str:
    key = e.full_key or "config"
    tp = _annotation(key) if e.full_key else Config
    if tp is None:
        return f"{key}: {e.msg}"
    if dataclasses.is_dataclass(tp):
        keys = ", ".join(f.name for f in dataclasses.fields(tp))
        return f"{key}: expected a section (a mapping of {keys}), got {e.value!r}"
    return f"{key}: expected {_type_name(tp)}, got {e.value!r}"


def _unknown_key_message(key: str) -> str:
    parent, _, name = key.rpartition(".")
    tp = _annotation(parent) if parent else Config
    valid = [f.name for f in dataclasses.fields(tp)] if dataclasses.is_dataclass(tp) else []
    return _unknown(key, valid)


def _unknown(key: str, valid: list[str]) -> str:
    parent, _, name = key.rpartition(".")
    prefix = f"{parent}." if parent else ""
    close = difflib.get_close_matches(name, valid, n=1)
    if close:
        return f"{key}: unknown key; did you mean {prefix}{close[0]}?"
    return f"{key}: unknown key; valid keys{' in ' + parent if parent else ''}: {', '.join(valid)}"


def _reject_unknown_keys(d: dict, valid: list[str], section: str) -> None:
    for name in d:
        if name not in valid:
            raise ConfigError(_unknown(f"{section}.{name}", valid))


def _parse_override(item: str) -> DictConfig:
    """``"optim.lr=3e-4"`` -> ``{optim: {lr: 3e-4}}``; the value is read as YAML (OmegaConf's
    loader, which reads ``3e-4`` as a float; quote a value to keep it a string)."""
    key, eq, _ = item.partition("=")
    if not eq or not key.strip():
        raise ConfigError(f"{item}: overrides look like key=value (e.g. optim.lr=3e-4)")
    if "" in key.strip().split("."):  # OmegaConf drops empty parts and then blames the parent section
        raise ConfigError(f"{key.strip()}: not a valid key: a dotted key has no empty parts (an eval.sets name "
                          "holds only letters, digits, '_' and '-')")
    try:
        return OmegaConf.from_dotlist([item])
    except yaml.YAMLError as e:
        raise ConfigError(f"{key}: value is not valid YAML ({_one_line(getattr(e, 'problem', None) or e)}): "
                          f"{item.partition('=')[2]!r}") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{key}: {_one_line(e)}") from None


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


# --- presets and loading ------------------------------------------------------

def preset_path(name: str) -> Path:
    return Path(__file__).resolve().parent.parent / "configs" / f"{name}.yaml"


def list_presets() -> list[str]:
    return sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


def _read_yaml(path: Path) -> DictConfig:
    try:
        data = OmegaConf.load(path)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, DictConfig):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_config(config: str | Path | dict | Config | None = None, overrides: list[str] = ()) -> Config:
    """A Config from a preset name, a YAML path, a dict or a Config, then dotted overrides."""
    if isinstance(config, Config):
        base: Any = config.to_dict()
    elif isinstance(config, dict):
        base = config
    elif config is None:
        base = {}
    else:
        path = Path(config)
        if not path.suffix and not path.exists():
            if not preset_path(str(config)).exists():
                raise ConfigError(f"--config: no preset or file {str(config)!r} (presets: {', '.join(list_presets())})")
            path = preset_path(str(config))
        if not path.exists():
            raise ConfigError(f"--config: no such file {str(path)!r}")
        base = _read_yaml(path)
    return _build([base, *(_parse_override(item) for item in overrides)])


def config_help() -> str:
    """Every key with its type, default and meaning (the epilog of ``polycom train --help``)."""
    lines = []
    for section in dataclasses.fields(Config):
        cls = typing.get_type_hints(Config)[section.name]
        hints = typing.get_type_hints(cls)
        lines.append(f"{section.name}:")
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            key = f"{section.name}.{f.name}"
            lines.append(f"  {key:38s} {_type_name(hints[f.name]):14s} default {default!r}")
            lines.append(f"      {f.metadata.get('help', '')}")
    return "\n".join(lines)
