"""One run as a front-end drives it: pre-flight, ownership, launch, events, stop/kill/resume.

Where a run starts: `RunSession.start`. `osstune run` and the wizard's Training screen both make
a session and render its `snapshot()`; neither reads events or signals the engine itself.

    session = RunSession(cfg)           # the launcher and hardware profile can be handed in
    session.start(resume=False, force=False)   # PreflightError / RunLocked: nothing started
    while not session.pump().finished: ...     # read what is new (any thread)
    snap = session.snapshot()           # frozen figures for one repaint

`pump` and `snapshot` may run on different threads. Torch-free.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from osstune.engine.plan.preflight import PreflightError, existing_run, preflight, uses_gpus
from osstune.engine.session.events import EVENTS_FILE, AnyEvent, EventReader, RunStart
from osstune.engine.session.fold import HISTORY_POINTS, GpuMemory, RunFold, RunSnapshot
from osstune.engine.session.lock import OutputLock, RunLocked, live_run_message, owner_of

if TYPE_CHECKING:
    from osstune.engine.plan.config import RunConfig
    from osstune.engine.plan.hardware import HardwareProfile

LOG_LINES = 200


class EngineProcess(Protocol):
    """What a started engine offers (`launch.TrainingProcess`, or a test's scripted engine)."""

    def poll(self) -> int | None: ...

    def stderr_tail(self, n: int = ...) -> Any: ...

    def stop(self) -> None: ...

    def kill(self) -> None: ...


class Launcher(Protocol):
    """Checks a config against the machine and starts the engine; the app is handed one."""

    def preflight(self, cfg: RunConfig, output_dir: Path, *, resume: bool | str, force: bool,
                  profile: HardwareProfile | None) -> list[str]: ...

    def spawn(self, cfg: RunConfig, output_dir: Path, *, resume: bool | str, force: bool,
              lock: OutputLock) -> EngineProcess: ...


class EngineLauncher:
    """The real engine: `plan.preflight` and `launch.TrainingProcess`."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = env

    def preflight(self, cfg: RunConfig, output_dir: Path, *, resume: bool | str, force: bool,
                  profile: HardwareProfile | None) -> list[str]:
        return preflight(cfg, output_dir, resume=bool(resume), force=force, profile=profile)

    def spawn(self, cfg: RunConfig, output_dir: Path, *, resume: bool | str, force: bool,
              lock: OutputLock) -> EngineProcess:
        from osstune.engine.session.launch import TrainingProcess

        process = TrainingProcess()
        process.start(cfg, output_dir, resume=resume, force=force, env=self.env, lock=lock)
        return process


@dataclass(frozen=True)
class Pumped:
    events: tuple[AnyEvent, ...]
    changed: bool
    finished: bool


def expected_gpus(cfg: RunConfig, profile: HardwareProfile | None) -> tuple[GpuMemory, ...]:
    """The ranks a GPU run will report, known from the config before the engine starts."""
    if not uses_gpus(cfg):
        return ()
    cards = profile.gpus if profile is not None else []
    ranks = cfg.distributed.gpus * max(cfg.distributed.nnodes, 1)
    return tuple(GpuMemory(r, cards[r].name if r < len(cards) else "",
                           cards[r].memory_total_gib if r < len(cards) else None)
                 for r in range(ranks))


class RunSession:
    def __init__(self, cfg: RunConfig, launcher: Launcher | None = None,
                 profile: HardwareProfile | None = None, history: int = HISTORY_POINTS) -> None:
        self.cfg = cfg
        self.output_dir = Path(cfg.output.dir)
        self.launcher: Launcher = launcher or EngineLauncher()
        self.profile = profile
        self.history = history
        self.process: EngineProcess | None = None
        self.lock: OutputLock | None = None
        self.waived: list[str] = []
        self.stop_requested = False
        self._fold = RunFold(history, expected_gpus(cfg, profile))
        self.events: EventReader | None = None
        self._log: tuple[str, ...] = ()
        self._exit_code: int | None = None
        self._refusal: tuple[str, bool] | None = None
        self._unshown = False  # events folded outside pump (attach): the next pump says changed
        self._mutex = threading.Lock()

    # ------------------------------------------------------------------ start

    def check(self, resume: bool | str, force: bool) -> list[str]:
        """Everything that refuses before a process starts; returns the problems force waived.

        RunLocked when a live run owns the folder (force cannot override that), PreflightError
        when the machine or the folder says no (force can)."""
        holder = owner_of(self.output_dir)
        if holder is not None:
            raise RunLocked(live_run_message(self.output_dir, holder))
        return self.launcher.preflight(self.cfg, self.output_dir, resume=resume, force=force,
                                       profile=self.profile)

    def start(self, resume: bool | str = False, force: bool = False) -> list[str]:
        """Check, own the folder, launch. Raises (nothing started) or returns waived problems.
        `resume`: True continues from the last finished checkpoint, a path from that one."""
        self._reset()
        try:
            self.waived = self.check(resume, force)
        except PreflightError as e:
            self._refusal = (str(e), True)
            raise
        except RunLocked as e:
            self._refusal = (str(e), False)
            raise
        self.lock = OutputLock.acquire(self.output_dir)
        try:
            if not resume and not force and existing_run(self.output_dir):  # raced in meanwhile
                raise PreflightError(f"output directory {self.output_dir} already holds a run")
            if (stale := self.lock.stale_warning()) is not None:
                self._fold.notes.append(f"warning: {stale}")
            self.events = EventReader(self.output_dir / EVENTS_FILE)
            self.events.skip_existing()  # earlier attempts in this folder are not this run
            self.process = self.launcher.spawn(self.cfg, self.output_dir, resume=resume,
                                               force=force, lock=self.lock)
        except BaseException:
            self.lock.release()
            raise
        return self.waived

    def attach(self) -> None:
        """Follow the live run in the output folder (started elsewhere, e.g. --detach): its
        current attempt from its run_start on. NotRunning when nothing owns the folder."""
        from osstune.engine.session.attach import AttachedEngine

        self._reset()
        process = AttachedEngine(self.output_dir)
        self.events = EventReader(self.output_dir / EVENTS_FILE)
        earlier = self.events.poll()
        starts = [i for i, e in enumerate(earlier) if isinstance(e, RunStart)]
        self._fold.apply(earlier[starts[-1]:] if starts else earlier)
        self._unshown = bool(earlier)
        self.process = process

    def _reset(self) -> None:
        with self._mutex:
            self._fold = RunFold(self.history, expected_gpus(self.cfg, self.profile))
            self._log, self._exit_code, self._refusal = (), None, None
            self.process, self.events, self.stop_requested = None, None, False
            self._unshown = False

    # ------------------------------------------------------------------ follow

    def pump(self) -> Pumped:
        """Read what is new; any thread. The exit code is read first, so events written before
        the exit are seen in the same call."""
        if self.process is None or self.events is None:
            return Pumped((), False, self._refusal is not None)
        exit_code = self.process.poll()
        events = tuple(self.events.poll())
        tail = self.process.stderr_tail(LOG_LINES)
        log = tuple(tail.splitlines() if isinstance(tail, str) else map(str, tail))[-LOG_LINES:]
        with self._mutex:
            changed = bool(events) or log != self._log or exit_code != self._exit_code \
                or self._unshown
            self._fold.apply(events)
            self._unshown = False
            self._log, self._exit_code = log, exit_code
        if exit_code is not None and self.lock is not None:
            self.lock.release()
        return Pumped(events, changed, exit_code is not None)

    @property
    def finished(self) -> bool:
        return self._exit_code is not None or self._refusal is not None

    @property
    def exit_code(self) -> int | None:
        return self._exit_code

    def snapshot(self) -> RunSnapshot:
        with self._mutex:
            fold = self._fold
            status = fold.status
            if self._exit_code is not None and fold.end is None:
                status = "failed"
            elif self.stop_requested and fold.end is None:
                status = "stopping"
            refusal, forceable = self._refusal or (None, False)
            if refusal is not None:
                status = "refused"
            return fold.snapshot(status=status, log_lines=self._log, exit_code=self._exit_code,
                                 refusal=refusal, forceable=forceable)

    # ------------------------------------------------------------------ control

    def stop(self) -> None:
        """Ask the engine to finish its step, checkpoint and end; sent once, however often
        this is called (a second SIGINT would abort the engine)."""
        if self.process is None or self.stop_requested or self._exit_code is not None:
            return
        self.stop_requested = True
        self.process.stop()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
