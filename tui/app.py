"""The osstune wizard: hardware -> preset -> dataset -> review -> training -> done.

The app is given where its data comes from (STYLE.md): a hardware source (probe or a profile file)
and a run launcher (the engine subprocess, or whatever a test hands in). No torch in this process.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from textual.app import App
from textual.binding import Binding

from osstune.tui.run_source import RunLauncher
from osstune.tui.screens.plan import Plan
from osstune.tui.settings import Settings

if TYPE_CHECKING:
    from osstune.engine.plan.hardware import HardwareProfile

HardwareSource = Callable[[], "HardwareProfile"]


class OsstuneApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "osstune"
    SUB_TITLE = "fine-tune GPT-OSS"
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", priority=True)]

    def __init__(
        self,
        hardware_source: HardwareSource,
        run_launcher: RunLauncher,
        settings_path: Path | None = None,
    ) -> None:
        super().__init__()
        self.hardware_source = hardware_source
        self.run_launcher = run_launcher
        self.settings_path = settings_path
        self.settings = Settings.load(settings_path)
        self.plan = Plan()

    def on_mount(self) -> None:
        from osstune.tui.screens.hardware import HardwareScreen

        self.push_screen(HardwareScreen())

    def remember(self, **values: str | None) -> None:
        """Update the remembered choices; a failure to write them must not stop the wizard."""
        for key, value in values.items():
            setattr(self.settings, key, value)
        try:
            self.settings.save(self.settings_path)
        except OSError as e:
            self.notify(f"could not save wizard settings: {e}", severity="warning")
