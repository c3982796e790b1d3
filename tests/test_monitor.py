"""The escaping-activation monitor: exact statistics, the warning rule, no hooks off monitored steps."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from polycom.models.mlp import MLP
from polycom.train import ConfigError, run
from polycom.train.monitor import ActivationMonitor


class Stack(nn.Module):
    """A deep MLP-only network with no normalisation and no residual: h <- mlp(h)."""

    def __init__(self, activation: str, depth: int = 6, d: int = 16, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        kw = {"implementation": "eager"} if activation == "polynorm" else {}
        self.layers = nn.ModuleList(MLP(d, 2 * d, activation, kw) for _ in range(depth))
        with torch.no_grad():
            for m in self.layers:  # variance-preserving init: the scale only changes through the activation
                for lin in (m.up_proj, m.down_proj):
                    lin.weight.normal_(0, lin.in_features ** -0.5)

    def forward(self, h):
        for m in self.layers:
            h = m(h)
        return h


def _monitored_step(model, monitor, step, batches):
    monitor.begin(step)
    with torch.no_grad():
        for x in batches:
            model(x)
    return monitor.collect()


def test_monitored_values_equal_a_direct_recomputation():
    model = Stack("gelu", depth=3)
    monitor = ActivationMonitor(model, every=1)
    batches = [torch.randn(4, 5, 16), torch.randn(3, 5, 16)]  # two micro-batches of one step
    batches[1][0, 0, 3] = math.inf  # a non-finite input: propagates to whole rows
    record, _ = _monitored_step(model, monitor, 1, batches)
    inputs = batches
    for i, mlp in enumerate(model.layers):  # the forward written out, float64 statistics
        pres, posts, outputs = [], [], []
        for h in inputs:
            pre = mlp.up_proj(h)
            post = mlp.act(pre)
            pres.append(pre.reshape(-1))
            posts.append(post.reshape(-1))
            outputs.append(mlp.down_proj(post))
        inputs = outputs
        for q, values in (("pre", torch.cat(pres)), ("post", torch.cat(posts))):
            v = values.detach().double()
            finite = v[torch.isfinite(v)]
            key = f"layers.{i}.act/{q}"
            # float32 accumulation in the monitor vs float64 here: ~1e-7 relative per term, 700 terms
            assert record[f"{key}_rms"] == pytest.approx(finite.square().mean().sqrt().item(), rel=1e-5)
            assert record[f"{key}_max"] == pytest.approx(finite.abs().max().item(), rel=1e-6)
            # the monitor divides counts in float32: exact to ~1e-7 relative
            assert record[f"{key}_nonfinite"] == pytest.approx(1 - finite.numel() / v.numel(), rel=1e-6, abs=1e-12)
    assert record["layers.0.act/pre_nonfinite"] == pytest.approx(1 / 35, rel=1e-6)  # one token's row of 7 x 5


def test_square_escapes_over_depth_and_polynorm_does_not():
    x = [2 * torch.randn(8, 16, generator=torch.Generator().manual_seed(1))]  # RMS 2: x^2 grows it at every layer
    square = Stack("square")
    record, warnings = _monitored_step(square, ActivationMonitor(square, 1), 1, x)
    post = [record[f"layers.{i}.act/post_rms"] for i in range(6)]
    assert post[-1] > 1e6 * post[0]  # doubly exponential: the scale squares per layer
    flagged = sorted({w.split(" in ")[1].split(":")[0] for w in warnings})
    first = next(i for i in range(1, 6) if post[i] > 10 * post[0] or record[f"layers.{i}.act/pre_rms"] >
                 10 * record["layers.0.act/pre_rms"] or record[f"layers.{i}.act/post_nonfinite"] > 0)
    assert flagged[0] == f"layers.{first}.act" and "growth over depth" in " ".join(warnings)

    polynorm = Stack("polynorm")
    record, warnings = _monitored_step(polynorm, ActivationMonitor(polynorm, 1), 1, x)
    post = [record[f"layers.{i}.act/post_rms"] for i in range(6)]
    assert warnings == [] and max(post) < 3 * min(post)  # each N(x^i) has RMS 1: the scale is pinned


def test_growth_over_steps_names_the_layer_and_a_stable_model_stays_quiet():
    model = Stack("polynorm", depth=4)
    monitor = ActivationMonitor(model, every=2)
    x = [torch.randn(8, 16)]
    assert _monitored_step(model, monitor, 2, x)[1] == []
    assert _monitored_step(model, monitor, 4, x)[1] == []  # unchanged weights: quiet
    with torch.no_grad():
        model.layers[2].up_proj.weight.mul_(30)  # layer 2's input escapes; PolyNorm pins its output
    record, warnings = _monitored_step(model, monitor, 6, x)
    assert record["layers.2.act/pre_rms"] == pytest.approx(30 * record["layers.1.act/pre_rms"], rel=0.5)
    assert warnings and all("in layers.2.act: pre-activation" in w for w in warnings)
    assert any("growth over steps > 10x" in w for w in warnings)
    assert _monitored_step(model, monitor, 8, x)[1] == []  # warned once per layer and rule


def test_hooks_exist_only_on_monitored_steps():
    model = Stack("gelu", depth=2)
    acts = [m.act for m in model.layers]
    off = ActivationMonitor(model, every=0)
    for step in range(1, 4):
        off.begin(step)
        assert all(not a._forward_hooks for a in acts) and off.collect() == (None, [])
    every3 = ActivationMonitor(model, every=3)
    hooked = []
    for step in range(1, 7):
        every3.begin(step)
        hooked.append(all(len(a._forward_hooks) == 1 for a in acts))
        model(torch.randn(2, 16))
        every3.collect()
        assert all(not a._forward_hooks for a in acts)
    assert hooked == [False, False, True, False, False, True]
    with pytest.raises(ConfigError, match="train.monitor_every"):
        ActivationMonitor(model, every=-1)


def test_training_logs_the_monitor_and_draws_monitor_png(tmp_path):
    args = ["model.preset=debug", "model.activation=polynorm", "model.n_layers=2", "model.d_model=32",
            "model.n_heads=2", "model.activation_kwargs={implementation: eager}", "data.tokenizer=byte",
            "data.max_documents=60", f"data.cache_dir={tmp_path / 'cache'}", "data.seq_len=16",
            "train.batch_size=4", "train.micro_batch_size=2", "train.steps=3", "train.eval_every=0",
            "train.checkpoint_every=0", "train.eval_batches=1", "train.progress=false", "train.tensorboard=true"]
    on = run("tiny", args + ["train.monitor_every=1", f"train.out_dir={tmp_path / 'on'}"])
    off = run("tiny", args + [f"train.out_dir={tmp_path / 'off'}"])
    assert on.train_losses == off.train_losses  # hooks only read: training is bitwise unchanged
    records = [json.loads(line) for line in (tmp_path / "on" / "metrics.jsonl").read_text().splitlines()]
    monitor = [r for r in records if r["kind"] == "monitor"]
    assert [r["step"] for r in monitor] == [1, 2, 3]
    assert {k for k in monitor[0] if k.endswith("_rms")} == {f"layers.{i}.mlp.act/{q}_rms"
                                                             for i in (0, 1) for q in ("pre", "post")}
    assert (tmp_path / "on" / "monitor.png").stat().st_size > 0 and not (tmp_path / "off" / "monitor.png").exists()
    assert any(p.name.startswith("events") for p in (tmp_path / "on" / "tb").iterdir())
