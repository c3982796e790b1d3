"""polycom eval: lm-evaluation-harness on a tiny trained run. A local multiple-choice task's
accuracy and the packaged bits-per-byte task against hand-computed log-likelihoods; the
packaged tasks; unknown tasks and a missing lm-eval. lm-eval tests skip without lm_eval."""

import json
import math
import sys

import pytest
import torch
import torch.nn.functional as F

from polycom.cli import main
from polycom.data.tokenizer import ByteTokenizer
from polycom.train import run

SEQ_LEN = 32  # the model's context (data.seq_len): windows below are this long

# Local multiple-choice items: every context + choice fits the 32-byte context.
ITEMS = [
    ("import o", ["s", "x", "q", "z"], 0),
    ("def __init__(se", ["lf", "xq", "zz", "ab"], 0),
    ("    return Non", ["e", "x", "s", "q"], 0),
    ("for i in ra", ["nge(n):", "qqqq(n):", "zzzz(n):", "xyxy(n):"], 0),
    ("if __name__ == '__ma", ["in__':", "xx__':", "qq__':", "zz__':"], 0),
    ("x = ", ["1", "[]", "None", "self.x"], 3),
    ("class Foo(", ["object):", "):", "Base):", "int):"], 1),
    ("print(", ["x)", "'a')", "self)", ")"], 2),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    pytest.importorskip("lm_eval")  # before training: without lm-eval the tests using this skip at once
    tmp = tmp_path_factory.mktemp("lmeval")
    args = ["model.preset=debug", "model.activation=polynorm", "model.activation_kwargs={implementation: eager}",
            "data.tokenizer=byte", "data.max_documents=200", f"data.cache_dir={tmp / 'cache'}",
            f"data.seq_len={SEQ_LEN}", "train.batch_size=8", "train.micro_batch_size=8", "train.steps=20",
            "optim.lr=1e-2", "optim.warmup_steps=2", "train.eval_every=0", "train.checkpoint_every=0",
            "train.eval_batches=1", "train.progress=false", f"train.out_dir={tmp / 'run'}"]
    models = []
    run("tiny", args, setup_hook=models.append)
    return tmp / "run", models[0].eval()


def sum_logprob(model, context: bytes, continuation: bytes) -> float:
    """Hand computation: one forward over the bytes, log-softmax, the continuation's entries."""
    ids = list(context + continuation)
    with torch.no_grad():
        logp = F.log_softmax(model(torch.tensor([ids[:-1]])).logits[0].double(), -1)  # (T, 256)
    n = len(continuation)
    return sum(logp[len(ids) - 1 - n + i, ids[len(ids) - n + i]].item() for i in range(n))


def write_task(folder, name="local_mc"):
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps({"context": c, "choices": ch, "label": y}) + "\n" for c, ch, y in ITEMS))
    (folder / f"{name}.yaml").write_text(f"""task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: context
doc_to_choice: choices
doc_to_target: label
target_delimiter: ""
metric_list:
  - metric: acc
  - metric: acc_norm
""")


def test_local_task_accuracy_equals_a_hand_computed_comparison(trained, tmp_path):
    pytest.importorskip("lm_eval")
    from polycom.evaluation.lm_eval_runner import evaluate

    run_dir, model = trained
    write_task(tmp_path)
    summary = evaluate(run_dir, ["local_mc"], include_path=tmp_path, out_file=tmp_path / "eval.json", log=lambda *a: None)
    hand_acc, hand_norm = [], []
    for context, choices, label in ITEMS:
        lls = [sum_logprob(model, context.encode(), c.encode()) for c in choices]
        hand_acc.append(max(range(4), key=lambda i: lls[i]) == label)
        # acc_norm: log-likelihood per character of the choice (lm-eval's definition)
        hand_norm.append(max(range(4), key=lambda i: lls[i] / len(choices[i])) == label)
    got = summary["results"]["local_mc"]
    # Accuracy is a count over 8 items: exactly equal, or the two comparisons disagree on an item.
    assert got["acc,none"] == sum(hand_acc) / len(ITEMS)
    assert got["acc_norm,none"] == sum(hand_norm) / len(ITEMS)
    assert 0 < sum(hand_acc) < len(ITEMS)  # the items discriminate: neither all right nor all wrong
    assert json.loads((tmp_path / "eval.json").read_text())["results"]["local_mc"]["acc,none"] == got["acc,none"]


def hand_rolling_loglikelihood(model, text: str) -> float:
    """Disjoint windows written out: block k predicts tokens [32k, 32k + 32) from ([eot] + tokens)[32k:
    32k + 32]; a last partial block of r tokens reads the 32 positions before its end."""
    tokens = ByteTokenizer().encode(text)
    s = [ByteTokenizer.eot_id] + tokens
    total, n = 0.0, len(tokens)
    for start in range(0, n, SEQ_LEN):
        end = min(start + SEQ_LEN, n)
        lo = max(0, end - SEQ_LEN)  # input s[lo:end] predicts s[lo + 1: end + 1] = tokens[lo:end]
        with torch.no_grad():
            logp = F.log_softmax(model(torch.tensor([s[lo:end]])).logits[0].double(), -1)
        total += sum(logp[i - lo, tokens[i]].item() for i in range(start, end))
    return total


