"""The training configuration: one dataclass tree, YAML presets, dotted overrides.

    cfg = load_config("tiny", ["model.activation=polynorm", "optim.lr=3e-4"])

Every field carries its help text (``polycom train --help`` prints them all).
Each section validates itself at construction and every error names the full
key (``optim.lr``), so a bad config fails before any data or model is touched.
The checks that need the file system (does ``data.source`` exist?) run in
``check_paths``, called by the trainer before it starts.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ConfigError", "Config", "ModelSection", "DataSection", "OptimSection", "TrainSection",
           "load_config", "config_help", "preset_path", "list_presets"]


class ConfigError(ValueError):
    """A configuration problem; the message starts with the offending key."""


def _f(default, help: str):
    kw = {"default_factory": default} if callable(default) else {"default": default}
    return field(metadata={"help": help}, **kw)


@dataclass
class ModelSection:
    """Maps onto ``polycom.models.ModelConfig``: a preset plus field overrides (None = preset value)."""

    preset: str = _f("tiny", "model preset from polycom.models.PRESETS")
    vocab_size: int | None = _f(None, "None = the tokenizer's vocabulary size")
    n_layers: int | None = _f(None, "transformer blocks")
    d_model: int | None = _f(None, "residual width")
    n_heads: int | None = _f(None, "attention heads")
    n_kv_heads: int | None = _f(None, "key/value heads (grouped-query attention)")
    ffn_hidden: int | None = _f(None, "non-gated MLP width (gated activations get 2/3)")
    activation: str | None = _f(None, "MLP activation, a registry name (polycom activations)")
    activation_kwargs: dict | None = _f(None, "keyword arguments of the activation")
    max_seq_len: int | None = _f(None, "None = data.seq_len")
    rope_theta: float | None = _f(None, "RoPE base")
    qk_norm: bool | None = _f(None, "RMS-normalise queries and keys")
    tie_embeddings: bool | None = _f(None, "share input and output embeddings")
    init: str | None = _f(None, "'normal' (init_std) or 'small' (sqrt(2/(5d)))")
    init_std: float | None = _f(None, "std of the 'normal' init")
    norm_eps: float | None = _f(None, "RMSNorm epsilon")
    dropout: float | None = _f(None, "dropout probability")
    ffn_multiple_of: int | None = _f(None, "MLP widths are rounded to this multiple")
    moe: dict | None = _f(None, "MoEConfig fields merged into the preset's (e.g. {top_k: 1})")

    def overrides(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "preset" and v is not None}

    def build_config(self, vocab_size: int | None = None, seq_len: int | None = None):
        """The ``ModelConfig``; ``vocab_size``/``seq_len`` fill the fields left None."""
        from ..models import model_config

        kw = self.overrides()
        if vocab_size is not None:
            if "vocab_size" in kw and kw["vocab_size"] < vocab_size:
                raise ConfigError(f"model.vocab_size={kw['vocab_size']} is smaller than the tokenizer's {vocab_size}")
            kw.setdefault("vocab_size", vocab_size)
        if seq_len is not None:
            kw.setdefault("max_seq_len", seq_len)
        try:
            return model_config(self.preset, **kw)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"model: {e}") from None


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
    precision: str = _f("auto", "'auto' (bf16 autocast on CUDA, else fp32), 'bf16' or 'fp32'")
    compile: bool = _f(False, "torch.compile the model")
    parallel: str = _f("auto", "'auto' (ddp under torchrun), 'none', 'ddp' or 'fsdp' (FSDP2)")
    threads: int = _f(0, "CPU threads for torch (0 = torch's default)")
    eval_every: int = _f(100, "validate every N steps (and always at the end; 0 = only at the end)")
    eval_batches: int = _f(4, "validation pass size in global batches (the same windows at any world size)")
    log_every: int = _f(1, "write train metrics every N steps")
    checkpoint_every: int = _f(100, "checkpoint every N steps (and at the end; 0 = only at the end)")
    keep_checkpoints: int = _f(2, "how many recent checkpoints to keep")
    out_dir: str = _f("runs/tiny", "run folder: config.yaml, metrics.jsonl, checkpoints/")
    resume: bool = _f(False, "continue from the latest checkpoint in out_dir")
    overwrite: bool = _f(False, "replace the run already in out_dir (removes its files) instead of refusing to start")
    stop_at_step: int = _f(0, "stop after this step with a checkpoint, as if interrupted (0 = run all steps)")
    tensorboard: bool = _f(False, "also write TensorBoard events to out_dir/tb")
    progress: bool = _f(True, "show a progress bar")
    nan_guard: bool = _f(True, "stop on a non-finite loss or gradient and report the first bad layer")


@dataclass
class Config:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)

    def __post_init__(self):
        _validate(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        return _build(cls, d, "")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def grad_accum(self, world_size: int = 1) -> int:
        return self.train.batch_size // (self.train.micro_batch_size * world_size)


# --- validation ---------------------------------------------------------------

def _validate(cfg: Config) -> None:
    d, o, t = cfg.data, cfg.optim, cfg.train

    def need(ok: bool, key: str, msg: str):
        if not ok:
            raise ConfigError(f"{key}: {msg}")

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
    need(t.precision in ("auto", "bf16", "fp32"), "train.precision", f"must be auto/bf16/fp32, got {t.precision!r}")
    need(t.parallel in ("auto", "none", "ddp", "fsdp"), "train.parallel",
         f"must be auto/none/ddp/fsdp, got {t.parallel!r}")
    need(t.device == "auto" or t.device.split(":")[0] in ("cpu", "cuda", "mps", "xpu"), "train.device",
         f"must be auto/cpu/cuda[:N]/mps, got {t.device!r}")
    mc = cfg.model.build_config(vocab_size=cfg.model.vocab_size or 256, seq_len=d.seq_len)
    need(mc.max_seq_len >= d.seq_len, "model.max_seq_len",
         f"must be >= data.seq_len={d.seq_len}, got {mc.max_seq_len}")


def check_paths(cfg: Config) -> None:
    """File-system checks, run before training (not at construction, so presets that
    point at data on another machine can still be dry-run here)."""
    from ..data import STANDARD_CORPORA

    s = cfg.data.source
    if s != "stdlib" and s not in STANDARD_CORPORA and not s.startswith("hf:") and not Path(s).exists():
        raise ConfigError(f"data.source: no such file or folder: {s!r}")


# --- building from dicts, with type checks ------------------------------------

def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{key}: expected {' or '.join(_type_name(a) for a in args)}, "
                          f"got {type(value).__name__} ({value!r})")
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        dict: isinstance(value, dict),
    }.get(tp)
    if ok is None:
        raise ConfigError(f"{key}: unsupported annotation {tp}")
    if not ok:
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} ({value!r})")
    return float(value) if tp is float else value


def _build(cls, d: dict, prefix: str):
    if not isinstance(d, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - fields)
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown config key (valid keys"
                          f"{' in ' + prefix.rstrip('.') if prefix else ''}: {', '.join(sorted(fields))})")
    kw = {}
    for name, value in d.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kw[name] = _build(tp, value or {}, f"{prefix}{name}.")
        else:
            kw[name] = _coerce(value, tp, prefix + name)
    return cls(**kw)


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    node = tree
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: {part!r} is not a section")
    node[last] = value


def parse_override(item: str) -> tuple[str, Any]:
    """``"optim.lr=3e-4"`` -> ``("optim.lr", 0.0003)``; values are parsed as YAML scalars."""
    if "=" not in item:
        raise ConfigError(f"{item}: overrides look like key=value (e.g. optim.lr=3e-4)")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    if isinstance(value, str) and _looks_like_float(value):
        value = float(value)  # YAML 1.1 reads "3e-4" as a string
    return key.strip(), value


def _looks_like_float(s: str) -> bool:
    try:
        float(s)
        return s.strip().lower() not in ("nan", "inf", "-inf", "infinity")
    except ValueError:
        return False


# --- presets and loading ------------------------------------------------------

def preset_path(name: str) -> Path:
    return Path(__file__).resolve().parent.parent / "configs" / f"{name}.yaml"


def list_presets() -> list[str]:
    return sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    data = _fix_floats(data)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _fix_floats(node):
    if isinstance(node, dict):
        return {k: _fix_floats(v) for k, v in node.items()}
    if isinstance(node, str) and _looks_like_float(node):
        return float(node)
    return node


def load_config(config: str | Path | dict | Config | None = None, overrides: list[str] = ()) -> Config:
    """A Config from a preset name, a YAML path, a dict or a Config, then dotted overrides."""
    if isinstance(config, Config):
        tree = config.to_dict()
    elif isinstance(config, dict):
        tree = dict(config)
    elif config is None:
        tree = {}
    else:
        path = Path(config)
        if not path.suffix and not path.exists():
            if not preset_path(str(config)).exists():
                raise ConfigError(f"--config: no preset or file {str(config)!r} (presets: {', '.join(list_presets())})")
            path = preset_path(str(config))
        if not path.exists():
            raise ConfigError(f"--config: no such file {str(path)!r}")
        tree = _read_yaml(path)
    tree = {k: (dict(v) if isinstance(v, dict) else v) for k, v in tree.items()}
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(tree, key, value)
    return Config.from_dict(tree)


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
