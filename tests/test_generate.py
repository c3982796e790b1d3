"""KV-cache decoding and sampling: cached logits equal full recomputation (dense, GQA, MoE),
greedy tokens equal with and without the cache, top-k / top-p filters against hand counts."""

import math

import pytest
import torch

from polycom.evaluation.generate import SamplingConfig, filter_logits, generate_ids
from polycom.models import build_model, model_config
from polycom.models.layers import KVCache

EAGER = {"implementation": "eager"}  # decoding feeds a new shape every step; skip per-shape compiles


def random_model(preset="debug", **kw):
    torch.manual_seed(0)
    model = build_model(model_config(preset, activation="polynorm", activation_kwargs=EAGER, **kw)).eval()
    with torch.no_grad():  # larger weights than the init: sharper logits, so position mix-ups show
        for p in model.parameters():
            if p.ndim >= 2:
                p.mul_(3.0)
    return model


MODELS = {
    "dense": dict(),
    "gqa-qknorm": dict(n_kv_heads=2, qk_norm=True),
    "moe": dict(preset="debug-moe"),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_cached_logits_equal_the_full_forward(name):
    model = random_model(**MODELS[name])
    ids = torch.randint(0, 256, (2, 23))
    with torch.no_grad():
        full = model(ids).logits  # (B, T, V), the training path
        cache = KVCache(len(model.layers))
        # A 7-token prefill, a 5-token chunk (T > 1 after a cache: the offset mask), then single tokens.
        chunks = [model(ids[:, :7], cache=cache).logits, model(ids[:, 7:12], cache=cache).logits]
        chunks += [model(ids[:, t:t + 1], cache=cache).logits for t in range(12, 23)]
    assert cache.position == 23
    # Same math in another order (sdpa over a growing key set): fp32 rounding only, logits are O(10).
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ["dense", "moe"])
def test_greedy_tokens_equal_with_and_without_cache(name):
    model = random_model(**MODELS[name])
    prompt = torch.randint(0, 256, (9,)).tolist()
    greedy = SamplingConfig(max_new_tokens=30, temperature=0)
    cached = generate_ids(model, prompt, greedy, use_cache=True)
    uncached = generate_ids(model, prompt, greedy, use_cache=False)
    assert cached == uncached and len(cached) == 30
    # Independent check of the loop: the argmax of a plain forward at every step.
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(30):
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    assert seq[len(prompt):] == cached


def test_generation_stops_at_the_context_and_rejects_a_longer_prompt():
    model = random_model()  # max_seq_len 64
    out = generate_ids(model, [1] * 60, SamplingConfig(max_new_tokens=50, temperature=0))
    assert len(out) == 5  # 60 prompt + 4 fed back = 64 positions; the 5th token is never fed
    with pytest.raises(ValueError, match=r"--prompt is 65 tokens.*max_seq_len=64"):
        generate_ids(model, [1] * 65)
    with pytest.raises(ValueError, match="--prompt"):
        generate_ids(model, [])
    with pytest.raises(ValueError, match="--top-p"):
        SamplingConfig(top_p=0)
    for bad in (float("nan"), float("inf"), -1.0):  # nan passed `< 0` and sampled garbage
        with pytest.raises(ValueError, match="--temperature must be a finite number >= 0"):
            SamplingConfig(temperature=bad)


def test_stop_token_ends_generation():
    model = random_model()
    prompt = [5, 6, 7]
    first = generate_ids(model, prompt, SamplingConfig(max_new_tokens=8, temperature=0))
    stopped = generate_ids(model, prompt, SamplingConfig(max_new_tokens=8, temperature=0), stop_id=first[2])
    assert stopped == first[:first.index(first[2]) + 1]


def test_top_k_and_top_p_filters_against_hand_counts():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    logits = probs.log()
    kept = lambda f: torch.isfinite(f)[0].tolist()
    assert kept(filter_logits(logits, top_k=2)) == [False, True, False, True]
    # Sorted: 0.5, 0.3, 0.15, 0.05; mass above each: 0, 0.5, 0.8, 0.95. top_p=0.7 keeps the first two,
    # top_p=0.81 the first three (the mass above the third, 0.8, is still under 0.81).
    assert kept(filter_logits(logits, top_p=0.7)) == [False, True, False, True]
    assert kept(filter_logits(logits, top_p=0.81)) == [False, True, True, True]
    assert kept(filter_logits(logits, top_p=0.3)) == [False, True, False, False]  # the top token always stays


def test_sampling_frequencies_follow_the_filtered_softmax():
    """temperature 2 and top_k 3 on a 4-token vocabulary: draws follow softmax(logits / 2) over the
    top 3, renormalised. n = 4000 draws: a frequency's standard error is <= sqrt(0.25 / n) = 0.008,
    the tolerance 0.04 is 5 of them."""
    from polycom.evaluation.generate import _next_token

    logits = torch.tensor([[2.0, 0.0, 1.0, -3.0]])
    cfg = SamplingConfig(temperature=2.0, top_k=3, seed=0)
    gen = torch.Generator().manual_seed(0)
    draws = torch.cat([_next_token(logits, cfg, gen) for _ in range(4000)]).flatten()
    freq = torch.bincount(draws, minlength=4).double() / draws.numel()
    z = [math.exp(v / 2) for v in (2.0, 0.0, 1.0)]
    want = [z[0] / sum(z), z[1] / sum(z), z[2] / sum(z), 0.0]
    assert freq.tolist() == pytest.approx(want, abs=0.04)
    assert freq[3] == 0


def test_same_seed_same_sample():
    model = random_model()
    cfg = SamplingConfig(max_new_tokens=12, temperature=1.0, top_p=0.9, seed=3)
    a, b = generate_ids(model, [1, 2, 3], cfg), generate_ids(model, [1, 2, 3], cfg)
    c = generate_ids(model, [1, 2, 3], SamplingConfig(max_new_tokens=12, temperature=1.0, top_p=0.9, seed=4))
    assert a == b and a != c