@pytest.mark.slow
def test_packaged_tasks_through_the_cli_and_bpb_against_hand_computation(trained, capsys):
    pytest.importorskip("lm_eval")
    from polycom.evaluation.tasks import build_tasks

    run_dir, model = trained
    assert main(["eval", str(run_dir), "--tasks", "polycom_cloze,polycom_bpb", "--limit", "3"]) == 0
    summary = json.loads((run_dir / "eval.json").read_text())
    cloze, bpb = summary["results"]["polycom_cloze"], summary["results"]["polycom_bpb"]
    assert 0 <= cloze["acc,none"] <= 1 and summary["limit"] == 3
    docs = [json.loads(line)["text"] for line in (build_tasks() / "polycom_bpb.jsonl").read_text().splitlines()[:3]]
    ll = sum(hand_rolling_loglikelihood(model, d) for d in docs)
    n_bytes = sum(len(d.encode()) for d in docs)
    # fp32 forwards summed in float64 on both sides; the window sums differ only in order.
    assert bpb["bits_per_byte,none"] == pytest.approx(-ll / (n_bytes * math.log(2)), rel=1e-5)
    assert bpb["byte_perplexity,none"] == pytest.approx(math.exp(-ll / n_bytes), rel=1e-5)


@pytest.mark.slow  # an unknown name makes lm-eval index its few thousand task files
def test_unknown_task_names_the_closest_one(trained, capsys):
    pytest.importorskip("lm_eval")
    run_dir, _ = trained
    assert main(["eval", str(run_dir), "--tasks", "polycom_clozee"]) == 2
    err = capsys.readouterr().err
    assert "unknown task(s) polycom_clozee" in err and "did you mean polycom_cloze" in err


def test_missing_lm_eval_prints_one_install_line(monkeypatch, capsys, tmp_path):
    for name in [m for m in sys.modules if m == "lm_eval" or m.startswith("lm_eval.")] + ["lm_eval"]:
        monkeypatch.setitem(sys.modules, name, None)  # `import lm_eval(.x)` now raises ImportError
    monkeypatch.delitem(sys.modules, "polycom.evaluation.lm_eval_runner", raising=False)
    assert main(["eval", str(tmp_path), "--tasks", "polycom_cloze"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == 'polycom eval: lm-evaluation-harness is not installed: pip install "polycom[eval]"'


def test_generate_until_is_greedy_decoding_cut_at_the_stop_string():
    pytest.importorskip("lm_eval")
    from types import SimpleNamespace

    from polycom.evaluation.generate import SamplingConfig, generate_ids
    from polycom.evaluation.lm_eval_runner import PolyComLM
    from polycom.models import build_model, model_config

    torch.manual_seed(0)
    model = build_model(model_config("debug", activation="gelu")).eval()
    lm = PolyComLM(model, ByteTokenizer())
    full = ByteTokenizer().decode(generate_ids(model, list(b"abc"), SamplingConfig(20, temperature=0), stop_id=0))
    stop = full[5:7]  # a stop string that occurs in the greedy text: the answer ends before it
    req = SimpleNamespace(args=("abc", {"until": [stop], "max_gen_toks": 20, "do_sample": False}))
    assert lm.generate_until([req]) == [full.split(stop)[0]]
    assert len(full.split(stop)[0]) <= 5


def test_cloze_items_hold_the_true_next_line_and_are_deterministic():
    from polycom.data.corpus import split_of
    from polycom.evaluation.tasks.build import CLOZE_CONTEXT_CHARS, cloze_items

    lines = [f"    value_{i} = compute_something({i}, {i * i})\n" for i in range(40)]
    text = "def f():\n" + "".join(lines)
    items = cloze_items("stdlib/fake.py", text)
    assert items == cloze_items("stdlib/fake.py", text) and len(items) == 6
    for item in items:
        answer = item["choices"][item["label"]]
        i = [ln.strip() for ln in lines].index(answer)
        before = "def f():\n" + "".join(lines[:i])
        assert item["context"] == before[-CLOZE_CONTEXT_CHARS:] + "    "  # + the answer line's indentation
        assert len(set(item["choices"])) == 4
    # Held out at 0.05 means held out at every larger validation fraction (a hash under a threshold).
    ids = [f"stdlib/m{i}.py" for i in range(2000)]
    assert all(split_of(d, 0.2) == "val" for d in ids if split_of(d, 0.05) == "val")
