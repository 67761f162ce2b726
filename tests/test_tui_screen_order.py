"""The wizard's screen order is declared once, in `OsstuneApp.FLOW`: no screen names the screen
that follows it, and changing FLOW alone changes where a screen leads."""

from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

from screen_fixtures import make_app
from textual.app import ComposeResult
from textual.widgets import Static
from tui_fixtures import run_async, to_presets

from osstune.tui.app import OsstuneApp
from osstune.tui.screens.base import WizardScreen

SCREENS = Path(__file__).parent.parent / "tui" / "screens"


def _names_used(path: Path) -> set[str]:
    """Class names a screen module mentions, and the screen modules it imports (statically, or
    by a dotted string such as 'osstune.tui.screens.review')."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            used |= {a.name for a in node.names}
            if node.module.startswith("osstune.tui.screens."):
                used.add(node.module.rsplit(".", 1)[-1])
        elif isinstance(node, ast.Import):
            used |= {a.name.rsplit(".", 1)[-1] for a in node.names
                     if a.name.startswith("osstune.tui.screens.")}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value.startswith("osstune.tui.screens."):
            used.add(node.value.rsplit(".", 1)[-1])
    return used


def test_no_screen_names_another_flow_screen() -> None:
    flow_modules = {module for module, _ in OsstuneApp.FLOW}
    flow_classes = {name for _, name in OsstuneApp.FLOW}
    for module, name in OsstuneApp.FLOW:
        others = (flow_modules | flow_classes) - {module, name}
        used = _names_used(SCREENS / f"{module}.py") & others
        assert not used, f"tui/screens/{module}.py names {sorted(used)}: the order is FLOW's"


class DetourScreen(WizardScreen):
    """A screen FLOW can put anywhere: it shows itself and moves on at once when asked."""

    def compose(self) -> ComposeResult:
        yield Static("detour", id="detour")

    def on_mount(self) -> None:
        self.advance()


@run_async
async def test_flow_alone_decides_where_a_screen_leads(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    module = types.ModuleType("osstune.tui.screens.detour")
    module.DetourScreen = DetourScreen  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "osstune.tui.screens.detour", module)
    flow = list(OsstuneApp.FLOW)
    flow.insert(1, ("detour", "DetourScreen"))  # between the hardware and the preset screens
    monkeypatch.setattr(OsstuneApp, "FLOW", tuple(flow))
    monkeypatch.chdir(tmp_path)
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await to_presets(pilot)  # Enter on hardware: the detour, which advances to the presets
        stack = [type(s).__name__ for s in app.screen_stack]
        assert stack[-3:] == ["HardwareScreen", "DetourScreen", "PresetScreen"], stack
