"""`osstune run PRESET|CONFIG.yaml`: start the engine and follow it until it ends.

On a terminal a Rich live panel (step, loss, lr, tokens/s, per-GPU reserved memory, ETA, log
tail); otherwise one plain line per event. Ctrl-C once stops gracefully (the engine finishes the
step and checkpoints), twice kills. Exit 0 only for a completed run. No torch in this process.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from osstune.tui import output

if TYPE_CHECKING:  # the engine and Rich load when a run starts, not with the CLI
    from osstune.engine.plan.config import RunConfig
    from osstune.engine.session.events import AnyEvent
    from osstune.engine.session.fold import RunSnapshot
    from osstune.engine.session.run_session import RunSession

POLL_S = 0.25
STOP_SIGNALS = ("SIGTERM", "SIGHUP")  # a closed terminal or `kill`: stop as Ctrl-C does


def _effective_config(target: str, overrides: list[str], dataset: str | None,
                      output_dir: str | None) -> RunConfig:
    from osstune.engine.plan.config import ConfigError, load_config

    try:
        cfg = load_config(target, overrides)
        if dataset is not None:
            if cfg.datasets:
                output.fail(f"--dataset: {target} mixes {len(cfg.datasets)} datasets "
                            "(datasets:); edit that list instead")
            cfg.dataset.path = dataset
        if output_dir is not None:
            cfg.output.dir = output_dir
    except ConfigError as e:
        output.fail(str(e))
    except ValueError as e:  # pydantic assignment validation
        output.fail(f"{target}: {e}")
    return cfg


class NotedSignals:
    """SIGINT, SIGTERM and SIGHUP are noted, not raised: an exception raised in the middle of a
    frame's write would leave half a frame on the terminal, and Rich's Live would then erase
    the wrong lines (copies of the panel's lines above the next frame)."""

    NAMES = ("SIGINT", *STOP_SIGNALS)

    def __init__(self) -> None:
        self.pending: list[str] = []

    def __call__(self, signum: int, frame: object) -> None:
        import signal

        self.pending.append(signal.Signals(signum).name)

    def take(self) -> list[str]:
        taken, self.pending = self.pending, []
        return taken


@contextlib.contextmanager
def noted_signals() -> Iterator[NotedSignals]:
    import signal
    import threading

    noted = NotedSignals()
    if threading.current_thread() is not threading.main_thread():  # only there can Python
        yield noted
        return
    previous = {name: signal.signal(getattr(signal, name), noted) for name in noted.NAMES}
    try:
        yield noted
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)


@contextlib.contextmanager
def terminal_for_live() -> Iterator[None]:
    """While the live panel is up the terminal neither echoes keys (an echoed `^C` lands in the
    frame and, at the last column, wraps a line the next frame does not erase) nor flushes its
    output on Ctrl-C (NOFLSH: the flush drops the rest of a frame being written, and the next
    frame erases lines that were never drawn). Either way copies of the panel's lines stayed."""
    import sys

    try:
        import termios
    except ImportError:  # not on this platform
        yield
        return
    try:
        fd = sys.stdin.fileno()
        before = termios.tcgetattr(fd)
    except (termios.error, OSError, ValueError, AttributeError):  # stdin is not a terminal
        yield
        return
    quiet = list(before)
    quiet[3] = (quiet[3] & ~(termios.ECHO | termios.ECHOCTL)) | termios.NOFLSH
    try:
        with contextlib.suppress(termios.error, OSError):
            termios.tcsetattr(fd, termios.TCSADRAIN, quiet)
        yield
    finally:
        with contextlib.suppress(termios.error, OSError):
            termios.tcsetattr(fd, termios.TCSADRAIN, before)


class _Screen:
    """Where the follow loop writes; after SIGHUP (or a write error) it stays quiet."""

    def __init__(self, name: str, live: bool) -> None:
        self.name, self.live, self.quiet = name, live, False
        self.display: Any = None
        if live:
            from rich.live import Live

            from osstune.engine.session.fold import RunSnapshot
            from osstune.tui.render.run import run_panel

            # Repainted when something changed, not on a timer: a timer re-renders the same
            # panel several times a second for the whole run.
            self.display = Live(run_panel(name, RunSnapshot()), console=output.console(),
                                auto_refresh=False, transient=False)
            self.display.start(refresh=True)

    def show(self, events: Iterable[AnyEvent], snap: RunSnapshot, changed: bool = True) -> None:
        from osstune.engine.session.events import ErrorEvent
        from osstune.tui.render.run import event_line, run_panel

        if self.quiet:
            return
        try:
            if self.display is not None:
                if changed:
                    self.display.update(run_panel(self.name, snap), refresh=True)
            else:  # an error is said once, by the run's report when it ends (stderr)
                for event in events:
                    if not isinstance(event, ErrorEvent) and (line := event_line(event)):
                        output.print_line(line)
        except OSError:  # the terminal went away: the run goes on, unwatched
            self.quiet = True

    def stopping(self) -> None:
        """The first Ctrl-C: said on stderr in plain output. The live panel says it itself
        (its subtitle): a line written past Rich's Live would land inside the panel it redraws
        and leave a copy of the panel's lines above the next frame."""
        from osstune.tui.render.run import STOPPING_HINT

        if not self.quiet and self.display is None:
            with contextlib.suppress(OSError):
                output.warn(STOPPING_HINT)

    def close(self, snap: RunSnapshot) -> None:
        if self.display is not None:
            with contextlib.suppress(OSError):
                self.show((), snap)
                self.display.stop()


