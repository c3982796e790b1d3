"""polycom.analysis and `polycom analyze`: effective rank, layer similarity, coefficients, CLI errors."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from polycom.analysis import (AnalysisError, activation_coefficients, analyze_model, consecutive_similarity,
                              cosine_similarity_matrix, effective_rank, hidden_states, weight_matrices)
from polycom.cli import main
from polycom.models import build_model, model_config
from polycom.train import load_config, run

# The closed-form eager PolyNorm path: the default CPU path compiles (tens of seconds on a busy
# 2-core machine) and these tests are about the analysis, not the kernels.
EAGER = {"implementation": "eager"}

# --- effective rank (Roy & Vetterli 2007) ------------------------------------------


def _np_effective_rank(w: np.ndarray) -> float:
    """Independent reference: numpy SVD, entropy written out."""
    s = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-np.sum(p * np.log(p))))


def test_effective_rank_of_identity_is_n_and_of_rank_one_is_1():
    assert effective_rank(torch.eye(7)) == pytest.approx(7, rel=1e-12)  # float64 SVD: round-off only
    u, v = torch.randn(9, 1), torch.randn(1, 5)
    # A rank-1 float32 matrix has tiny round-off singular values (~1e-7 relative): entropy ~ 1e-6.
    assert effective_rank(u @ v) == pytest.approx(1, abs=1e-4)


def test_effective_rank_of_known_singular_values_is_the_closed_form():
    s = np.array([4.0, 2.0, 1.0, 1.0])
    p = s / s.sum()  # [1/2, 1/4, 1/8, 1/8]
    closed = math.exp(-(0.5 * math.log(0.5) + 0.25 * math.log(0.25) + 2 * 0.125 * math.log(0.125)))  # 2^1.75
    assert closed == pytest.approx(2 ** 1.75)
    assert -np.sum(p * np.log(p)) == pytest.approx(1.75 * math.log(2))
    g = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(6, 4, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(5, 4, generator=g, dtype=torch.float64))
    w = U @ torch.diag(torch.tensor(s)) @ V.T  # (6, 5) with singular values s and one zero
    assert effective_rank(w) == pytest.approx(closed, rel=1e-10)  # float64 throughout
    assert effective_rank(torch.zeros(3, 3)) == 0.0


# --- cosine similarity ----------------------------------------------------------


def test_cosine_similarity_of_identical_states_is_1_and_of_orthogonal_is_0():
    h = torch.randn(2, 3, 8)
    S = cosine_similarity_matrix([h, h, 2.5 * h])  # cosine ignores scale
    assert torch.allclose(S, torch.ones(3, 3, dtype=torch.float64), atol=1e-12)
    e = torch.eye(4)
    a, b = e[:2].reshape(1, 2, 4), e[2:].reshape(1, 2, 4)  # every token of a orthogonal to b's
    S = cosine_similarity_matrix([a, b])
    assert S[0, 1].item() == pytest.approx(0.0, abs=1e-15) and S[0, 0].item() == pytest.approx(1.0)
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    y = torch.tensor([[[1.0, 1.0], [0.0, -1.0]]])  # cos 1/sqrt(2) and -1: mean (1/sqrt(2) - 1) / 2
    assert consecutive_similarity(cosine_similarity_matrix([x, y]))[0] == pytest.approx((2 ** -0.5 - 1) / 2)


def test_hidden_states_are_the_embeddings_and_each_block_output():
    torch.manual_seed(0)
    model = build_model(model_config("debug", activation="polynorm", n_layers=3, activation_kwargs=EAGER)).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 10))
    states = hidden_states(model, ids)
    with torch.no_grad():  # the forward written out
        x = model.tok_embeddings(ids)
        cos, sin = model.rope(10)
        expected = [x]
        for block in model.layers:
            x, _ = block(x, cos, sin)
            expected.append(x)
    assert len(states) == 4
    for got, want in zip(states, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)  # same ops, same order: bitwise


# --- structure: dense, MoE, Hugging Face -----------------------------------------


def test_matrices_and_coefficients_of_a_moe_model_are_found_per_expert():
    cfg = model_config("debug", activation="polynorm", n_layers=2,
                       moe={"num_experts": 3, "top_k": 1, "coefficients": "per_expert"}, activation_kwargs=EAGER)
    model = build_model(cfg)
    kinds = [(m.layer, m.kind, m.expert) for m in weight_matrices(model)]
    for layer in (0, 1):
        assert [(k, e) for la, k, e in kinds if la == layer] == [
            ("q", None), ("k", None), ("v", None), ("o", None),
            *[("up", j) for j in range(3)], *[("down", j) for j in range(3)]]
    rows = activation_coefficients(model)
    assert [(r["layer"], r["expert"]) for r in rows] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert rows[0]["a"] == pytest.approx([0.0, 1 / 3, 1 / 3, 1 / 3])  # the paper's init a_i = 1/r, a_0 = 0
    with torch.no_grad():
        model.layers[1].mlp.act.experts[2].weight.copy_(torch.tensor([3.0, 2.0, 1.0]))  # [a_3, a_2, a_1]
        model.layers[1].mlp.act.experts[2].bias.fill_(0.5)
    assert activation_coefficients(model)[-1]["a"] == [0.5, 1.0, 2.0, 3.0]


def test_a_hugging_face_llama_is_analysed_by_its_module_names():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 64, (2, 8))
    result = analyze_model(model, ids)
    kinds = [(r["layer"], r["kind"]) for r in result["effective_rank"]["matrices"]]
    assert kinds == [(la, k) for la in (0, 1) for k in ("q", "k", "v", "o", "gate", "up", "down")]
    w = model.model.layers[1].mlp.down_proj.weight.detach().numpy()
    assert result["effective_rank"]["matrices"][-1]["effective_rank"] == pytest.approx(_np_effective_rank(w), rel=1e-9)
    with torch.no_grad():  # HF's own hidden states: embeddings, then each layer (the last after the final norm)
        hf = model(ids, output_hidden_states=True).hidden_states
    S = np.array(result["similarity"]["matrix"])
    a, b = hf[0].reshape(-1, 32).double(), hf[1].reshape(-1, 32).double()
    assert S[0, 1] == pytest.approx(torch.nn.functional.cosine_similarity(a, b, dim=-1).mean().item(), rel=1e-9)
    assert result["coefficients"] == []  # SiLU has no coefficients


def test_a_model_without_mlp_activations_is_a_clear_error():
    with pytest.raises(AnalysisError, match="no MLP activations"):
        analyze_model(nn.Sequential(nn.Linear(4, 4), nn.ReLU()))


# --- `polycom analyze` on a trained run ---------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("analyze")
    args = ["model.preset=debug", "model.activation=polynorm", "model.n_layers=3", "model.d_model=32",
            "model.n_heads=2", "model.activation_kwargs={implementation: eager}", "data.tokenizer=byte",
            "data.max_documents=200", f"data.cache_dir={tmp / 'cache'}", "data.seq_len=32", "train.batch_size=4",
            "train.micro_batch_size=4", "train.steps=6", "train.eval_every=0", "train.checkpoint_every=2",
            "train.keep_checkpoints=3", "train.eval_batches=1", "train.progress=false", "optim.lr=3e-2",
            f"train.out_dir={tmp / 'run'}"]
    run("tiny", args)
    return tmp / "run"


def test_polycom_analyze_writes_numbers_equal_to_a_recomputation(tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["analyze", str(tiny_run), "--out", str(out), "--sequences", "3"]) == 0
    result = json.loads((out / "analysis.json").read_text())
    assert {p.name for p in out.iterdir()} == {"analysis.json", "effective_rank.png", "similarity.png",
                                              "coefficients.png"}
    state = load_file(str(tiny_run / "checkpoints" / "step_00000006" / "model.safetensors"))
    assert result["step"] == 6
    rows = {r["name"]: r for r in result["effective_rank"]["matrices"]}
    assert len(rows) == 3 * 6  # q k v o up down per layer
    for name, r in rows.items():  # numpy SVD of the saved tensor; both float64
        assert r["effective_rank"] == pytest.approx(_np_effective_rank(state[name].numpy()), rel=1e-9)
    for r in result["coefficients"]:
        w, b = state[f"{r['name']}.weight"].tolist(), state[f"{r['name']}.bias"].item()
        assert r["a"] == [b] + w[::-1]
    traj = result["coefficient_trajectory"]
    assert traj["steps"] == [2, 4, 6]
    early = load_file(str(tiny_run / "checkpoints" / "step_00000002" / "model.safetensors"))
    assert traj["a"]["layers.1.mlp.act"][0] == [early["layers.1.mlp.act.bias"].item()] + \
        early["layers.1.mlp.act.weight"].tolist()[::-1]
    assert traj["a"]["layers.1.mlp.act"][0] != traj["a"]["layers.1.mlp.act"][2]  # lr 3e-2: they moved
    # Layer similarity, recomputed from an independently built model and the first 3 validation windows.
    from polycom.analysis.load import load_model, validation_inputs

    cfg = load_config(tiny_run / "config.yaml")
    ids = validation_inputs(cfg, 3)
    assert ids.shape == (3, 32) and result["similarity"]["tokens"] == 96
    model = load_model(tiny_run / "checkpoints" / "step_00000006", cfg)
    states = [s.reshape(-1, s.shape[-1]).double().numpy() for s in hidden_states(model, ids)]
    for i in range(4):
        for j in range(4):
            cos = np.mean([u @ v / np.linalg.norm(u) / np.linalg.norm(v) for u, v in zip(states[i], states[j])])
            assert result["similarity"]["matrix"][i][j] == pytest.approx(cos, rel=1e-9, abs=1e-12)
    assert "consecutive-layer cosine similarity" in capsys.readouterr().out


def test_polycom_analyze_rejects_bad_paths_and_unreachable_data(tiny_run, tmp_path, capsys):
    assert main(["analyze", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a polycom run or checkpoint" in err and "config.yaml and checkpoints" in err
    assert err.count("\n") == 1  # one line, no traceback
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_run / "checkpoints" / "step_00000006", ckpt)
    cfg = (ckpt / "config.yaml").read_text().replace("source: stdlib", f"source: {tmp_path / 'gone.txt'}")
    (ckpt / "config.yaml").write_text(cfg)
    assert main(["analyze", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert "validation data of this run is not reachable" in err and "gone.txt" in err
    assert main(["analyze", str(ckpt), "--no-similarity"]) == 0  # ranks and coefficients need no data
    capsys.readouterr()
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    assert main(["analyze", str(ckpt), "--no-similarity", "--out", str(a_file)]) == 2  # was a traceback
    err = capsys.readouterr().err
    assert "--out" in err and "is a file" in err and err.count("\n") == 1 and a_file.read_text() == "keep me"
    result = json.loads((ckpt / "analysis" / "analysis.json").read_text())
    assert "similarity" not in result and result["coefficient_trajectory"]["steps"] == [6]


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")  # scipy, on identical seeds by design
def test_compare_report_section_sets_rank_and_similarity_side_by_side(tiny_run, tmp_path):
    """The sweep's analysis section, on a fake two-activation sweep whose four runs are the tiny run
    (so every paired difference is 0 and no claim can be significant)."""
    from types import SimpleNamespace

    from polycom.experiments.compare import inside
    from polycom.experiments.compare.records import RunRecord

    (tmp_path / "runs").mkdir()
    records = []
    for act in ("gelu", "polynorm"):
        for seed in (0, 1):
            run_id = f"{act}-s{seed}"
            (tmp_path / "runs" / run_id).symlink_to(tiny_run, target_is_directory=True)
            records.append(RunRecord(run_id, "main", act, "base", seed, 1e-3, "completed", 6, "h", final_step=6,
                                     val_loss=1.0))
    result = SimpleNamespace(out=tmp_path, records=records, summary={"main_size": "base", "baseline": "gelu"})
    (tmp_path / "figures").mkdir()
    lines = inside.section(result, tmp_path / "figures")
    summary = json.loads((tmp_path / "inside.json").read_text())
    state = load_file(str(tiny_run / "checkpoints" / "step_00000006" / "model.safetensors"))
    matrices = [v.numpy() for k, v in state.items() if k.split(".")[-2].endswith("proj")]
    assert len(matrices) == 18
    ratio = np.mean([_np_effective_rank(w) / min(w.shape) for w in matrices])
    attention = np.mean([_np_effective_rank(v.numpy()) for k, v in state.items() if k.split(".")[-2] in
                         ("q_proj", "k_proj", "v_proj", "o_proj")])
    for act in ("gelu", "polynorm"):
        d = summary["per_activation"][act]
        assert d["rank_ratio"]["values"] == pytest.approx([ratio, ratio], rel=1e-9)
        assert d["rank_attention"]["mean"] == pytest.approx(attention, rel=1e-9)
        assert d["similarity"]["n"] == 2
    assert summary["comparisons"]["polynorm"]["similarity"]["mean_diff"] == 0.0
    assert summary["comparisons"]["polynorm"]["rank_ratio"]["claim"].startswith("not significant")
    assert "gelu" not in summary["comparisons"]  # only PolyCom activations are tested against the baseline
    text = "\n".join(lines)
    assert "| gelu (baseline) |" in text and "polynorm vs gelu" in text
    assert (tmp_path / "figures" / "inside.png").stat().st_size > 0
