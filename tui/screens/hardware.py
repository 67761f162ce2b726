"""Screen 1: what this machine (or the given profile) has, and which preset fits it best."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Header, Static

from osstune.tui.screens.base import WizardScreen, describe_error, wizard_footer
from osstune.tui.widgets.hardware_view import HardwareView

if TYPE_CHECKING:
    from osstune.engine.plan.hardware import HardwareProfile
    from osstune.engine.plan.recommend import Recommendation


class HardwareScreen(WizardScreen):
    BINDINGS = [
        Binding("enter,n", "next", "Next: presets"),
        Binding("r", "refresh", "Refresh"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Hardware", classes="screen-title")
        with VerticalScroll(id="hardware-scroll"):
            yield HardwareView("probing…", id="hardware")
        yield Static("", id="recommendation", classes="summary")
        yield wizard_footer()

    def on_mount(self) -> None:
        self.action_refresh()

    def action_refresh(self) -> None:
        self.query_one("#recommendation", Static).update("probing…")
        self.load_hardware()

    @work(thread=True, exclusive=True, group="hardware", exit_on_error=False)
    def load_hardware(self) -> tuple[HardwareProfile, Recommendation]:
        from osstune.engine.plan.recommend import recommend

        profile = self.wizard.hardware_source()
        return profile, recommend(profile)

    def worker_done_hardware(self, result: tuple[HardwareProfile, Recommendation]) -> None:
        profile, recommendation = result
        self.plan.profile, self.plan.recommendation = profile, recommendation
        self.query_one(HardwareView).show(profile)
        summary = Text(recommendation.summary,
                       style="bold" if recommendation.recommended else "yellow")
        if not self.wizard.profile_is_this_machine:
            summary.append(f"\nplanning for {profile.source}; a run starts on this machine and "
                           "is pre-flighted against it first", style="dim")
        self.query_one("#recommendation", Static).update(summary)

    def worker_failed(self, group: str, error: BaseException | None) -> None:
        self.query_one("#recommendation", Static).update(
            Text.assemble(("Cannot read the hardware: ", "bold red"), describe_error(error))
        )

    def action_next(self) -> None:
        if self.plan.recommendation is None:
            self.notify("still reading the hardware", severity="warning")
            return
        self.advance()
