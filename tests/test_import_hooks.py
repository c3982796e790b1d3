"""``import polycom`` registers model_type "polycom" with transformers' Auto classes lazily: only once
the program imports them (before or after polycom), and ``import polycom`` never imports transformers.
The hook itself (polycom.import_hooks) on a throwaway module."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from polycom.import_hooks import after_import


def _module(tmp_path, monkeypatch, name: str, body: str = "VALUE = 42\n"):
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)


def test_callback_runs_once_after_the_module_executes(tmp_path, monkeypatch):
    _module(tmp_path, monkeypatch, "polycom_probe_a")
    seen = []
    after_import("polycom_probe_a", lambda m: seen.append(m.VALUE))
    assert seen == [] and "polycom_probe_a" not in sys.modules  # nothing imported yet
    import polycom_probe_a

    assert seen == [42] and polycom_probe_a.__loader__.__class__.__name__ != "_CallbackLoader"
    monkeypatch.delitem(sys.modules, "polycom_probe_a")
    import polycom_probe_a  # noqa: F811, F401 - a second import: the hook is gone

    assert seen == [42]
    after_import("polycom_probe_a", lambda m: seen.append("at once"))  # already imported: runs now
    assert seen == [42, "at once"]


def test_a_failing_callback_warns_and_the_import_still_succeeds(tmp_path, monkeypatch):
    _module(tmp_path, monkeypatch, "polycom_probe_b")
    after_import("polycom_probe_b", lambda m: 1 / 0)
    with pytest.warns(UserWarning, match="after importing polycom_probe_b failed: ZeroDivisionError"):
        import polycom_probe_b
    assert polycom_probe_b.VALUE == 42


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pytest.importorskip("transformers")
    import polycom.hf as H

    folder = tmp_path_factory.mktemp("hf")
    H.PolyComForCausalLM(H.PolyComConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=2, max_seq_len=16,
                                         activation="polynorm")).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("first", ["polycom", "transformers"])
def test_automodel_loads_after_import_polycom_in_either_order(exported, first):
    imports = ["import polycom", "from transformers import AutoModelForCausalLM"]
    script = textwrap.dedent(f"""
        import sys
        {imports[0] if first == "polycom" else imports[1]}
        {'assert "transformers" not in sys.modules, "import polycom imported transformers"' if first == "polycom" else ""}
        {imports[1] if first == "polycom" else imports[0]}
        model = AutoModelForCausalLM.from_pretrained({str(exported)!r})
        print(type(model).__name__, model.config.activation)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["PolyComForCausalLM", "polynorm"]
