"""The dependency direction of src/lmlab (docs/design.md §4), read from every module's imports.

`models` builds on nothing else of lmlab; objectives and tasks use models, data and heads, never each other; the run
core (`runs`), `tracking` and `callbacks` know no specific objective, task or stage; a stage imports the run core and
the building blocks, never another stage; a study (`studies`) runs stages and nothing imports it. `errors`, `stats`,
`config_schema` and `atomic_file` are leaves everyone may use."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "lmlab"
LEAVES = {"errors", "config_schema", "atomic_file", "stats", "child_env", "plugins", "file_lock"}
STAGES = {"pretraining", "finetuning", "meta", "rl"}
ORCHESTRATORS = {"studies"}  # run stages; no stage and nothing below imports them
# package -> the lmlab packages (first component under lmlab) it may import besides itself and the leaves
ALLOWED = {
    "models": set(),
    "data": {"models"},
    "heads": {"models"},
    "objectives": {"models", "data", "heads"},
    "tasks": {"models", "data", "heads", "generation"},
    "generation": {"models", "data"},
    "tracking": set(),
    "callbacks": set(),
    # The Hugging Face door: mapping tables and checkpoint reading, on the model and the tokenizer only.
    "hf": {"models", "data"},
    "runs": {"models", "data", "tracking", "callbacks", "hf"},
    # `export.py`: a run's export written as an HF model directory (and registered in MLflow).
    # It reads what the run's objective and task family say about their Hugging Face head (their own attributes).
    "publishing": {"models", "data", "hf", "runs", "tracking", "objectives", "tasks", "generation"},
    "pretraining": {"models", "data", "heads", "objectives", "runs", "tracking", "callbacks"},
    "finetuning": {"models", "data", "heads", "tasks", "runs", "tracking", "callbacks"},
    "meta": {"models", "data", "heads", "tasks", "runs", "tracking", "callbacks"},
    "rl": {"models", "data", "heads", "generation", "objectives", "tasks", "runs", "tracking", "callbacks"},
    # A study composes stages (it launches them as processes, and measures a pretraining config's FLOPs): above
    # every stage, imported by none.
    "studies": {"models", "data", "objectives", "runs", "tracking", "pretraining"},
}


def lmlab_imports(path: Path) -> set[str]:
    """The lmlab packages (first component after `lmlab.`) that a module imports, at any depth of the module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names if node.module == "lmlab"]
        for name in names:
            parts = name.split(".")
            if parts[0] == "lmlab" and len(parts) > 1:
                found.add(parts[1])
    return found


def _package(path: Path) -> str:
    return path.relative_to(SRC).parts[0].removesuffix(".py")


MODULES = sorted(p for p in SRC.rglob("*.py") if _package(p) not in LEAVES | {"__init__"})


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_every_module_imports_only_what_its_layer_may(path):
    package = _package(path)
    assert package in ALLOWED, f"{package} has no place in the layering yet: add it to ALLOWED (and design.md)"
    imported = lmlab_imports(path) - LEAVES - {package}
    assert imported <= ALLOWED[package], f"{path.relative_to(SRC)} imports {sorted(imported - ALLOWED[package])}"


def test_no_stage_imports_another_and_nothing_below_imports_a_stage():
    for path in MODULES:
        package = _package(path)
        imported = lmlab_imports(path)
        assert not imported & ORCHESTRATORS - {package}, f"{path.relative_to(SRC)} imports {imported & ORCHESTRATORS}"
        if package in ORCHESTRATORS:
            continue
        stages = (imported & STAGES) - {package}
        assert not stages, f"{path.relative_to(SRC)} imports the stage(s) {sorted(stages)}"


def test_the_import_walk_sees_nested_and_from_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import lmlab.models\nfrom lmlab import heads\ndef f():\n    from lmlab.tasks.base import x\n")
    assert lmlab_imports(module) == {"models", "heads", "tasks"}
