"""Small modules, short functions: no Python file over 400 lines and no function over 60 lines,
in the package, the benches and the tests alike. A declarative table that must be longer is named
in TABLES with the reason; a planted long file and function must be caught."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent
FOLDERS = ("engine", "tui", "presets", "bench", "tests")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
TABLES: dict[str, str] = {}  # "path:function" -> why it is a declarative table (none today)


def python_files(root: Path) -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (root / folder).rglob("*.py")
                  if "__pycache__" not in p.parts)


def too_long(root: Path) -> list[str]:
    found = []
    for path in python_files(root):
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(root).as_posix()
        if (lines := len(text.splitlines())) > MAX_FILE_LINES:
            found.append(f"{name}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES and f"{name}:{node.name}" not in TABLES:
                    found.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    return found


def test_no_long_file_or_function() -> None:
    assert too_long(ROOT) == []


def test_a_planted_long_file_and_function_are_caught(tmp_path: Path) -> None:
    (tmp_path / "engine").mkdir()
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "engine" / "long.py").write_text("def f():\n" + body + "\n" * MAX_FILE_LINES)
    assert too_long(tmp_path) == [f"engine/long.py: {MAX_FUNCTION_LINES + 1 + MAX_FILE_LINES} "
                                  "lines", f"engine/long.py:1 f: {MAX_FUNCTION_LINES + 1} lines"]
