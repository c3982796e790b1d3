"""Hugging Face transformers integration (optional extra: ``pip install polycom[hf]``).

Importing this module registers model_type "polycom" with ``AutoConfig`` /
``AutoModelForCausalLM`` and polycom's activation names in ``ACT2FN``::

    import polycom.hf
    from polycom.hf import PolyComConfig, PolyComForCausalLM, swap_activation
    model = PolyComForCausalLM(PolyComConfig(activation="polynorm"))
    model.save_pretrained("out")                      # safetensors, config.json with auto_map, model code
    model = AutoModelForCausalLM.from_pretrained("out")
    # where polycom is not installed: from_pretrained("out", trust_remote_code=True), plain PyTorch

    llama = LlamaForCausalLM(LlamaConfig(...))
    print(swap_activation(llama, "polynorm"))         # gated PolyNorm in every MLP
"""

from ..extras import require

# One line naming the extra, before a bare ModuleNotFoundError (datasets, also in the extra, is
# for data loading: this package needs transformers only).
require("hf", "polycom.hf", modules=("transformers",))

from .modeling import PolyComConfig, PolyComForCausalLM, from_polycom, register  # noqa: E402
from .swap import GATED_AS_ACT_FN, SwapReport, make_portable, register_hf_activations, swap_activation  # noqa: E402

register()
REGISTERED_ACTIVATIONS = register_hf_activations()

__all__ = [
    "PolyComConfig",
    "PolyComForCausalLM",
    "from_polycom",
    "register",
    "register_hf_activations",
    "swap_activation",
    "make_portable",
    "SwapReport",
    "GATED_AS_ACT_FN",
    "REGISTERED_ACTIVATIONS",
]