def follow(session: RunSession, name: str, live: bool, leave_on: tuple[str, ...] = ()
           ) -> RunSnapshot:
    """Pump the session until the engine exits; Ctrl-C, SIGTERM or SIGHUP once stops it (the
    engine finishes the step and checkpoints), a second Ctrl-C kills it. A signal in `leave_on`
    only stops the following (`attach`: the run outlives the terminal it was watched from)."""
    interrupts = 0
    with noted_signals() as signals, (terminal_for_live() if live else contextlib.nullcontext()):
        screen = _Screen(name, live)
        try:
            while True:
                pumped = session.pump()
                screen.show(pumped.events, session.snapshot(), pumped.changed)
                if pumped.finished:
                    break
                time.sleep(POLL_S)
                taken = signals.take()
                if leaving := [n for n in taken if n in leave_on]:
                    screen.quiet = screen.quiet or "SIGHUP" in leaving
                    break
                for signal_name in taken:
                    interrupts += 1
                    if signal_name == "SIGHUP":  # the terminal is gone: write nothing more
                        screen.quiet = True
                    if interrupts == 1:
                        session.stop()
                        screen.stopping()
                    elif signal_name == "SIGINT":
                        session.kill()
        finally:
            snap = session.snapshot()
            screen.close(snap)
    return snap


def run(
    target: Annotated[str, typer.Argument(metavar="PRESET|CONFIG.yaml",
                                          help="A preset name or a run config file")],
    checkpoint: Annotated[str | None, typer.Argument(
        metavar="CHECKPOINT", help="With --resume: this checkpoint folder instead of the last "
        "one (--resume PATH)", show_default=False)] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", metavar="KEY=VALUE", help="Override a config key, e.g. --set max_steps=30"),
    ] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Dataset file, folder or hub id")
                       ] = None,
    output_dir: Annotated[str | None, typer.Option("--output", help="Output directory")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue from the last checkpoint, or from CHECKPOINT: --resume PATH")
    ] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Run despite pre-flight refusals; without --resume, start over in a "
        "folder that holds a run")] = False,
    detach: Annotated[bool, typer.Option(
        "--detach", help="Start the run and return; follow it later with `osstune attach DIR`"),
    ] = False,
) -> None:
    """Train with a preset or config file and follow it until it ends."""
    from osstune.engine.session.launch import serving_tensor_parallel
    from osstune.engine.session.run_session import RunSession

    cfg = _effective_config(target, list(set_ or []), dataset, output_dir)
    _check_datasets(cfg, target)
    out = Path(cfg.output.dir)
    resume_from = _resume_point(resume, checkpoint, out, force)
    session = RunSession(cfg)
    _start(session, resume_from, force)
    if detach:  # the engine holds the folder's lock itself: it outlives this process
        output.print_line(f"osstune run {cfg.name}: started in the background, output {out}, "
                          f"log {out / 'engine.log'}")
        output.print_line(f"follow or stop it: osstune attach {out}")
        return
    live = output.is_terminal()
    if not live:
        output.print_line(f"osstune run {cfg.name}: output {out}")
    snap = follow(session, cfg.name, live)
    _report(snap, target, out, serving_tensor_parallel(cfg))


def _check_datasets(cfg: RunConfig, target: str) -> None:
    """Every dataset exists and is not empty, before any engine or file is started."""
    from osstune.engine.data.dataset_sources import dataset_problem

    try:
        paths = [ds.path for ds, _weight in cfg.dataset_sources()] + [
            p for p in [cfg.dataset.val_path] if p]
    except ValueError as e:
        output.fail(f"{target}: {e}")
    for path in paths:
        if problem := dataset_problem(path):
            output.fail(problem)


