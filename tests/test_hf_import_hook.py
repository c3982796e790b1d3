"""The hook that registers polycom's model types with transformers (polycom.import_hooks) waits until the
import that pulled in its target has finished: ``from transformers import LlamaForCausalLM`` imports
``modeling_auto`` while ``modeling_llama`` is half-executed, and a callback run then could not import
``LlamaForCausalLM``. First on a throwaway package, then on transformers in a fresh interpreter."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap

import pytest

from polycom.import_hooks import after_import


def test_callback_waits_for_the_outermost_import_of_the_package(tmp_path, monkeypatch):
    package = tmp_path / "polycom_probe_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "outer.py").write_text("from . import middle\nVALUE = 42\n")  # VALUE exists only after middle
    (package / "middle.py").write_text("from . import target\n")
    (package / "target.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []

    def callback(target):
        seen.append((target.X, importlib.import_module("polycom_probe_pkg.outer").VALUE))

    after_import("polycom_probe_pkg.target", callback)
    try:
        import polycom_probe_pkg.outer  # noqa: F401
    finally:
        for name in [m for m in sys.modules if m.startswith("polycom_probe_pkg")]:
            monkeypatch.delitem(sys.modules, name)
    assert seen == [(1, 42)]  # run once, with outer complete (a callback run inside it raised AttributeError)
    assert sys.modules.get("polycom_probe_pkg") is None
    assert not [f for f in sys.meta_path if type(f).__name__ == "_AfterImportFinder"
                and f.name == "polycom_probe_pkg.target"]  # the finder removed itself


def test_a_failed_outer_import_still_runs_the_callback_once_the_target_is_complete(tmp_path, monkeypatch):
    package = tmp_path / "polycom_probe_bad"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "outer.py").write_text("from . import target\nraise RuntimeError('outer')\n")
    (package / "target.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    after_import("polycom_probe_bad.target", lambda m: seen.append(m.X))
    try:
        with pytest.raises(RuntimeError, match="outer"):
            import polycom_probe_bad.outer  # noqa: F401
    finally:
        for name in [m for m in sys.modules if m.startswith("polycom_probe_bad")]:
            monkeypatch.delitem(sys.modules, name)
    assert seen == [1]


def test_import_polycom_then_a_llama_class_registers_without_warnings():
    pytest.importorskip("transformers")
    script = textwrap.dedent("""
        import warnings
        warnings.simplefilter("error")  # the hook's failure is a UserWarning
        import polycom
        from transformers import LlamaForCausalLM
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING
        print(CONFIG_MAPPING["polycom"].__name__, CONFIG_MAPPING["polycom_llama"].__name__)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["PolyComConfig", "PolyComLlamaConfig"]
