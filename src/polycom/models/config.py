"""Model configuration: two dataclasses, validated at construction.

``ModelConfig`` describes the dense decoder; ``MoEConfig`` (optional) turns
every MLP into a mixture of experts. Errors name the field and its valid range
so a bad sweep config fails before any tensor is allocated. ``to_dict`` /
``from_dict`` round-trip through plain JSON-able dicts (saved in checkpoints).

MLP widths (``ffn_hidden``, ``MoEConfig.expert_hidden``) are the widths of the
*non-gated* MLP, the paper's reference: a gated activation (SwiGLU, gated
PolyNorm) gets 2/3 of it, rounded to ``ffn_multiple_of``, so that its three
matrices hold as many parameters as the two non-gated ones (d = 2048: 8256 vs
5504). ``ModelConfig.mlp_hidden`` / ``MoEConfig.resolved_expert_hidden`` give
the width actually built for the configured activation.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from ..registry import activation_info, list_activations
from .mlp import matched_hidden  # the one width-matching rule (also used by hf.swap)

__all__ = ["ModelConfig", "MoEConfig", "matched_hidden", "default_ffn_hidden", "default_expert_hidden"]

INITS = ("normal", "small")
ROUTERS = ("softmax", "act_softmax")
COEFFICIENTS = ("per_layer", "per_expert")
ROUTER_ACTIVATIONS = ("tanh", "sigmoid", "identity")  # plus every non-gated registry name


def default_ffn_hidden(d_model: int, multiple_of: int) -> int:
    """Default non-gated width: 3/2 of the Llama gated width ceil(8d/3) to ``multiple_of``.

    This is how the paper's 8256 arises at d = 2048 (SwiGLU 5504 = 86 * 64,
    non-gated 3/2 * 5504 = 8256, about 4d), and it makes the gated width an
    exact 2/3, so dense parameter counts match to the activation coefficients.
    """
    gated = multiple_of * math.ceil(8 * d_model / 3 / multiple_of)
    return gated * 3 // 2


def default_expert_hidden(d_model: int, multiple_of: int) -> int:
    """Default non-gated expert width: 3/2 of a gated width d/2 (d = 2048: 1536 / 1024, OLMoE)."""
    gated = multiple_of * math.ceil(d_model / 2 / multiple_of)
    return gated * 3 // 2


def _check_int(obj, name: str, low: int = 1) -> None:
    v = getattr(obj, name)
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{type(obj).__name__}.{name} must be an int, got {type(v).__name__} ({v!r})")
    if v < low:
        raise ValueError(f"{type(obj).__name__}.{name} must be >= {low}, got {v}")


def _check_float(obj, name: str, low: float, high: float | None = None, low_open: bool = False) -> None:
    v = getattr(obj, name)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{type(obj).__name__}.{name} must be a float, got {type(v).__name__} ({v!r})")
    bad_low = v <= low if low_open else v < low
    if bad_low or (high is not None and v > high) or not math.isfinite(v):
        rng = f"{'(' if low_open else '['}{low}, {high if high is not None else 'inf'}{']' if high is not None else ')'}"
        raise ValueError(f"{type(obj).__name__}.{name} must be in {rng}, got {v}")
    setattr(obj, name, float(v))


def _check_choice(obj, name: str, choices) -> None:
    v = getattr(obj, name)
    if v not in choices:
        raise ValueError(f"{type(obj).__name__}.{name} must be one of {list(choices)}, got {v!r}")


def _check_activation(obj, name: str, allow_gated: bool = True) -> None:
    v = getattr(obj, name)
    try:
        info = activation_info(v)
    except (ValueError, TypeError):
        valid = list_activations() if allow_gated else list_activations(gated=False)
        raise ValueError(f"{type(obj).__name__}.{name}={v!r} is not a registered activation; valid: {valid}") from None
    if info.gated and not allow_gated:
        raise ValueError(f"{type(obj).__name__}.{name}={v!r} is gated; valid: {list_activations(gated=False)}")
    setattr(obj, name, info.name)


def _about(help: str, default=dataclasses.MISSING, factory=dataclasses.MISSING):
    """A field with its help text (shown by ``polycom train --help``)."""
    return field(default=default, default_factory=factory, metadata={"help": help})


@dataclass
class MoEConfig:
    """Mixture-of-experts MLP (OLMoE-style token-choice top-k, dropless).

    Fields:
        num_experts, top_k: each token goes to ``top_k`` of ``num_experts`` experts.
        expert_hidden: non-gated expert width (None -> ``default_expert_hidden``).
        aux_loss_weight: load-balancing loss weight (OLMoE: 0.01).
        z_loss_weight: router z-loss weight (OLMoE: 0.001).
        shared_expert: add one always-on expert of the same width.
        router: "softmax" (softmax(W x)) or "act_softmax" (softmax(act(W x) / tau),
            the activation dense-to-sparse gate of Nguyen et al., ICML 2024).
        router_activation, router_temperature: act and tau of "act_softmax".
        coefficients: activation coefficients "per_layer" (official PolyCom)
            or "per_expert" (Motif).
        renormalize: rescale the top-k probabilities to sum to 1.
    """

    num_experts: int = 8
    top_k: int = 2
    expert_hidden: int | None = None
    aux_loss_weight: float = 0.01
    z_loss_weight: float = 0.001
    shared_expert: bool = False
    router: str = "softmax"
    router_activation: str = "tanh"
    router_temperature: float = 1.0
    coefficients: str = "per_layer"
    renormalize: bool = True

    def __post_init__(self):
        _check_int(self, "num_experts")
        _check_int(self, "top_k")
        if self.top_k > self.num_experts:
            raise ValueError(f"MoEConfig.top_k must be in [1, num_experts={self.num_experts}], got {self.top_k}")
        if self.expert_hidden is not None:
            _check_int(self, "expert_hidden")
        _check_float(self, "aux_loss_weight", 0.0)
        _check_float(self, "z_loss_weight", 0.0)
        _check_float(self, "router_temperature", 0.0, low_open=True)
        _check_choice(self, "router", ROUTERS)
        _check_choice(self, "coefficients", COEFFICIENTS)
        if self.router_activation not in ROUTER_ACTIVATIONS:
            _check_activation(self, "router_activation", allow_gated=False)
        for name in ("shared_expert", "renormalize"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"MoEConfig.{name} must be a bool, got {getattr(self, name)!r}")

    def resolved_expert_hidden(self, d_model: int, activation: str, multiple_of: int) -> int:
        """Expert width built for ``activation`` (2/3 of the non-gated width if gated)."""
        base = self.expert_hidden or default_expert_hidden(d_model, multiple_of)
        return matched_hidden(base, activation_info(activation).mlp_kind, multiple_of, d_model)


@dataclass
class ModelConfig:
    """Dense decoder-only LM (Llama-style: pre-norm RMSNorm, RoPE, no biases).

    ``ffn_hidden`` is the non-gated MLP width (None -> ``default_ffn_hidden``:
    8256 at d = 2048); gated activations get 2/3 of it (see ``mlp_hidden``).
    ``init``: "normal" (std ``init_std``) or "small" (std sqrt(2 / (5 d)), the
    official dense runs); residual output projections are further scaled by
    1 / sqrt(2 n_layers) in both. ``moe`` replaces every MLP by an MoE block.
    """

    # The single list of model settings: polycom.train's ModelSection and the Hugging Face
    # PolyComConfig are derived from these fields (and their help texts).
    vocab_size: int = _about("vocabulary size (rows of the embedding)")
    n_layers: int = _about("transformer blocks")
    d_model: int = _about("residual width")
    n_heads: int = _about("attention heads")
    max_seq_len: int = _about("longest sequence (RoPE table length)")
    n_kv_heads: int | None = _about("key/value heads (grouped-query attention; None = n_heads)", None)
    ffn_hidden: int | None = _about("non-gated MLP width (gated activations get 2/3; None = default_ffn_hidden)", None)
    activation: str = _about("MLP activation, a registry name (polycom activations)", "gelu")
    activation_kwargs: dict = _about("keyword arguments of the activation", factory=dict)
    rope_theta: float = _about("RoPE base", 10000.0)
    qk_norm: bool = _about("RMS-normalise queries and keys", False)
    tie_embeddings: bool = _about("share input and output embeddings", False)
    init: str = _about("'normal' (init_std) or 'small' (sqrt(2/(5d)))", "normal")
    init_std: float = _about("std of the 'normal' init", 0.02)
    norm_eps: float = _about("RMSNorm epsilon", 1e-5)
    dropout: float = _about("dropout probability", 0.0)
    ffn_multiple_of: int = _about("MLP widths are rounded to this multiple", 64)
    moe: MoEConfig | None = _about("mixture-of-experts MLP (MoEConfig; None = dense)", None)

    def __post_init__(self):
        for name in ("vocab_size", "n_layers", "d_model", "n_heads", "max_seq_len", "ffn_multiple_of"):
            _check_int(self, name)
        if self.d_model % self.n_heads:
            raise ValueError(
                f"ModelConfig.n_heads must divide d_model={self.d_model} (valid: a divisor of {self.d_model}), "
                f"got {self.n_heads}"
            )
        if (self.d_model // self.n_heads) % 2:
            raise ValueError(f"ModelConfig.n_heads must leave an even head dim for RoPE; d_model/n_heads = "
                             f"{self.d_model // self.n_heads}")
        if self.n_kv_heads is not None:
            _check_int(self, "n_kv_heads")
            if self.n_kv_heads > self.n_heads or self.n_heads % self.n_kv_heads:
                raise ValueError(f"ModelConfig.n_kv_heads must divide n_heads={self.n_heads} "
                                 f"(valid: a divisor in [1, {self.n_heads}]), got {self.n_kv_heads}")
        if self.ffn_hidden is not None:
            _check_int(self, "ffn_hidden")
        _check_activation(self, "activation")
        if not isinstance(self.activation_kwargs, dict):
            raise TypeError(f"ModelConfig.activation_kwargs must be a dict, got {type(self.activation_kwargs).__name__}")
        try:
            activation_info(self.activation).build(**self.activation_kwargs)
        except TypeError as e:
            raise ValueError(f"ModelConfig.activation_kwargs {self.activation_kwargs} are not valid for "
                             f"activation {self.activation!r}: {e}") from None
        _check_float(self, "rope_theta", 0.0, low_open=True)
        _check_float(self, "init_std", 0.0, low_open=True)
        _check_float(self, "norm_eps", 0.0, low_open=True)
        _check_float(self, "dropout", 0.0, 1.0)
        if self.dropout == 1.0:
            raise ValueError("ModelConfig.dropout must be in [0, 1), got 1.0")
        _check_choice(self, "init", INITS)
        for name in ("qk_norm", "tie_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"ModelConfig.{name} must be a bool, got {getattr(self, name)!r}")
        if isinstance(self.moe, dict):
            self.moe = MoEConfig(**self.moe)
        if self.moe is not None and not isinstance(self.moe, MoEConfig):
            raise TypeError(f"ModelConfig.moe must be a MoEConfig, a dict or None, got {type(self.moe).__name__}")

    # Derived sizes ---------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def gated(self) -> bool:
        return activation_info(self.activation).gated

    @property
    def mlp_hidden(self) -> int:
        """Dense MLP width built for ``activation`` (2/3 of ``ffn_hidden`` if gated)."""
        base = self.ffn_hidden or default_ffn_hidden(self.d_model, self.ffn_multiple_of)
        return matched_hidden(base, activation_info(self.activation).mlp_kind, self.ffn_multiple_of, self.d_model)

    @property
    def expert_hidden(self) -> int | None:
        if self.moe is None:
            return None
        return self.moe.resolved_expert_hidden(self.d_model, self.activation, self.ffn_multiple_of)

    @property
    def resolved_init_std(self) -> float:
        return math.sqrt(2 / (5 * self.d_model)) if self.init == "small" else self.init_std

    # Serialisation ---------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        _reject_unknown(cls, d)
        if d.get("moe") is not None:
            moe = dict(d["moe"])
            _reject_unknown(MoEConfig, moe, prefix="moe.")
            d["moe"] = MoEConfig(**moe)
        return cls(**d)


def _reject_unknown(cls, d: dict, prefix: str = "") -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}.from_dict: unknown keys {[prefix + k for k in unknown]}; "
                         f"valid keys: {sorted(known)}")
