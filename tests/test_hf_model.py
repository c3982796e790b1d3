"""PolyComForCausalLM's Hugging Face API: the transformers Cache, left and right padding, inputs_embeds,
gradient checkpointing, generate (== polycom's own greedy decoding), resized and tied embeddings."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from transformers.cache_utils import DynamicCache  # noqa: E402

import polycom.hf as H  # noqa: E402
from polycom.evaluation.generate import SamplingConfig, generate_ids  # noqa: E402

EAGER = {"implementation": "eager"}  # generate() changes shapes every step: no per-shape compiles
# fp32 attention through an explicit mask and through is_causal, or over a cache, sums in a different
# order: logits agree to ~1e-7 at these sizes; 1e-5 leaves room and still catches any wrong position or key.
TOL = {"rtol": 0, "atol": 1e-5}


def tiny(moe=None, tie=False, activation="polynorm"):
    torch.manual_seed(0)
    cfg = H.PolyComConfig(activation=activation, activation_kwargs=EAGER, n_kv_heads=2, qk_norm=True, moe=moe,
                          tie_embeddings=tie)
    return H.PolyComForCausalLM(cfg).eval()


@pytest.mark.parametrize("moe", [None, {"num_experts": 4, "top_k": 2}])
def test_cache_prefill_chunk_and_steps_equal_the_full_forward(moe):
    model = tiny(moe)
    ids = torch.randint(0, 256, (2, 11))
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        cache = DynamicCache()
        parts = [model(ids[:, :5], past_key_values=cache, use_cache=True)]  # prefill
        parts.append(model(ids[:, 5:8], past_key_values=cache, use_cache=True))  # a chunk after a cache
        parts += [model(ids[:, t:t + 1], past_key_values=cache, use_cache=True) for t in range(8, 11)]
    assert cache.get_seq_length() == 11
    torch.testing.assert_close(torch.cat([p.logits for p in parts], dim=1), full, **TOL)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_rows_equal_the_unpadded_sequences(side):
    model = tiny()
    a, b = torch.randint(1, 256, (1, 9)), torch.randint(1, 256, (1, 5))
    pad = torch.zeros(1, 4, dtype=torch.long)
    padded_b = torch.cat([pad, b], 1) if side == "left" else torch.cat([b, pad], 1)
    mask_b = (torch.arange(9) >= 4) if side == "left" else (torch.arange(9) < 5)
    ids = torch.cat([a, padded_b])
    mask = torch.stack([torch.ones(9, dtype=torch.long), mask_b.long()])
    with torch.no_grad():
        out = model(ids, attention_mask=mask).logits
        torch.testing.assert_close(out[0], model(a).logits[0], **TOL)
        torch.testing.assert_close(out[1][mask_b], model(b).logits[0], **TOL)


def test_left_padded_batch_generates_each_prompts_own_tokens():
    model = tiny()
    prompts = [torch.randint(1, 256, (n,)) for n in (7, 3)]
    ids = torch.zeros(2, 7, dtype=torch.long)
    mask = torch.zeros(2, 7, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, 7 - len(p):], mask[i, 7 - len(p):] = p, 1
    batch = model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0)
    for i, p in enumerate(prompts):
        alone = generate_ids(model.model, p.tolist(), SamplingConfig(max_new_tokens=8, temperature=0))
        assert batch[i, 7:].tolist() == alone


def test_generate_with_cache_equals_polycom_generate():
    model = tiny(moe={"num_experts": 4, "top_k": 2})
    prompt = torch.randint(0, 256, (1, 6))
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False,
                         pad_token_id=0)
    want = generate_ids(model.model, prompt[0].tolist(), SamplingConfig(max_new_tokens=12, temperature=0))
    assert out[0, 6:].tolist() == want


def test_inputs_embeds_equal_input_ids():
    model = tiny()
    ids = torch.randint(0, 256, (2, 6))
    with torch.no_grad():
        torch.testing.assert_close(model(inputs_embeds=model.get_input_embeddings()(ids)).logits, model(ids).logits,
                                   rtol=0, atol=0)


def test_gradient_checkpointing_gives_the_same_gradients():
    model = tiny(moe={"num_experts": 4, "top_k": 2}).train()
    ids = torch.randint(0, 256, (2, 10))

    def grads():
        model.zero_grad()
        model(ids, labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.gradient_checkpointing_enable()
    assert model.gradient_checkpointing
    calls = []
    inner = model._gradient_checkpointing_func
    model._gradient_checkpointing_func = lambda *a, **k: calls.append(1) or inner(*a, **k)
    checkpointed = grads()
    assert len(calls) == model.config.n_layers  # every block went through the checkpoint
    assert plain.keys() == checkpointed.keys()
    for name in plain:  # recomputation repeats the same ops: equal up to fp32 rounding
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("tie", [False, True])
def test_resize_token_embeddings_keeps_old_rows_and_ties(tie):
    model = tiny(tie=tie)
    old = model.get_input_embeddings().weight.detach().clone()
    model.resize_token_embeddings(300)
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert emb.shape == (300, 64) and head.shape == (300, 64) and model.config.vocab_size == 300
    assert torch.equal(emb[:256], old)
    assert (head is emb) == tie
    ids = torch.randint(0, 300, (1, 5))
    assert model(ids).logits.shape == (1, 5, 300)


def test_bad_inputs_name_the_argument():
    model = tiny()
    ids = torch.randint(0, 256, (1, 6))
    with pytest.raises(ValueError, match="'attention_mask' has 5 columns; expected 6"):
        model(ids, attention_mask=torch.ones(1, 5))
    with pytest.raises(ValueError, match="exactly one of the arguments 'input_ids' and 'inputs_embeds'"):
        model()
    with pytest.raises(ValueError, match="max_seq_len=64"):
        model(torch.zeros(1, 65, dtype=torch.long))
