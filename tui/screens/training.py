"""Screen 5: the engine subprocess, live: loss, learning rate, per-GPU memory, log tail.

The run is a `RunSession` (engine/session/run_session.py) over the launcher the app was given:
the same pre-flight, output-folder lock and engine process as `osstune run`. A thread worker pumps
the session and posts `RunProgress`; those coalesce, and each handler call reads one snapshot, so
a burst of steps costs one repaint and the UI thread never reads files.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Header, Sparkline, Static
from textual.worker import get_current_worker

from osstune.engine.plan.config import RunConfig
from osstune.engine.plan.preflight import PreflightError, existing_run
from osstune.engine.session.fold import RunSnapshot
from osstune.engine.session.lock import RunLocked, owner_of
from osstune.engine.session.run_session import RunSession
from osstune.tui.render.run import notes_to_show, stats_line
from osstune.tui.screens.base import WizardScreen, describe_error, wizard_footer
from osstune.tui.widgets.log_tail import LogTail
from osstune.tui.widgets.loss_chart import LossChart
from osstune.tui.widgets.memory_panel import MemoryPanel

POLL_S = 0.2
KILL_CONFIRM_S = 3.0


class RunProgress(Message):
    """New figures are waiting. Queued ones collapse into one: the handler reads a snapshot."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RunProgress)


class ResumeDialog(ModalScreen[str]):
    """The output directory already holds a run: resume it, start over, or go back."""

    BINDINGS = [
        Binding("r", "dismiss('resume')", "Resume"),
        Binding("o", "dismiss('overwrite')", "Start over"),
        Binding("escape", "dismiss('cancel')", "Cancel"),
    ]

    def __init__(self, output_dir: str) -> None:
        super().__init__()
        self.output_dir = output_dir

    def compose(self) -> ComposeResult:
        with Vertical(id="resume-dialog"):
            yield Static(Text.assemble(("Output directory in use: ", "bold"), self.output_dir))
            yield Static(
                "r  resume from its last checkpoint\n"
                "o  start over (replaces what is there)\n"
                "esc  go back and pick another output directory"
            )
        yield wizard_footer()


