"""What every wizard screen shares: typed access to the app and the one worker error path."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer
from textual.worker import Worker, WorkerState

if TYPE_CHECKING:
    from osstune.engine.plan.config import RunConfig
    from osstune.tui.app import OsstuneApp
    from osstune.tui.screens.plan import Plan


class Advance(Message):
    """A screen is done; the app decides what comes next (`OsstuneApp.FLOW`)."""

    def __init__(self, origin: WizardScreen, config: RunConfig | None = None) -> None:
        super().__init__()
        self.origin = origin
        self.config = config


class WizardScreen(Screen[None]):
    """Workers are started with a `group`; when one ends, `worker_done_<group>(result)` runs on
    success and `worker_failed(group, error)` on failure. No other place handles worker errors."""

    @property
    def wizard(self) -> OsstuneApp:
        return cast("OsstuneApp", self.app)

    @property
    def plan(self) -> Plan:
        return self.wizard.plan

    def advance(self, config: RunConfig | None = None) -> None:
        """On to the next screen of the wizard; which one is the app's business."""
        self.post_message(Advance(self, config))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker: Worker[Any] = event.worker
        if event.state == WorkerState.ERROR:
            self.worker_failed(worker.group, worker.error)
        elif event.state == WorkerState.SUCCESS:
            handler = getattr(self, f"worker_done_{worker.group.replace('-', '_')}", None)
            if handler is not None:
                handler(worker.result)

    def worker_failed(self, group: str, error: BaseException | None) -> None:
        self.notify(describe_error(error), title=f"{group} failed", severity="error", timeout=10)


def describe_error(error: BaseException | None) -> str:
    """One readable line: our own errors carry their message; anything else names its type."""
    if error is None:
        return "unknown error"
    text = str(error).strip()
    return text if text else type(error).__name__


NARROW_WIDTH = 100  # below this many columns screens are `-narrow` and tables drop their bars


def wizard_footer() -> Footer:
    """Every screen's footer: compact, without the palette hint (ctrl+p still opens it), so each
    screen's bindings fit the classic 80x24 terminal. A screen's primary action comes first."""
    return Footer(compact=True, show_command_palette=False)
