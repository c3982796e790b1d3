"""``PolyComForCausalLM``: polycom's decoder as a Hugging Face causal LM (model_type "polycom").

This file is polycom's Hugging Face model and is also copied verbatim into every
model folder polycom saves, with ``configuration_polycom.py`` and
``polycom_activations.py``, under ``auto_map`` in config.json. So
``AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)`` loads the
folder in an interpreter without polycom. It imports only torch and transformers:

- polycom importable: ``self.model`` is ``polycom.models.Transformer`` (fused
  activation kernels, every registered activation and MLP kind);
- otherwise: ``Decoder`` below, the same modules under the same parameter names in
  plain PyTorch, with the activations of ``polycom_activations.py``.

The forward here drives either one module by module, so both get the Hugging Face
API: a transformers ``Cache`` (``DynamicCache``), attention masks with left or right
padding (positions counted from the mask), ``inputs_embeds``, gradient
checkpointing and ``labels`` (shifted inside; the loss includes the MoE aux loss).

    x = embed(ids)
    for block: x = x + attn(norm(x), rope(positions), mask, cache); x = x + mlp(norm(x))
    logits = head(norm(x))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_polycom import PolyComConfig
from .polycom_activations import build_activation, is_gated

try:
    from polycom.models import Transformer as PolycomTransformer
except ImportError:
    PolycomTransformer = None

__all__ = ["PolyComForCausalLM", "Decoder"]

_V5 = int(transformers.__version__.split(".")[0]) >= 5
# transformers >= 5.25 calls the cache "cache" (forward argument and output field); earlier, "past_key_values".
_CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


# --- The decoder in plain PyTorch (polycom.models' parameter names and math) -----------------------

class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2, -1) + eps) * weight, computed in float32."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)


class RotaryEmbedding(nn.Module):
    """cos/sin tables of RoPE (rotate-half layout) for positions 0 .. max_seq_len - 1."""

    def __init__(self, head_dim: int, max_seq_len: int, theta: float):
        super().__init__()
        self.head_dim, self.max_seq_len, self.theta = head_dim, max_seq_len, theta
        self.register_buffer("cos", torch.empty(max_seq_len, head_dim), persistent=False)
        self.register_buffer("sin", torch.empty(max_seq_len, head_dim), persistent=False)
        self.reset_buffers()

    def reset_buffers(self) -> None:
        if self.cos.is_meta:
            return
        hs = self.head_dim
        inv_freq = 1.0 / self.theta ** (torch.arange(0, hs, 2, dtype=torch.float64) / hs)
        freqs = torch.outer(torch.arange(self.max_seq_len, dtype=torch.float64), inv_freq)  # (T_max, hs/2)
        emb = torch.cat([freqs, freqs], dim=-1)  # (T_max, hs)
        with torch.no_grad():
            self.cos.copy_(emb.cos().float())
            self.sin.copy_(emb.sin().float())


class Attention(nn.Module):
    """The projections of causal self-attention (grouped-query heads, optional QK-norm); ``attention`` runs it."""

    def __init__(self, c: PolyComConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = c.n_heads, c.num_key_value_heads, c.head_dim
        self.q_proj = nn.Linear(c.d_model, c.n_heads * c.head_dim, bias=False)
        self.k_proj = nn.Linear(c.d_model, self.n_kv_heads * c.head_dim, bias=False)
        self.v_proj = nn.Linear(c.d_model, self.n_kv_heads * c.head_dim, bias=False)
        self.o_proj = nn.Linear(c.n_heads * c.head_dim, c.d_model, bias=False)
        self.q_norm = RMSNorm(c.head_dim, c.norm_eps) if c.qk_norm else None
        self.k_norm = RMSNorm(c.head_dim, c.norm_eps) if c.qk_norm else None
        self.dropout = c.dropout


class MLP(nn.Module):
    """down(act(up(x))) or, for a gated activation, down(act(gate(x), up(x)))."""

    def __init__(self, d_model: int, hidden: int, activation: str, kwargs: dict):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, hidden, bias=False) if is_gated(activation) else None
        self.up_proj = nn.Linear(d_model, hidden, bias=False)
        self.act = build_activation(activation, kwargs)
        self.down_proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs = (self.gate_proj(x), self.up_proj(x)) if self.gate_proj is not None else (self.up_proj(x),)
        return self.down_proj(self.act(*inputs))


class Router(nn.Module):
    def __init__(self, d_model: int, moe: dict):
        super().__init__()
        self.gate = nn.Linear(d_model, moe["num_experts"], bias=False)
        self.kind, self.act_name = moe.get("router", "softmax"), moe.get("router_activation", "tanh")
        self.temperature = moe.get("router_temperature", 1.0)
        functions = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "identity": lambda s: s}
        self.score_act = None
        if self.kind == "act_softmax" and self.act_name not in functions:
            self.score_act = build_activation(self.act_name)
        self.function = functions.get(self.act_name)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        s = self.gate(x).float()  # (N, E), routing in fp32
        if self.kind == "act_softmax":
            s = (self.score_act or self.function)(s) / self.temperature
        return s


class ExpertActivations(nn.Module):
    """One activation module per expert (``coefficients="per_expert"``): ``act.experts.<e>``."""

    def __init__(self, activation: str, kwargs: dict, num_experts: int):
        super().__init__()
        self.experts = nn.ModuleList(build_activation(activation, kwargs) for _ in range(num_experts))


class MoE(nn.Module):
    """Dropless top-k mixture of experts, one loop over experts; returns (output, weighted aux loss).

    Load balance E * sum_e f_e P_e (f_e: share of routed rows, P_e: mean probability) and
    router z-loss mean(logsumexp(s)^2), as polycom.models.moe."""

    def __init__(self, d_model: int, hidden: int, activation: str, kwargs: dict, moe: dict):
        super().__init__()
        E = moe["num_experts"]
        self.moe, self.gated = moe, is_gated(activation)
        self.router = Router(d_model, moe)
        self.gate_proj = nn.Parameter(torch.empty(E, hidden, d_model).normal_(std=0.02)) if self.gated else None
        self.up_proj = nn.Parameter(torch.empty(E, hidden, d_model).normal_(std=0.02))
        self.down_proj = nn.Parameter(torch.empty(E, d_model, hidden).normal_(std=0.02))
        per_expert = moe.get("coefficients", "per_layer") == "per_expert"
        self.act = ExpertActivations(activation, kwargs, E) if per_expert else build_activation(activation, kwargs)
        self.shared_expert = MLP(d_model, hidden, activation, kwargs) if moe.get("shared_expert") else None

    def forward(self, x: torch.Tensor):
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # (N, d)
        scores = self.router.scores(x)
        probs = F.softmax(scores, dim=-1)
        top_w, top_idx = torch.topk(probs, self.moe.get("top_k", 2), dim=-1)  # (N, k)
        if self.moe.get("renormalize", True):
            top_w = top_w / top_w.sum(-1, keepdim=True)
        out = x.new_zeros(x.shape)
        for e in range(self.up_proj.shape[0]):
            token, slot = (top_idx == e).nonzero(as_tuple=True)
            if token.numel() == 0:
                continue
            xs = x[token]  # (n_e, d)
            act = self.act.experts[e] if isinstance(self.act, ExpertActivations) else self.act
            h = act(xs @ self.gate_proj[e].T, xs @ self.up_proj[e].T) if self.gated else act(xs @ self.up_proj[e].T)
            y = (h @ self.down_proj[e].T) * top_w[token, slot].unsqueeze(-1).to(h.dtype)
            out.index_add_(0, token, y)
        if self.shared_expert is not None:
            out = out + self.shared_expert(x)
        E = self.up_proj.shape[0]
        share = torch.bincount(top_idx.reshape(-1), minlength=E).to(probs.dtype) / top_idx.numel()
        balance = E * (share * probs.mean(0)).sum()
        z = torch.logsumexp(scores, dim=-1).pow(2).mean()
        aux = self.moe.get("aux_loss_weight", 0.01) * balance + self.moe.get("z_loss_weight", 0.001) * z
        return out.view(shape), aux


class Block(nn.Module):
    def __init__(self, c: PolyComConfig):
        super().__init__()
        self.attn_norm = RMSNorm(c.d_model, c.norm_eps)
        self.attn = Attention(c)
        self.mlp_norm = RMSNorm(c.d_model, c.norm_eps)
        if c.moe is None:
            self.mlp = MLP(c.d_model, _width(c, "intermediate_size"), c.activation, c.activation_kwargs)
        else:
            self.mlp = MoE(c.d_model, _width(c, "moe_intermediate_size"), c.activation, c.activation_kwargs, c.moe)
        self.dropout = nn.Dropout(c.dropout)


class Decoder(nn.Module):
    """polycom.models.Transformer's modules, for reading its weights without polycom."""

    def __init__(self, c: PolyComConfig):
        super().__init__()
        self.tok_embeddings = nn.Embedding(c.vocab_size, c.d_model)
        self.dropout = nn.Dropout(c.dropout)
        self.layers = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.norm = RMSNorm(c.d_model, c.norm_eps)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.tok_embeddings.weight
        self.rope = RotaryEmbedding(c.head_dim, c.max_seq_len, c.rope_theta)


