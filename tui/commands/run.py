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


class _Interrupted(KeyboardInterrupt):
    """SIGTERM/SIGHUP, raised where Ctrl-C would be."""


def _on_stop_signal(signum: int, frame: object) -> None:
    import signal

    raise _Interrupted(signal.Signals(signum).name)


@contextlib.contextmanager
def stop_signals_as_interrupts() -> Iterator[None]:
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():  # only there can Python
        yield
        return
    previous = {name: signal.signal(getattr(signal, name), _on_stop_signal)
                for name in STOP_SIGNALS}
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)


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
        from osstune.tui.render.run import event_line, run_panel

        if self.quiet:
            return
        try:
            if self.display is not None:
                if changed:
                    self.display.update(run_panel(self.name, snap), refresh=True)
            else:
                for event in events:
                    if (line := event_line(event)) is not None:
                        output.print_line(line)
        except OSError:  # the terminal went away: the run goes on, unwatched
            self.quiet = True

    def warn(self, message: str) -> None:
        if not self.quiet:
            with contextlib.suppress(OSError):
                output.warn(message)

    def close(self, snap: RunSnapshot) -> None:
        if self.display is not None:
            with contextlib.suppress(OSError):
                self.show((), snap)
                self.display.stop()


def follow(session: RunSession, name: str, live: bool) -> RunSnapshot:
    """Pump the session until the engine exits; Ctrl-C, SIGTERM or SIGHUP once stops it (the
    engine finishes the step and checkpoints), a second Ctrl-C kills it."""
    screen = _Screen(name, live)
    interrupts = 0
    with stop_signals_as_interrupts():
        try:
            while True:
                try:
                    pumped = session.pump()
                    screen.show(pumped.events, session.snapshot(), pumped.changed)
                    if pumped.finished:
                        break
                    time.sleep(POLL_S)
                except KeyboardInterrupt as e:
                    interrupts += 1
                    if isinstance(e, _Interrupted) and str(e) == "SIGHUP":
                        screen.quiet = True
                    if interrupts == 1:
                        screen.warn("stopping: the engine finishes this step and saves "
                                    "(Ctrl-C again to kill)")
                        session.stop()
                    elif not isinstance(e, _Interrupted):
                        session.kill()
        finally:
            snap = session.snapshot()
            screen.close(snap)
    return snap


def run(
    target: Annotated[str, typer.Argument(metavar="PRESET|CONFIG.yaml",
                                          help="A preset name or a run config file")],
    set_: Annotated[list[str] | None, typer.Option(
        "--set", metavar="KEY=VALUE", help="Override a config key, e.g. --set max_steps=30"),
    ] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Dataset file, folder or hub id")
                       ] = None,
    output_dir: Annotated[str | None, typer.Option("--output", help="Output directory")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint")
                      ] = False,
    force: Annotated[bool, typer.Option("--force", help="Run despite pre-flight refusals")
                     ] = False,
    detach: Annotated[bool, typer.Option(
        "--detach", help="Start the run and return; follow it later with `osstune attach DIR`"),
    ] = False,
) -> None:
    """Train with a preset or config file and follow it until it ends."""
    from osstune.engine.plan.preflight import PreflightError
    from osstune.engine.session.launch import serving_tensor_parallel
    from osstune.engine.session.lock import RunLocked
    from osstune.engine.session.run_session import RunSession

    cfg = _effective_config(target, list(set_ or []), dataset, output_dir)
    from osstune.engine.data.dataset_sources import dataset_problem

    try:  # every dataset, before any engine or file is started
        paths = [ds.path for ds, _weight in cfg.dataset_sources()] + [
            p for p in [cfg.dataset.val_path] if p]
    except ValueError as e:
        output.fail(f"{target}: {e}")
    for path in paths:
        if problem := dataset_problem(path):
            output.fail(problem)
    out = Path(cfg.output.dir)
    session = RunSession(cfg)
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


def _report(snap: RunSnapshot, target: str, out: Path, served_tp: int) -> None:
    """Exit 0 only for a completed run; otherwise one line saying what happened and what next."""
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
        bad_input = snap.error.kind in ("config", "dataset", "tokenizer")  # the engine's exit 2
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
    snap = follow(session, cfg.name, live)
    _report(snap, str(out / CONFIG_FILE), out, serving_tensor_parallel(cfg))
