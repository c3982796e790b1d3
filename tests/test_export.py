"""polycom export / generate on a tiny trained run: Hugging Face round trip (logits to 1e-6,
tokenizer ids, transformers' generate), the CLI commands, and their bad-input errors."""

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from polycom.cli import main  # noqa: E402
from polycom.data.tokenizer import EOT, ByteTokenizer, train_bpe  # noqa: E402
from polycom.evaluation.export import export_run, to_hf_tokenizer  # noqa: E402
from polycom.evaluation.generate import SamplingConfig, generate_ids  # noqa: E402
from polycom.train import run  # noqa: E402

TEXTS = ["def f(x):\n    return x + 1\n", "héllo wörld ∑ Ā \x00 tab\tend", f"two docs{EOT}joined", "  leading spaces"]


def tiny_run_args(tmp_path, name="run"):
    """A debug-size byte-tokenizer run of 6 steps (eager activations: no per-shape compiles)."""
    return ["model.preset=debug", "model.activation=polynorm", "model.activation_kwargs={implementation: eager}",
            "data.tokenizer=byte", "data.max_documents=200", f"data.cache_dir={tmp_path / 'cache'}",
            "data.seq_len=32", "train.batch_size=8", "train.micro_batch_size=8", "train.steps=6",
            "train.eval_every=0", "train.checkpoint_every=0", "train.eval_batches=1", "train.progress=false",
            f"train.out_dir={tmp_path / name}"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    models = []
    run("tiny", tiny_run_args(tmp), setup_hook=models.append)  # the trainer's own model object
    return tmp / "run", models[0].eval()


def test_export_round_trip_logits_tokenizer_and_hf_generate(trained, tmp_path):
    run_dir, trainer_model = trained
    out = export_run(run_dir, tmp_path / "hf")
    import polycom.hf  # noqa: F401 - registers model_type "polycom" with the Auto classes
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    assert isinstance(tok, transformers.PreTrainedTokenizerFast)
    for text in TEXTS:  # the same ids as the tokenizer the run trained with
        assert tok.encode(text, add_special_tokens=False) == ByteTokenizer().encode(text)
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    assert tok.eos_token_id == ByteTokenizer.eot_id
    ids = torch.tensor([ByteTokenizer().encode(TEXTS[0] + TEXTS[1])[:32]])
    with torch.no_grad():
        want, got = trainer_model(ids).logits, hf(ids).logits
    # The same weights and the same code: equal up to fp32 summation order (1e-6 asked, 0 expected).
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    meta = json.loads((out / "polycom_export.json").read_text())
    # The folder carries its model code (tests/test_hf_portable.py loads such folders without polycom).
    auto_map = json.loads((out / "config.json").read_text())["auto_map"]
    assert auto_map == {"AutoConfig": "configuration_polycom.PolyComConfig",
                        "AutoModelForCausalLM": "modeling_polycom.PolyComForCausalLM"}
    remote = Path(polycom.hf.__file__).parent / "remote"
    for name in ("configuration_polycom.py", "modeling_polycom.py", "polycom_activations.py"):
        assert (out / name).read_bytes() == (remote / name).read_bytes(), name
    assert meta["step"] == 6 and meta["tokenizer"] == "byte"
    # transformers' generate (no KV cache: recomputes the prefix) == polycom's cached greedy decoding.
    prompt = ids[:, :10]
    hf_out = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False,
                         pad_token_id=tok.pad_token_id, eos_token_id=None)
    ours = generate_ids(trainer_model, prompt[0].tolist(), SamplingConfig(max_new_tokens=12, temperature=0))
    assert hf_out[0, 10:].tolist() == ours


def test_export_refuses_an_existing_folder_unless_forced(trained, tmp_path):
    run_dir, _ = trained
    out = tmp_path / "hf"
    export_run(run_dir, out)  # an earlier export: the only kind of folder --force replaces
    (out / "stale.txt").write_text("old")
    with pytest.raises(FileExistsError, match="--force"):
        export_run(run_dir, out)
    assert main(["export", str(run_dir), "--out", str(out)]) == 2
    assert main(["export", str(run_dir), "--out", str(out), "--force"]) == 0
    assert (out / "model.safetensors").exists() and not (out / "stale.txt").exists()


def test_export_without_a_checkpoint_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.yaml").write_text("{}\n")
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        export_run(tmp_path / "empty")
    assert main(["export", str(tmp_path / "nothing")]) == 2
    assert "not a polycom run folder" in capsys.readouterr().err


def test_bpe_tokenizer_exports_with_the_same_ids(tmp_path):
    corpus = [t * 20 for t in TEXTS] + ["import os\nimport sys\n" * 30]
    bpe = train_bpe(iter(corpus), vocab_size=300)
    hf = to_hf_tokenizer(bpe)
    hf.save_pretrained(tmp_path)
    loaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for text in TEXTS + ["import sys, os"]:
        assert loaded.encode(text, add_special_tokens=False) == bpe.encode(text)
        assert loaded.decode(bpe.encode(text)) == text
    assert loaded.eos_token == EOT and loaded.eos_token_id == bpe.eot_id


def test_generate_cli_on_run_and_export_and_a_too_long_prompt(trained, tmp_path, capsys):
    run_dir, trainer_model = trained
    prompt = "def main():\n"
    new = generate_ids(trainer_model, ByteTokenizer().encode(prompt), SamplingConfig(max_new_tokens=8, temperature=0),
                       stop_id=0)
    want = prompt + ByteTokenizer().decode([t for t in new if t != 0])
    assert main(["generate", str(run_dir), "--prompt", prompt, "--max-new-tokens", "8", "--temperature", "0"]) == 0
    assert capsys.readouterr().out == want + "\n"
    out = export_run(run_dir, tmp_path / "hf", log=lambda *a: None)
    assert main(["generate", str(out), "--prompt", prompt, "--max-new-tokens", "8", "--temperature", "0"]) == 0
    assert capsys.readouterr().out == want + "\n"
    assert main(["generate", str(run_dir), "--prompt", "x" * 65]) == 2  # max_seq_len is 32
    assert "longer than the model's context (max_seq_len=32)" in capsys.readouterr().err