def _width(c: PolyComConfig, name: str) -> int:
    width = getattr(c, name, None)
    if width is None:
        raise ValueError(f"config.{name} is missing: polycom writes it when it saves a model; "
                         "load this folder with polycom installed, or add the width to config.json")
    return width


# --- The forward, for either decoder ------------------------------------------------------------

def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE: pairs (x_i, x_{i + hs/2}) rotated by their position's angle. x (B, nh, T, hs), cos/sin (B, 1, T, hs)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


def attention(attn: nn.Module, x: torch.Tensor, cos, sin, mask, cache, layer_idx: int) -> torch.Tensor:
    """Causal self-attention of ``attn``'s projections; ``mask`` None means plain causal over x alone."""
    B, T, _ = x.shape
    q = attn.q_proj(x).view(B, T, attn.n_heads, attn.head_dim)  # (B, T, nh, hs)
    k = attn.k_proj(x).view(B, T, attn.n_kv_heads, attn.head_dim)  # (B, T, nkv, hs)
    v = attn.v_proj(x).view(B, T, attn.n_kv_heads, attn.head_dim)
    if attn.q_norm is not None:
        q, k = attn.q_norm(q), attn.k_norm(k)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, nh|nkv, T, hs)
    q, k = rotate(q, cos, sin), rotate(k, cos, sin)
    if cache is not None:
        k, v = cache.update(k, v, layer_idx)  # (B, nkv, past + T, hs)
    if attn.n_kv_heads != attn.n_heads:
        rep = attn.n_heads // attn.n_kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # (B, nh, S, hs)
    p = attn.dropout if attn.training else 0.0
    if isinstance(mask, str):  # "causal": the training path, no mask tensor
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
    else:
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, nh, T, hs)
    return attn.o_proj(y.transpose(1, 2).reshape(B, T, attn.n_heads * attn.head_dim))


