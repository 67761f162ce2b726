"""The osstune wizard: hardware -> preset -> dataset -> review -> training -> done (`FLOW`).

The app is given where its data comes from: a hardware source (probe or a profile file) and a run
launcher (engine/session/run_session.py: `EngineLauncher`, or a test's scripted one). No torch in
this process.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from textual.app import App
from textual.binding import Binding
from textual.screen import Screen

from osstune.tui.screens.base import NARROW_WIDTH, Advance
from osstune.tui.screens.plan import Plan
from osstune.tui.settings import Settings, machine_key

if TYPE_CHECKING:
    from osstune.engine.plan.hardware import HardwareProfile
    from osstune.engine.session.run_session import Launcher

HardwareSource = Callable[[], "HardwareProfile"]


class OsstuneApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "osstune"
    SUB_TITLE = "fine-tune GPT-OSS"
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", priority=True)]
    # Screens get `-narrow` below NARROW_WIDTH columns and `-short` below 30 rows (app.tcss).
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (NARROW_WIDTH, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (30, "-tall")]
    # Where each screen leads: the one place the wizard's order is written (module in
    # tui/screens, class). Screens call `self.advance(config)`; training and done screens are made
    # for the config they are given. Each is imported when first shown: the first paints sooner.
    FLOW: tuple[tuple[str, str], ...] = (
        ("hardware", "HardwareScreen"), ("preset", "PresetScreen"), ("dataset", "DatasetScreen"),
        ("review", "ReviewScreen"), ("training", "TrainingScreen"), ("done", "DoneScreen"))

    def __init__(
        self,
        hardware_source: HardwareSource,
        run_launcher: Launcher,
        settings_path: Path | None = None,
        profile_is_this_machine: bool = True,
    ) -> None:
        super().__init__()
        self.hardware_source = hardware_source
        # False when planning from a profile file (`--hardware FILE`): runs still start here, so
        # their pre-flight probes this machine instead of trusting the file (as `osstune run`).
        self.profile_is_this_machine = profile_is_this_machine
        self.run_launcher = run_launcher
        self.settings_path = settings_path
        self.settings = Settings.load(settings_path)
        self.plan = Plan()

    @classmethod
    def screen_class(cls, position: int) -> type[Screen[None]]:
        module, name = cls.FLOW[position]
        return getattr(importlib.import_module(f"osstune.tui.screens.{module}"), name)

    def on_mount(self) -> None:
        self.push_screen(self.screen_class(0)())

    def on_advance(self, message: Advance) -> None:
        names = [name for _, name in self.FLOW]
        position = names.index(type(message.origin).__name__)
        if position + 1 < len(self.FLOW):
            following = self.screen_class(position + 1)
            config = message.config
            self.push_screen(following(config) if config is not None else following())
            return
        first = self.screen_class(0)
        while len(self.screen_stack) > 2:  # a new run: back to the first screen, kept as it was
            self.pop_screen()
        if not isinstance(self.screen, first):
            self.push_screen(first())

    def remember(self, **values: str | None) -> None:
        """Update the remembered choices (a preset also for this machine, `machine_key`); a
        failure to write them must not stop the wizard."""
        for key, value in values.items():
            setattr(self.settings, key, value)
        if values.get("preset") and self.plan.profile is not None:
            self.settings.presets[machine_key(self.plan.profile)] = str(values["preset"])
        try:
            self.settings.save(self.settings_path)
        except OSError as e:
            self.notify(f"could not save wizard settings: {e}", severity="warning")