def _resume_point(resume: bool, checkpoint: str | None, out: Path, force: bool) -> bool | str:
    """False, True (the last finished checkpoint in OUT) or a checkpoint folder (absolute).
    Refuses, before anything starts, a --resume with nothing to resume from."""
    from osstune.engine.session.lock import owner_of
    from osstune.engine.session.run_folder import (
        checkpoints_root,
        failed_attempt,
        is_finished_checkpoint,
        resumable,
    )

    if checkpoint is not None and not resume:
        output.fail(f"{checkpoint}: a checkpoint to resume from goes after --resume "
                    f"(--resume {checkpoint}); other options are named (--set, --output, ...)")
    if checkpoint is not None:
        if not is_finished_checkpoint(Path(checkpoint)):
            output.fail(f"--resume {checkpoint}: not a finished checkpoint folder (no COMPLETE "
                        f"file; finished ones are listed in {checkpoints_root(out)})")
        return str(Path(checkpoint).resolve())
    if owner_of(out) is not None:  # a live run: the session refuses, naming it
        return resume
    if resume and not resumable(out):
        why = ("its earlier run ended before its first save: run without --resume to start over "
               "there" if failed_attempt(out) else "use --output for the run's folder")
        output.fail(f"--resume: {out} holds no finished checkpoint ({why})")
    if not resume and not force and failed_attempt(out):
        output.warn(f"{out}: the earlier run there ended before its first save (nothing to "
                    "resume); starting over")
    return resume


def _start(session: RunSession, resume: bool | str, force: bool) -> None:
    """Pre-flight, the folder's lock and the engine; one line and an exit code when refused."""
    from osstune.engine.plan.preflight import PreflightError
    from osstune.engine.session.lock import RunLocked

    try:
        waived = session.start(resume=resume, force=force)
    except RunLocked as e:
        output.fail(str(e), code=output.EXIT_USAGE)
    except PreflightError as e:
        output.fail(str(e), code=output.EXIT_PROBLEM)
    except OSError as e:
        output.fail(f"cannot start the engine: {e}", code=output.EXIT_PROBLEM)
    for problem in waived:
        output.warn(f"pre-flight (forced): {problem}")
    if session.lock is not None and (stale := session.lock.stale_warning()) is not None:
        output.warn(stale)


def _report(snap: RunSnapshot, target: str, out: Path, served_tp: int) -> None:
    """Exit 0 only for a completed run; otherwise one line saying what happened and what next."""
    from osstune.engine.session.events import USER_ERROR_KINDS
    from osstune.tui.render.run import serve_hint_lines

    end, code = snap.end, snap.exit_code
    if end is not None and end.status == "completed" and code == 0:
        for line in serve_hint_lines(end.outputs, served_tp, str(out)):
            output.print_line(line)
        return
    if end is not None and end.status == "stopped":
        output.fail(f"run stopped at step {snap.step}/{snap.total_steps}; continue with "
                    f"`osstune run {target} --resume` (same --set/--output)",
                    code=output.EXIT_PROBLEM)
    if snap.error is not None:
        bad_input = code == output.EXIT_USAGE or snap.error.kind in USER_ERROR_KINDS
        output.fail(f"{snap.error.message} (hint: {snap.error.hint})",
                    code=output.EXIT_USAGE if bad_input else output.EXIT_PROBLEM)
    tail = "\n".join(snap.log_lines[-15:])
    output.fail(f"the engine exited with code {code} before finishing" +
                (f"; its last lines:\n{tail}" if tail else ""), code=output.EXIT_PROBLEM)


def attach(
    output_dir: Annotated[str, typer.Argument(metavar="DIR", help="The run's output directory")],
) -> None:
    """Follow a live run (started with --detach, or from another terminal) until it ends.

    Ctrl-C once stops the run (checkpoint, status stopped), twice kills it; exit codes as `run`.
    A closed terminal (SIGHUP) or SIGTERM only stops the following: the run goes on.
    """
    from osstune.engine.plan.config import ConfigError, load_config
    from osstune.engine.session.attach import NotRunning
    from osstune.engine.session.launch import CONFIG_FILE, serving_tensor_parallel
    from osstune.engine.session.run_session import RunSession

    out = Path(output_dir)
    try:
        cfg = load_config(str(out / CONFIG_FILE))
    except ConfigError as e:
        output.fail(f"{out}: not a run folder ({e})")
    cfg.output.dir = str(out)
    session = RunSession(cfg)
    try:
        session.attach()
    except NotRunning as e:
        output.fail(str(e))
    live = output.is_terminal()
    if not live:
        output.print_line(f"osstune attach {out}: following {cfg.name}")
    snap = follow(session, cfg.name, live, leave_on=STOP_SIGNALS)
    if not snap.finished:  # left on SIGHUP/SIGTERM: the run is not ours to stop
        with contextlib.suppress(OSError):
            output.warn(f"stopped following; the run goes on (osstune attach {out})")
        raise typer.Exit(0)
    _report(snap, str(out / CONFIG_FILE), out, serving_tensor_parallel(cfg))
