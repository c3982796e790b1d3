"""Packaging facts that must hold: a lean core, lazy extras, one-line errors naming the extra.

The core install (``pip install polycom``: torch, numpy, safetensors) is also tested for real by
``.ci/run``, which runs this file and the core subset in a second venv without any extra.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from polycom.extras import EXTRAS, MissingExtraError, extra_of, missing_extra, require

ROOT = Path(__file__).resolve().parents[1]
CORE_DEPENDENCIES = {"torch", "numpy", "safetensors"}
# Modules `import polycom` must not import: the lab's (slow, optional), the other extras', and
# Dynamo (a second of import time; it loads when something is compiled, not before). tqdm is
# left out: `import torch` itself imports it when it is installed.
NOT_AT_IMPORT = (*(m for m in EXTRAS["lab"] if m != "tqdm"), "transformers", "torch_geometric", "kernels", "triton", "submitit",
                 "torch._dynamo")

# Simulates an install without the lab extra: a None entry in sys.modules makes `import yaml`
# raise ModuleNotFoundError(name='yaml'), and importlib.util.find_spec('yaml') return None.
_WITHOUT_LAB = "import sys\nfor m in {mods!r}: sys.modules[m] = None\n"


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_import_polycom_loads_no_extra_and_no_dynamo():
    out = _python(f"import sys, json, polycom\nprint(json.dumps([m for m in {NOT_AT_IMPORT!r} if m in sys.modules]))")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == []


def test_core_works_without_the_lab_extra():
    code = _WITHOUT_LAB.format(mods=EXTRAS["lab"]) + (
        "import torch, polycom\n"
        "from polycom.models import build_model, model_config\n"
        "for name in ('debug', 'debug-moe'):\n"
        "    model = build_model(model_config(name, activation='polynorm',\n"
        "                                     activation_kwargs={'implementation': 'eager'}))  # no Inductor compile\n"
        "    model(torch.randint(0, 64, (2, 8))).logits.sum().backward()\n"
        "y = polycom.functional.poly_relu(torch.randn(3, 5), torch.ones(4), torch.zeros(1))\n"
        "try:\n"
        "    import polycom.train\n"
        "except ImportError as e:\n"
        "    print(type(e).__name__, e)\n")
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("MissingExtraError polycom.train needs polycom's 'lab' extra (no module named 'yaml'): "
                                  "pip install 'polycom[lab]'")


_ARGVS = [["compare"], ["compare", "--preset", "small", "--dry-run"], ["train", "x=1"], ["analyze", "runs/a"],
          ["export", "runs/a"], ["--help"]]


def test_cli_names_the_lab_extra_in_one_line():
    """Each command that needs the lab: exit status 2 and one line naming the extra; --help still works."""
    code = _WITHOUT_LAB.format(mods=EXTRAS["lab"]) + f"""
import contextlib, io, json
from polycom.cli import main
results = []
for argv in {_ARGVS!r}:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code
    results.append([rc, err.getvalue(), out.getvalue()])
