"""docs/architecture.md's dependency rules, checked on the source: a layer imports only from layers below it.

Every ``import`` and ``from ... import`` in src/polycom (including those inside functions) is resolved to
its top-level unit (``polycom.train``, ``polycom.ops``, ...) and must point to a lower layer or its own unit.
A new top-level module must be placed in LAYERS (and in docs/architecture.md) before this passes.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# unit -> layer; keep in the order of docs/architecture.md
LAYERS = {
    "polycom.errors": 0, "polycom.validation": 0, "polycom.timing": 0, "polycom.environment": 0,
    "polycom.memory": 0, "polycom.import_hooks": 0, "polycom.extras": 0,
    "polycom.reference": 1,
    "polycom.ops": 2,
    "polycom.registry": 3, "polycom.activations": 3, "polycom.functional": 3, "polycom.baselines": 3,
    "polycom.models": 4, "polycom.data": 4, "polycom.kernels_hub": 4,
    "polycom.train": 5, "polycom.hf": 5,
    "polycom.analysis": 6, "polycom.evaluation": 6,
    "polycom.experiments": 7,
    "polycom.graph": 8,
    "polycom.cli": 9,
}
LAYERS["polycom"] = 3  # the package root re-exports the public API of layer 3
# Units of layer 3 form one concept (formulas, modules, registry) and may import each other.
SAME_LAYER_OK = {3}
# The one upward import: the package root imports polycom.hf inside a hook that runs only once the
# program itself imports transformers' Auto model classes (polycom/import_hooks.py), so that
# `import polycom` suffices for AutoModelForCausalLM.from_pretrained without importing transformers.
UPWARD_OK = {("polycom/__init__.py", "polycom.hf")}


def _unit(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def _module_name(path: Path, root: Path = SRC) -> tuple[str, str]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_pkg = parts[-1] == "__init__"
    if is_pkg:
        parts = parts[:-1]
    name = ".".join(parts)
    return name, name if is_pkg else name.rsplit(".", 1)[0]


def imports_of(path: Path, root: Path = SRC) -> set[str]:
    name, package = _module_name(path, root)
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {t for t in out if t == "polycom" or t.startswith("polycom.")}


def test_every_unit_has_a_layer():
    units = {_unit(_module_name(p)[0]) for p in (SRC / "polycom").rglob("*.py")}
    assert not units - set(LAYERS), f"place these in LAYERS and docs/architecture.md: {sorted(units - set(LAYERS))}"


def violations(root: Path) -> list[str]:
    bad = []
    for path in sorted((root / "polycom").rglob("*.py")):
        unit = _unit(_module_name(path, root)[0])
        for target in imports_of(path, root):
            other = _unit(target)
            if other == unit or other not in LAYERS or (path.relative_to(root).as_posix(), target) in UPWARD_OK:
                continue
            ok = LAYERS[other] < LAYERS[unit] or (LAYERS[other] == LAYERS[unit] in SAME_LAYER_OK)
            if not ok:
                bad.append(f"{path.relative_to(root)} (layer {LAYERS[unit]}) imports {target} (layer {LAYERS[other]})")
    return bad


def test_imports_point_down():
    bad = violations(SRC)
    assert not bad, "\n".join(bad)


def test_the_checker_sees_a_violation(tmp_path):
    """The rule can fail: a models module importing the trainer (relative import, inside a function) is reported."""
    probe = tmp_path / "polycom" / "models" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("def f():\n    from ..train import run\n    from . import layers\n")
    assert violations(tmp_path) == ["polycom/models/probe.py (layer 4) imports polycom.train (layer 5)"]
