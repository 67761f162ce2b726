"""The layers, checked by reading every import (module level and inside functions alike):

- the torch-free core (`engine/plan`, `engine/data`, `engine/session`) and the front-ends (`tui/`)
  import no torch-stack module and nothing from the trainer;
- nothing under `engine/` imports the front-ends or Textual.

`if TYPE_CHECKING:` blocks are skipped (never executed). A planted violation must be caught,
so the checker itself is tested too. A second test imports every core module in a fresh
interpreter and looks at what was actually loaded.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
TORCH_STACK = ("torch", "peft", "accelerate", "osstune.engine.trainer")
FRONT_ENDS = ("osstune.tui", "textual")
CORE = ("engine/plan", "engine/data", "engine/session")
CONTRACTS = {  # folder -> forbidden import prefixes
    **{folder: TORCH_STACK + FRONT_ENDS for folder in CORE},
    "tui": TORCH_STACK,
    "engine/trainer": FRONT_ENDS,
}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


DYNAMIC_IMPORTS = ("import_module", "__import__")  # importlib.import_module("x"), __import__("x")


def _dynamic_import(node: ast.Call) -> str | None:
    """The module `importlib.import_module("torch")` or `__import__("torch")` names, if literal."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name in DYNAMIC_IMPORTS and node.args and isinstance(node.args[0], ast.Constant) \
            and isinstance(node.args[0].value, str):
        return node.args[0].value
    return None


def imported_names(source: str) -> list[tuple[int, str]]:
    """(line, module) for every import statement, at any depth, outside TYPE_CHECKING blocks,
    and for every dynamic import of a module named by a string literal."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Call) and (module := _dynamic_import(node)):
            found.append((node.lineno, module))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return found


def violations(folder: Path, forbidden: tuple[str, ...]) -> list[str]:
    out: dict[str, str] = {}  # one entry per import statement
    for path in sorted(folder.rglob("*.py")):
        for line, module in imported_names(path.read_text(encoding="utf-8")):
            where = f"{path.relative_to(folder.parent)}:{line}"
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                out.setdefault(where, f"{where} imports {module}")
    return list(out.values())


@pytest.mark.parametrize("folder", sorted(CONTRACTS))
def test_layer_imports_nothing_forbidden(folder: str) -> None:
    assert violations(ROOT / folder, CONTRACTS[folder]) == []


@pytest.mark.parametrize("planted", [
    "import torch\n",
    "def f():\n    from torch import nn\n",
    "def f():\n    if True:\n        import peft.tuners\n",
    "from osstune.engine.trainer import merge\n",
    "class A:\n    def m(self):\n        import osstune.engine.trainer.model\n",
    "import importlib\ndef f():\n    return importlib.import_module('torch.nn')\n",
    "def f():\n    return __import__('peft')\n",
    "from textual.app import App\n",
])
def test_the_contract_catches_a_planted_import(tmp_path: Path, planted: str) -> None:
    layer = tmp_path / "plan"
    layer.mkdir()
    (layer / "clean.py").write_text("import json\nfrom typing import TYPE_CHECKING\n"
                                    "if TYPE_CHECKING:\n    import torch\n")
    (layer / "bad.py").write_text(planted)
    found = violations(layer, CONTRACTS["engine/plan"])
    assert len(found) == 1 and found[0].startswith("plan/bad.py:"), found


def test_trainer_importing_the_front_end_is_caught(tmp_path: Path) -> None:
    layer = tmp_path / "trainer"
    layer.mkdir()
    (layer / "x.py").write_text("def f():\n    from osstune.tui import output\n")
    assert violations(layer, CONTRACTS["engine/trainer"]) == ["trainer/x.py:2 imports osstune.tui"]


def _modules(folder: str) -> list[str]:
    base = ROOT / folder
    names = []
    for path in sorted(base.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append("osstune." + ".".join(parts))
    return names


def loaded_after_importing(modules: list[str], watched: str) -> list[str]:
    """In a fresh interpreter, import `modules`; the loaded modules for which `watched` (a Python
    expression over `m`, the module name) holds."""
    code = ("import importlib, json, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            f"print(json.dumps(sorted(m for m in sys.modules if {watched})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_core_modules_load_no_torch_stack_when_imported() -> None:
    modules = [m for folder in CORE for m in _modules(folder)]
    assert loaded_after_importing(modules, (
        "m.split('.')[0] in ('torch', 'transformers', 'peft', 'textual', 'rich', 'typer') "
        "or m.startswith(('osstune.tui', 'osstune.engine.trainer'))")) == []


def test_front_end_modules_load_no_torch_stack_when_imported() -> None:
    """The wizard and the CLI import every module of tui/ and still have no torch in memory."""
    assert loaded_after_importing(_modules("tui"), (
        "m.split('.')[0] in ('torch', 'peft', 'accelerate') "
        "or m.startswith('osstune.engine.trainer')")) == []


def test_every_package_folder_is_installed_under_osstune() -> None:
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    on_disk = {m for top in ("engine", "tui", "presets") for m in _modules(top)
               if (ROOT / Path(*m.split(".")[1:]) / "__init__.py").is_file()}
    assert on_disk == listed


def test_the_license_is_an_spdx_expression_setuptools_reads_without_a_warning() -> None:
    """A `license = {text = ...}` table (or License :: classifiers) makes setuptools >= 77 print
    its license deprecation warning on every install; an SPDX string is what it reads."""
    import re

    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = data["project"]
    assert project["license"] == "Apache-2.0"
    assert not any(c.startswith("License ::") for c in project.get("classifiers", []))
    requires = " ".join(data["build-system"]["requires"])
    version = re.search(r"setuptools>=(\d+)", requires)
    assert version and int(version.group(1)) >= 77  # the first setuptools that reads SPDX