class TrainingScreen(WizardScreen):
    BINDINGS = [
        Binding("s", "stop", "Stop+save"),
        Binding("k", "kill", "Kill"),
        Binding("r", "resume", "Resume"),
        Binding("f", "force", "Run anyway"),
        Binding("enter", "done", "Done"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, config: RunConfig) -> None:
        super().__init__()
        self.config = config
        self.session: RunSession | None = None
        self.snapshot = RunSnapshot()
        self.running = False
        self.resumed = False
        self.attached = False
        self._kill_armed_at: float | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="run-title", classes="screen-title")
        yield Static(stats_line(self.snapshot), id="run-stats")
        with Horizontal(id="run-main"):
            with Vertical(id="run-charts"):
                yield LossChart(id="loss-chart")
                with Horizontal(id="lr-row"):
                    yield Static("lr", id="lr-label")
                    yield Sparkline([], id="lr-spark")
            with VerticalScroll(id="run-memory"):
                yield MemoryPanel(id="memory")
        yield Static(id="run-notes")
        yield Static(id="run-error", classes="error")
        yield LogTail(id="log-tail")
        yield wizard_footer()

    def on_mount(self) -> None:
        self.query_one("#loss-chart").border_title = "loss"
        self.query_one("#run-memory").border_title = "GPU memory reserved, GiB (peak ▏)"
        self.query_one("#log-tail").border_title = "engine log"
        self._set_status("starting")
        self._show_error(None)
        self.query_one("#run-notes").display = False
        out = Path(self.config.output.dir)
        if owner_of(out) is not None:  # a run is live there (--detach, another terminal): follow it
            self.start(resume=False, force=False, attach=True)
        elif existing_run(out):
            self.app.push_screen(ResumeDialog(self.config.output.dir), self._after_dialog)
        else:
            self.start(resume=False, force=False)

    def on_unmount(self) -> None:
        """Leaving the app mid-run: ask the engine to checkpoint and stop rather than orphan it
        (the session sends that once, however many ways the screen goes away). A run the
        wizard only attached to goes on: it was started to outlive its front-ends."""
        if self.running and self.session is not None and not self.attached:
            self.session.stop()

    def _after_dialog(self, choice: str | None) -> None:
        if choice == "resume":
            self.start(resume=True, force=False)
        elif choice == "overwrite":
            self.start(resume=False, force=True)
        else:
            self.app.pop_screen()

    def _set_status(self, status: str) -> None:
        title = Text.assemble(  # the status first: it stays in view on a narrow terminal
            (status, "bold reverse"),
            "  ",
            ("Training ", "bold"),
            self.config.name,
            " → ",
            self.config.output.dir,
        )
        self.query_one("#run-title", Static).update(title)

    def start(self, resume: bool, force: bool, attach: bool = False) -> None:
        self.query_one(LossChart).clear()  # the session follows only what this attempt writes
        # planned from a profile file: the pre-flight probes the machine the run starts on
        here = self.plan.profile if self.wizard.profile_is_this_machine else None
        self.session = RunSession(self.config, self.wizard.run_launcher, here)
        self.snapshot = self.session.snapshot()
        self.running, self.resumed, self.attached = True, resume, attach
        self._set_status("attaching to the live run" if attach else
                         "resuming" if resume else "starting")
        self._show_error(None)
        self.query_one(MemoryPanel).set_gpus(self.snapshot.gpus)  # a GPU run, before its steps
        self.refresh_bindings()
        self.follow_run(self.session, resume, force, attach)

    @work(thread=True, exclusive=True, group="run", exit_on_error=False)
    def follow_run(self, session: RunSession, resume: bool, force: bool,
                   attach: bool) -> int | None:
        worker = get_current_worker()
        try:
            if attach:
                session.attach()
            else:
                session.start(resume=resume, force=force)
        except (PreflightError, RunLocked):
            return None  # the snapshot carries the refusal
        try:
            while not worker.is_cancelled:
                pumped = session.pump()
                if pumped.changed:
                    self.post_message(RunProgress())
                if pumped.finished:
                    return session.exit_code
                time.sleep(POLL_S)
        except BaseException:
            if not self.attached:  # we can no longer follow it: have it checkpoint and exit
                session.stop()
            raise
        if not self.attached:
            session.stop()  # the screen went away: let the engine checkpoint and exit
        return None

    def on_run_progress(self, _: RunProgress) -> None:
        if self.session is None:
            return
        snap = self.snapshot = self.session.snapshot()
        chart = self.query_one(LossChart)
        chart.add_points(snap.new_points)
        chart.add_eval_points(snap.new_eval_points)
        if snap.new_points or snap.new_eval_points:
            self.query_one("#lr-spark", Sparkline).data = [p.lr for p in chart.history]
            chart.border_title = (f"loss {snap.loss:.4f}" if snap.loss is not None else "loss") \
                + (f" · eval {snap.eval_loss:.4f}" if snap.eval_loss is not None else "")
        self.query_one("#run-stats", Static).update(stats_line(snap))
        self.query_one(MemoryPanel).set_gpus(snap.gpus)
        self.query_one(LogTail).set_lines(snap.log_lines)
        notes = self.query_one("#run-notes", Static)
        shown = notes_to_show(snap)
        notes.update(Text("\n".join(shown), style="dim"))
        notes.display = bool(shown)
        if not snap.finished and snap.status != "stopping":
            self._set_status("running")

    def worker_done_run(self, exit_code: int | None) -> None:
        self.running = False
        self.on_run_progress(RunProgress())
        snap = self.snapshot
        if snap.refusal is not None:
            self._set_status("refused by the pre-flight" if snap.forceable else "refused")
            self._show_refusal(snap)
        else:
            self.plan.run_end = snap.end
            self._set_status(f"{snap.status} (exit code {exit_code})")
            if snap.status != "completed" or exit_code != 0:
                self._show_failure(snap, exit_code)
        self.refresh_bindings()

    def _show_refusal(self, snap: RunSnapshot) -> None:
        text = Text.assemble(("not started: ", "bold"), snap.refusal or "")
        if snap.forceable:
            text.append("\nf runs it anyway here (as --force does)", style="yellow")
        self._show_error(text)

    def _show_failure(self, snap: RunSnapshot, exit_code: int | None) -> None:
        if snap.end and snap.end.status == "stopped":
            text = Text("stopped: the last checkpoint is kept; r resumes", style="yellow")
        elif snap.error:
            text = Text.assemble((f"{snap.error.kind}: ", "bold"), snap.error.message, "\n",
                                 ("hint: ", "bold"), snap.error.hint)
            if snap.error.kind == "preflight":
                text.append("\nf runs it anyway here", style="yellow")
        else:
            text = Text(
                f"the engine exited with code {exit_code} without reporting an error; "
                "its last log lines are below"
            )
        self._show_error(text)

    def _show_error(self, text: Text | None) -> None:
        error = self.query_one("#run-error", Static)
        error.update(text or "")
        error.display = text is not None

    def worker_failed(self, group: str, error: BaseException | None) -> None:
        self.running = False
        started = self.session is not None and self.session.process is not None
        self._set_status("stopping: lost track of the run" if started else "not started")
        what = "cannot follow the run, asked it to stop: " if started else "cannot start: "
        self._show_error(Text.assemble((what, "bold"), describe_error(error)))
        self.refresh_bindings()

    def _forceable(self) -> bool:
        snap = self.snapshot
        return snap.forceable or (snap.error is not None and snap.error.kind == "preflight")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("stop", "kill"):
            return self.running
        if action == "back":
            return not self.running
        if action == "done":
            return not self.running and self.plan.run_end is not None
        if action == "force":  # a pre-flight refusal, ours or the engine's, can be overridden
            return not self.running and self._forceable()
        if action == "resume":
            end = self.snapshot.end
            return not self.running and end is not None and end.status != "completed"
        return True

    def action_stop(self) -> None:
        if self.session is not None:
            self.session.stop()
            self._set_status("stopping: saving a checkpoint")

    def action_kill(self) -> None:
        now = time.monotonic()
        if self._kill_armed_at is None or now - self._kill_armed_at > KILL_CONFIRM_S:
            self._kill_armed_at = now
            self.notify("press k again to kill the engine now (no checkpoint)", severity="warning")
            return
        if self.session is not None:
            self.session.kill()
            self._set_status("killing")

    def action_force(self) -> None:
        self.start(resume=self.resumed, force=True)

    def action_resume(self) -> None:
        self.start(resume=True, force=False)

    def action_done(self) -> None:
        self.advance(self.config)

    def action_back(self) -> None:
        self.app.pop_screen()