def block_forward(block: nn.Module, x: torch.Tensor, cos, sin, mask, cache, layer_idx: int):
    """(x, aux loss or None) after one pre-norm block."""
    x = x + block.dropout(attention(block.attn, block.attn_norm(x), cos, sin, mask, cache, layer_idx))
    h = block.mlp(block.mlp_norm(x))
    aux = None
    if isinstance(h, tuple):
        h, aux = h
    return x + block.dropout(h), aux


def attention_mask_for(attention_mask: torch.Tensor | None, T: int, past: int, device):
    """"causal" (no padding, nothing cached), None (one new token, no padding) or a bool mask
    (T, S) / (B, 1, T, S) over the S = past + T keys: causal, and no padding key."""
    S = past + T
    if attention_mask is not None and attention_mask.shape[-1] != S:
        raise ValueError(f"argument 'attention_mask' has {attention_mask.shape[-1]} columns; expected {S} "
                         f"(the {past} cached tokens and the {T} new ones)")
    padded = attention_mask is not None and not bool(attention_mask.all())
    if not padded:
        if past == 0:
            return "causal"
        if T == 1:
            return None
    keys = torch.arange(S, device=device)
    causal = keys[None, :] <= (past + torch.arange(T, device=device))[:, None]  # (T, S)
    if not padded:
        return causal
    mask = causal[None, None] & attention_mask.bool()[:, None, None, :]  # (B, 1, T, S)
    # A padding query before the first real token sees no key; let it see all (its output is never used)
    # rather than give NaN.
    return mask | ~mask.any(-1, keepdim=True)


