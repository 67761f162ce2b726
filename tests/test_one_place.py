"""One obvious place for each shared behaviour: the helpers and constants that the front-ends and
the engine share are defined once (in the module named here) and imported everywhere else, so two
copies cannot drift apart (as two `fmt_duration`s with different output once did)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent

ONE_PLACE = {  # name -> the one module that defines it
    "fmt_duration": "engine/plan/units.py",  # an estimate: '3 h 05 min'
    "fmt_clock": "engine/plan/units.py",  # a running clock: '1:02:05'
    "fmt_gib": "engine/plan/units.py",
    "plural": "engine/plan/units.py",
    "GIB": "engine/plan/units.py",  # bytes in a GiB
    "PAD_ID": "engine/data/packing.py",
    "IGNORE_INDEX": "engine/data/harmony.py",
    "serve_commands": "engine/session/launch.py",
    "serve_hint_lines": "tui/render/run.py",
    "render_colour": "tui/render/tokens.py",
    "token_text": "tui/render/tokens.py",
    "VERDICT_COLOUR": "tui/render/verdict.py",
    "VERDICT_STYLE": None,  # gone: verdict_style() in tui/render/verdict.py
    "verdict_style": "tui/render/verdict.py",
    "FLOW": "tui/app.py",  # the wizard's screen order
    "CHECKPOINTS_DIR": "engine/session/run_folder.py",
}


def top_level_names(path: Path) -> set[str]:
    """Functions, classes and assigned names at a module's top level (class bodies too, for
    `FLOW` on the app)."""
    names: set[str] = set()
    body = list(ast.parse(path.read_text(encoding="utf-8")).body)
    for node in body:
        if isinstance(node, ast.ClassDef):
            body.extend(node.body)  # walked on as the loop reaches them
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def definitions(roots: list[Path]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {name: [] for name in ONE_PLACE}
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            for name in top_level_names(path) & set(ONE_PLACE):
                found[name].append(path.relative_to(root.parent).as_posix())
    return found


@pytest.mark.parametrize("name", sorted(ONE_PLACE))
def test_defined_in_one_place(name: str) -> None:
    found = definitions([ROOT / "engine", ROOT / "tui"])[name]
    assert found == ([ONE_PLACE[name]] if ONE_PLACE[name] else []), found


def test_a_second_copy_is_caught(tmp_path: Path) -> None:
    for folder, text in (("engine", "PAD_ID = 199999\n"), ("tui", "class W:\n    FLOW = ()\n"),
                         ("tui2", "def fmt_duration(s):\n    return str(s)\n")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "copy.py").write_text(text)
    found = definitions([tmp_path / "engine", tmp_path / "tui", tmp_path / "tui2"])
    assert (found["PAD_ID"], found["FLOW"], found["fmt_duration"]) == (
        ["engine/copy.py"], ["tui/copy.py"], ["tui2/copy.py"])
