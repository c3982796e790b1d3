"""Hugging Face integration: save/load round trip, labels, generate, ACT2FN names,
swap_activation on tiny random Llama / Qwen2 models."""

import os

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

from naive import naive_poly_norm  # noqa: E402
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM  # noqa: E402
from transformers.activations import ACT2FN  # noqa: E402

import polycom  # noqa: E402
import polycom.hf as H  # noqa: E402
from polycom.models import build_model, model_config  # noqa: E402

EAGER = {"implementation": "eager"}  # fixed-shape-free path: generate() grows T every step


@pytest.fixture(autouse=True)
def _fresh_compile_cache():
    """polycom.ops' default CPU path compiles per input shape (dynamic=False) and fails hard
    after 8 shapes per process; resetting dynamo keeps these tests independent of order."""
    yield
    torch._dynamo.reset()


def tiny_llama(**kw):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, **kw)
    return LlamaForCausalLM(cfg)


@pytest.mark.parametrize("tie, moe", [(False, None), (True, None), (False, {"num_experts": 4, "top_k": 2})])
def test_round_trip_identical_logits(tmp_path, tie, moe):
    torch.manual_seed(0)
    cfg = H.PolyComConfig(activation="polynorm", activation_kwargs=EAGER, tie_embeddings=tie, moe=moe,
                          qk_norm=True, n_kv_heads=2)
    model = H.PolyComForCausalLM(cfg).eval()
    with torch.no_grad():  # non-default coefficients, so a re-initialised load would show
        for i, block in enumerate(model.model.layers):
            block.mlp.act.weight.add_(0.1 * (i + 1))
    model.save_pretrained(tmp_path)
    assert os.path.exists(tmp_path / "model.safetensors")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is H.PolyComForCausalLM
    assert loaded.config.to_model_config() == cfg.to_model_config()
    assert (loaded.model.lm_head.weight is loaded.model.tok_embeddings.weight) == tie
    ids = torch.randint(0, 256, (2, 12))
    assert torch.equal(loaded(ids).logits, model(ids).logits)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_labels_loss_is_shifted_cross_entropy():
    torch.manual_seed(0)
    model = H.PolyComForCausalLM(H.PolyComConfig(activation="gelu"))
    ids = torch.randint(0, 256, (2, 9))
    out = model(ids, labels=ids)
    want = F.cross_entropy(out.logits[:, :-1].reshape(-1, 256).float(), ids[:, 1:].reshape(-1))
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-6)


def test_generate_is_greedy_argmax():
    torch.manual_seed(0)
    model = H.PolyComForCausalLM(H.PolyComConfig(activation="polynorm", activation_kwargs=EAGER)).eval()
    prompt = torch.randint(0, 256, (1, 5))
    got = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False,
                         pad_token_id=0)
    seq = prompt
    with torch.no_grad():
        for _ in range(6):
            nxt = model(seq).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    assert torch.equal(got, seq)


def test_from_polycom_wraps_trained_model():
    torch.manual_seed(0)
    base = build_model(model_config("debug", activation="swiglu")).eval()
    hf = H.from_polycom(base).eval()
    ids = torch.randint(0, 256, (1, 8))
    assert hf.model is base and torch.equal(hf(ids).logits, base(ids).logits)


def test_config_validation_names_field():
    with pytest.raises(ValueError, match="n_heads"):
        H.PolyComConfig(d_model=64, n_heads=5)
    with pytest.raises(ValueError, match="top_k"):
        H.PolyComConfig(moe={"num_experts": 2, "top_k": 3})


def test_act2fn_names_added_without_overriding():
    assert {"polynorm", "polyrelu"} <= set(H.REGISTERED_ACTIVATIONS)
    assert "relu2" not in H.REGISTERED_ACTIVATIONS and "gelu" not in H.REGISTERED_ACTIVATIONS
    assert type(ACT2FN["gelu"]).__module__.startswith("transformers")
    assert type(ACT2FN["relu2"]).__module__.startswith("transformers")
    a, b = ACT2FN["polynorm"], ACT2FN["polynorm"]
    assert isinstance(a, polycom.PolyNorm) and a is not b  # fresh module per layer
    assert H.register_hf_activations() == []  # idempotent
    # Every name transformers ships still maps to its original entry.
    from transformers.activations import ACT2CLS

    assert all(dict.__getitem__(ACT2FN, k) is v for k, v in ACT2CLS.items())