def positions_for(attention_mask: torch.Tensor | None, B: int, T: int, past: int, device) -> torch.Tensor:
    """(B, T) RoPE positions: counted over the mask's real tokens (left padding starts at 0), else past.. past+T-1."""
    if attention_mask is None:
        return torch.arange(past, past + T, device=device).expand(B, T)
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]


class PolyComForCausalLM(PreTrainedModel, GenerationMixin):
    """Causal LM over polycom's decoder; ``labels`` follow the HF convention (shifted inside)."""

    config_class = PolyComConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Block"]
    _supports_sdpa = True
    _tied_weights_keys = {"model.lm_head.weight": "model.tok_embeddings.weight"} if _V5 else ["model.lm_head.weight"]

    def __init__(self, config: PolyComConfig):
        super().__init__(config)
        if PolycomTransformer is not None:
            self.model = PolycomTransformer(config.to_model_config())
        else:
            self.model = Decoder(config)
        self.gradient_checkpointing = False
        self.post_init()

    def _init_weights(self, module):
        # polycom initialises its weights in its constructors (scaled residual outputs, PolyCom
        # coefficients); HF's generic per-Linear init would undo that. Only the RoPE tables,
        # non-persistent buffers left empty when HF builds the model on the meta device, need filling.
        if hasattr(module, "reset_buffers") and hasattr(module, "cos"):
            module.reset_buffers()

    def get_input_embeddings(self):
        return self.model.tok_embeddings

    def set_input_embeddings(self, value):
        self.model.tok_embeddings = value

    def get_output_embeddings(self):
        return self.model.lm_head

    def set_output_embeddings(self, value):
        self.model.lm_head = value

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache=None, return_dict=None, cache=None, **kwargs):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of the arguments 'input_ids' and 'inputs_embeds'")
        cache = cache if cache is not None else past_key_values
        checkpointing = self.gradient_checkpointing and self.training
        use_cache = (self.config.use_cache if use_cache is None else use_cache) and not checkpointing
        if use_cache and cache is None:
            cache = DynamicCache()
        m = self.model
        x = m.tok_embeddings(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, d)
        B, T = x.shape[:2]
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            position_ids = positions_for(attention_mask, B, T, past, x.device)
        if int(position_ids.max()) >= m.rope.cos.shape[0]:
            raise ValueError(f"position {int(position_ids.max())} exceeds the model's context "
                             f"(max_seq_len={m.rope.cos.shape[0]})")
        cos, sin = m.rope.cos[position_ids][:, None], m.rope.sin[position_ids][:, None]  # (B, 1, T, hs)
        mask = attention_mask_for(attention_mask, T, past, x.device)
        x = m.dropout(x)
        aux_terms = []
        for i, block in enumerate(m.layers):
            if checkpointing:
                x, aux = self._gradient_checkpointing_func(block_forward, block, x, cos, sin, mask, None, i)
            else:
                x, aux = block_forward(block, x, cos, sin, mask, cache, i)
            if aux is not None:
                aux_terms.append(aux)
        logits = m.lm_head(m.norm(x))  # (B, T, V)
        loss = None
        if labels is not None:
            # HF labels are the inputs; position t predicts token t + 1.
            targets = torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), -100)], dim=1)
            loss = F.cross_entropy(logits.float().reshape(B * T, -1), targets.reshape(B * T), ignore_index=-100)
            if aux_terms:
                loss = loss + torch.stack(aux_terms).mean()
        out = CausalLMOutputWithPast(loss=loss, logits=logits, **{_CACHE_FIELD: cache if use_cache else None})
        return out if return_dict is not False else out.to_tuple()