print(json.dumps(results))
"""
    out = _python(code)
    assert out.returncode == 0, out.stderr
    *commands, (help_rc, _, help_text) = json.loads(out.stdout.splitlines()[-1])
    for argv, (rc, stderr, _) in zip(_ARGVS, commands):
        # The last line: torch 2.4 prints a FutureWarning of its own when the CLI imports torch.export.
        assert rc == 2 and "Traceback" not in stderr, (argv, stderr)
        assert stderr.splitlines()[-1] == (f"polycom {argv[0]}: error: this command needs polycom's 'lab' extra "
                                           "(no module named 'yaml'): pip install 'polycom[lab]'"), argv
    assert help_rc == 0 and "(needs pip install 'polycom[lab]')" in help_text and "activations" in help_text


def test_polycom_hf_names_its_extra():
    out = _python(_WITHOUT_LAB.format(mods=("transformers",))
                  + "try:\n    import polycom.hf\nexcept ImportError as e:\n    print(type(e).__name__, e)\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == ("MissingExtraError polycom.hf needs polycom's 'hf' extra (no module named "
                                           "'transformers'): pip install 'polycom[hf]'")


def test_export_names_the_hf_extra_in_one_line(tmp_path):
    """Without transformers, ``polycom export`` names the 'hf' extra the way the lab's commands
    name theirs (through polycom.extras). Export needs the lab too: without it (the core venv of
    .ci/core) the lab's line comes first, tested by test_cli_names_the_lab_extra_in_one_line."""
    try:
        require("lab", "polycom export")
    except MissingExtraError:
        pytest.skip("the lab extra is not installed")
    code = _WITHOUT_LAB.format(mods=("transformers",)) + f"""
import contextlib, io, json
from polycom.cli import main
err = io.StringIO()
with contextlib.redirect_stderr(err):
    rc = main(["export", {str(tmp_path)!r}])
print(json.dumps([rc, err.getvalue()]))
"""
    out = _python(code)
    assert out.returncode == 0, out.stderr
    rc, stderr = json.loads(out.stdout.splitlines()[-1])
    assert rc == 2 and stderr.splitlines()[-1] == ("polycom export: error: this command needs polycom's 'hf' extra "
                                                   "(no module named 'transformers'): pip install 'polycom[hf]'")


def test_missing_extra_keeps_unrelated_import_errors():
    assert missing_extra(ModuleNotFoundError("No module named 'nope'", name="nope"), "x") is None
    assert missing_extra(ImportError("cannot import name 'f'"), "x") is None
    error = missing_extra(ModuleNotFoundError("No module named 'scipy.stats'", name="scipy.stats"), "stats")
    assert isinstance(error, MissingExtraError) and (error.extra, error.module) == ("lab", "scipy")
    assert extra_of("torch_geometric.nn") == "graph" and extra_of("torch") is None


def test_require_names_the_extra_and_the_missing_module(monkeypatch):
    monkeypatch.setitem(EXTRAS, "present", ("torch", "numpy"))
    monkeypatch.setitem(EXTRAS, "absent", ("numpy", "polycom_no_such_module"))
    require("present", "a feature")  # installed: no error
    with pytest.raises(MissingExtraError) as caught:
        require("absent", "a feature")
    assert str(caught.value) == ("a feature needs polycom's 'absent' extra (no module named 'polycom_no_such_module'): "
                                 "pip install 'polycom[absent]'")


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11; the floor venv (3.10) skips it
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _names(requirements) -> set[str]:
    import re

    return {re.split(r"[<>=!\[ ;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_pyproject_core_is_lean_and_extras_match_the_module_table():
    project = _pyproject()["project"]
    assert _names(project["dependencies"]) == CORE_DEPENDENCIES
    extras = project["optional-dependencies"]
    distribution = {"yaml": "pyyaml", "lm_eval": "lm-eval", "torch_geometric": "torch-geometric"}
    for extra, modules in EXTRAS.items():
        assert {distribution.get(m, m).replace("_", "-") for m in modules} <= _names(extras[extra]), extra
    assert "polycom[lab]" in extras["test"]  # the README's test command installs the lab


def test_license_and_typed_marker_ship():
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]  # the README and pyproject say Apache-2.0
    assert (ROOT / "src" / "polycom" / "py.typed").exists()
    assert "py.typed" in _pyproject()["tool"]["setuptools"]["package-data"]["polycom"]


def test_triton_probe_carries_dynamos_constant_mark():
    """ops/dispatch.py marks ``_triton_importable`` by hand (the decorator would import Dynamo at
    ``import polycom``): the mark must be the one ``assume_constant_result`` sets today."""
    from polycom.ops import dispatch

    def probe() -> bool:
        return True

    marked = torch.compiler.assume_constant_result(probe)
    marks = {k: v for k, v in vars(marked).items() if k.startswith("_dynamo")}
    assert marks and all(getattr(dispatch._triton_importable, k, None) == v for k, v in marks.items())