def test_hidden_act_polynorm_builds_gated_polynorm_llama():
    model = tiny_llama(hidden_act="polynorm")
    mlps = [layer.mlp for layer in model.model.layers]
    assert mlps[0].act_fn is not mlps[1].act_fn
    with torch.no_grad():
        mlps[0].act_fn.weight.copy_(torch.tensor([0.5, -0.2, 1.1]))
        mlps[0].act_fn.bias.fill_(0.3)
    x = torch.randn(3, 32)
    m = mlps[0]
    g = x.double() @ m.gate_proj.weight.double().T
    u = x.double() @ m.up_proj.weight.double().T
    want = (naive_poly_norm(g, m.act_fn.weight, m.act_fn.bias) * u) @ m.down_proj.weight.double().T
    torch.testing.assert_close(m(x).double(), want, rtol=1e-5, atol=1e-6)


def train_one_step(model, vocab=128):
    ids = torch.randint(0, vocab, (2, 12))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = model(ids, labels=ids).loss
    assert torch.isfinite(loss)
    loss.backward()
    opt.step()
    return {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}


def test_swap_gated_keeps_weights_and_trains(tmp_path):
    model = tiny_llama()
    n_before = sum(p.numel() for p in model.parameters())
    report = H.swap_activation(model, "gated_polynorm")
    assert report.modules == ["model.layers.0.mlp", "model.layers.1.mlp"]
    assert set(report.old_activations) == {"SiLUActivation"} or len(report.old_activations) == 2
    assert report.params_after == n_before + 2 * 4 and report.hidden_act == "polynorm"
    assert model.config.hidden_act == "polynorm"
    for layer in model.model.layers:
        assert isinstance(layer.mlp.act_fn, polycom.PolyNorm)
    changed = train_one_step(model)
    assert "model.layers.0.mlp.act_fn.weight" in changed and "model.layers.1.mlp.gate_proj.weight" in changed
    # Saved with hidden_act="polynorm": a plain Llama load rebuilds the same model.
    model.eval().save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 128, (1, 7))
    assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_swap_non_gated_is_parameter_matched_and_trains():
    model = tiny_llama()
    n_before = sum(p.numel() for p in model.parameters())
    report = H.swap_activation(model, "polyrelu", mode="non_gated")
    mlp = model.model.layers[0].mlp
    assert isinstance(mlp, polycom.models.MLP) and isinstance(mlp.act, polycom.PolyReLU)
    assert mlp.up_proj.out_features == 96  # 3/2 * 64: 2 * 32 * 96 == 3 * 32 * 64
    assert report.params_after == n_before + 2 * 4  # only the PolyReLU coefficients added
    assert "re-initialised" in str(report)
    changed = train_one_step(model)
    assert "model.layers.1.mlp.act.weight" in changed and "model.layers.1.mlp.up_proj.weight" in changed


def test_swap_qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=128, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    report = H.swap_activation(model, "polynorm", activation_kwargs={"order": 2})
    assert len(report.modules) == 2 and report.hidden_act is None  # kwargs: config left alone
    assert model.model.layers[0].mlp.act_fn.order == 2
    assert train_one_step(model)


def test_swap_errors():
    with pytest.raises(ValueError, match="unknown activation"):
        H.swap_activation(tiny_llama(), "nope")
    with pytest.raises(ValueError, match="is gated"):
        H.swap_activation(tiny_llama(), "swiglu", mode="non_gated")
    with pytest.raises(ValueError, match="mode"):
        H.swap_activation(tiny_llama(), "polynorm", mode="sideways")
    with pytest.raises(ValueError, match="no MLP"):
        H.swap_activation(torch.nn.Linear(2, 2), "polynorm")
