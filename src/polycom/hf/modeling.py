"""polycom's Transformer as a Hugging Face model: ``PolyComConfig`` / ``PolyComForCausalLM``.

The HF classes are thin wrappers: the config stores the fields of
``polycom.models.ModelConfig`` (validated by it at construction), and the model
holds a ``polycom.models.Transformer`` under ``.model``. So a checkpoint saved
here has the same parameter names as a polycom checkpoint with a ``model.``
prefix, and ``from_polycom`` exports a trained model without copying code.

Generation recomputes the whole prefix at each step (no KV cache): correct,
O(T^2) per sequence, fine for evaluation-sized models.
"""

from __future__ import annotations

import dataclasses
import inspect

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from ..models import PRESETS, ModelConfig, RotaryEmbedding, Transformer

__all__ = ["PolyComConfig", "PolyComForCausalLM", "from_polycom"]

_V5 = int(transformers.__version__.split(".")[0]) >= 5


def _default(f: dataclasses.Field):
    """PolyComConfig's default for ModelConfig field ``f``: its own, else the "debug" preset's shape."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return PRESETS["debug"][f.name]


# ModelConfig is the one list of fields; PolyComConfig takes each as a keyword argument.
_FIELDS = {f.name: f for f in dataclasses.fields(ModelConfig)}


class PolyComConfig(PretrainedConfig):
    """HF config holding a ``ModelConfig``'s fields (``moe`` as a dict). Defaults: ModelConfig's, and the
    "debug" preset's shape for the fields ModelConfig requires."""

    model_type = "polycom"
    attribute_map = {
        "hidden_size": "d_model",
        "num_hidden_layers": "n_layers",
        "num_attention_heads": "n_heads",
        "max_position_embeddings": "max_seq_len",
    }

    def __init__(self, **kwargs):
        for name, f in _FIELDS.items():
            setattr(self, name, kwargs.pop(name) if name in kwargs else _default(f))
        self.activation_kwargs = dict(self.activation_kwargs or {})
        if self.moe is not None and not isinstance(self.moe, dict):
            self.moe = dataclasses.asdict(self.moe)
        kwargs["tie_word_embeddings"] = self.tie_embeddings
        kwargs.setdefault("use_cache", False)
        super().__init__(**kwargs)
        self.to_model_config()  # validate now: errors name the ModelConfig field

    def to_model_config(self) -> ModelConfig:
        return ModelConfig.from_dict({name: getattr(self, name) for name in _FIELDS})

    @classmethod
    def from_model_config(cls, config: ModelConfig, **kwargs) -> "PolyComConfig":
        return cls(**config.to_dict(), **kwargs)


# The signature help() and inspect show: one keyword per ModelConfig field, then PretrainedConfig's.
PolyComConfig.__init__.__signature__ = inspect.Signature(
    [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=_default(f)) for name, f in _FIELDS.items()]
    + [inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)])


class PolyComForCausalLM(PreTrainedModel, GenerationMixin):
    """Causal LM head model; ``labels`` follow the HF convention (shifted inside)."""

    config_class = PolyComConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["Block"]
    _supports_sdpa = True
    _tied_weights_keys = {"model.lm_head.weight": "model.tok_embeddings.weight"} if _V5 else ["model.lm_head.weight"]

    def __init__(self, config: PolyComConfig):
        super().__init__(config)
        self.model = Transformer(config.to_model_config())
        self.post_init()

    def _init_weights(self, module):
        # polycom initialises its weights in its constructor (small/normal init,
        # scaled residual outputs, PolyCom coefficients); HF's generic per-Linear
        # init would undo that. Only the RoPE tables, non-persistent buffers left
        # empty when HF builds the model on the meta device, need filling here.
        if isinstance(module, RotaryEmbedding):
            module.reset_buffers()

    def get_input_embeddings(self):
        return self.model.tok_embeddings

    def set_input_embeddings(self, value):
        self.model.tok_embeddings = value

    def get_output_embeddings(self):
        return self.model.lm_head

    def set_output_embeddings(self, value):
        self.model.lm_head = value

    def forward(self, input_ids=None, attention_mask=None, labels=None, past_key_values=None,
                use_cache=None, return_dict=None, **kwargs):
        if attention_mask is not None:
            _check_right_padded(attention_mask)
        targets = None
        if labels is not None:
            # HF labels are the inputs; the model predicts token t+1 at position t.
            ignore = labels.new_full((labels.shape[0], 1), -100)
            targets = torch.cat([labels[:, 1:], ignore], dim=1)
        out = self.model(input_ids, targets)
        return CausalLMOutputWithPast(loss=out.loss, logits=out.logits)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        # No KV cache: always feed the full sequence.
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def _supports_default_dynamic_cache(self) -> bool:  # transformers >= 4.42
        return False


def _check_right_padded(mask: torch.Tensor) -> None:
    """Causal attention makes right padding harmless; left padding would be attended to."""
    m = mask.to(torch.bool)
    if (~m[:, :-1] & m[:, 1:]).any():
        raise ValueError("PolyComForCausalLM supports right padding only (attention_mask must be 1s then 0s); "
                         "set tokenizer.padding_side = 'right'")


def from_polycom(model: Transformer) -> PolyComForCausalLM:
    """Wrap a trained polycom ``Transformer`` (weights shared, not copied) for ``save_pretrained``."""
    with torch.device("meta"):  # the wrapper's own Transformer is replaced at once: allocate nothing
        hf = PolyComForCausalLM(PolyComConfig.from_model_config(model.config))
    hf.model = model
    return hf


def register() -> None:
    """Make ``AutoConfig`` / ``AutoModelForCausalLM`` know model_type "polycom" (idempotent)."""
    try:
        AutoConfig.register("polycom", PolyComConfig)
    except ValueError:
        pass  # already registered
    try:
        AutoModelForCausalLM.register(PolyComConfig, PolyComForCausalLM)
    except ValueError:
        pass
