"""``PolyComConfig``: the Hugging Face config of polycom's decoder (model_type "polycom").

Copied verbatim into every model folder polycom saves; imports only transformers.
The fields are those of ``polycom.models.ModelConfig`` (``moe`` as a dict). With
polycom importable the config is validated by ModelConfig (errors name the field)
and records the MLP widths polycom's rules derive (``intermediate_size``,
``moe_intermediate_size``), so a reader without polycom builds the same shapes.
"""

from __future__ import annotations

try:
    from polycom.models import ModelConfig
except ImportError:
    ModelConfig = None

from transformers import PretrainedConfig

__all__ = ["PolyComConfig", "DEFAULTS"]

# ModelConfig's defaults; its required fields take the shape of polycom's "debug" preset.
# (A polycom test checks this against ModelConfig and the preset.)
DEFAULTS = {
    "vocab_size": 256, "n_layers": 2, "d_model": 64, "n_heads": 4, "max_seq_len": 64,
    "n_kv_heads": None, "ffn_hidden": None, "activation": "gelu", "activation_kwargs": {},
    "rope_theta": 10000.0, "qk_norm": False, "tie_embeddings": False, "init": "normal", "init_std": 0.02,
    "norm_eps": 1e-05, "dropout": 0.0, "ffn_multiple_of": 64, "moe": None,
}
DERIVED = ("intermediate_size", "moe_intermediate_size")  # widths polycom derives; read from the file without it


class PolyComConfig(PretrainedConfig):
    """HF config holding a ``ModelConfig``'s fields (``moe`` as a dict)."""

    model_type = "polycom"
    attribute_map = {
        "hidden_size": "d_model",
        "num_hidden_layers": "n_layers",
        "num_attention_heads": "n_heads",
        "max_position_embeddings": "max_seq_len",
    }

    def __init__(self, **kwargs):
        for name, default in DEFAULTS.items():
            value = kwargs.pop(name) if name in kwargs else default
            setattr(self, name, dict(value) if isinstance(value, dict) else value)
        for name in DERIVED:
            setattr(self, name, kwargs.pop(name, None))
        self.activation_kwargs = dict(self.activation_kwargs or {})
        if self.moe is not None and not isinstance(self.moe, dict):
            self.moe = {k: getattr(self.moe, k) for k in self.moe.__dataclass_fields__}
        self.use_cache = kwargs.pop("use_cache", True)
        kwargs["tie_word_embeddings"] = self.tie_embeddings
        super().__init__(**kwargs)
        if ModelConfig is not None:
            cfg = self.to_model_config()  # validate now: errors name the ModelConfig field
            self.intermediate_size, self.moe_intermediate_size = cfg.mlp_hidden, cfg.expert_hidden

    @property
    def num_key_value_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_model_config(self):
        """The ``polycom.models.ModelConfig`` of these fields (needs polycom)."""
        if ModelConfig is None:
            raise ImportError("PolyComConfig.to_model_config needs the polycom package: pip install polycom")
        return ModelConfig.from_dict({name: getattr(self, name) for name in DEFAULTS})

    @classmethod
    def from_model_config(cls, config, **kwargs) -> "PolyComConfig":
        return cls(**config.to_dict(), **kwargs)
