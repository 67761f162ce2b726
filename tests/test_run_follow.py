"""`osstune run` following a quiet engine: it sleeps between polls and repaints only on change.

An engine step of the CPU demo takes seconds; the follow loop must not spend a core on it (no
busy polling) nor re-render an unchanged live panel several times a second.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from osstune.engine.plan.config import load_config
from osstune.engine.session.run_session import RunSession
from osstune.tui import output
from osstune.tui.commands import run as run_command
from osstune.tui.render import run as render_run

QUIET_S = 1.0


class QuietEngine:
    """A launcher whose engine writes nothing for QUIET_S seconds, then exits 0."""

    def __init__(self) -> None:
        self.polls = 0
        self.ends_at = 0.0

    def preflight(self, cfg, output_dir, **_):  # noqa: ANN001, ANN003, ANN201
        return []

    def spawn(self, cfg, output_dir: Path, **_):  # noqa: ANN001, ANN003, ANN201
        self.ends_at = time.monotonic() + QUIET_S
        return self

    def poll(self) -> int | None:
        self.polls += 1
        return 0 if time.monotonic() >= self.ends_at else None

    def stderr_tail(self, n: int = 20) -> list[str]:
        return ["[engine] step 1/40 loss 12.2401"]

    def stop(self) -> None: ...

    def kill(self) -> None: ...


def test_following_a_quiet_run_sleeps_and_repaints_only_on_change(tmp_path: Path,
                                                                  monkeypatch) -> None:  # noqa: ANN001
    console = Console(width=100, record=True, color_system=None)
    monkeypatch.setattr(output, "console", lambda stderr=False: console)
    renders = []
    real_panel = render_run.run_panel
    monkeypatch.setattr(render_run, "run_panel",
                        lambda *a, **k: renders.append(1) or real_panel(*a, **k))
    engine = QuietEngine()
    session = RunSession(load_config("tiny-cpu-demo", [f"output.dir={tmp_path / 'run'}"]), engine)
    session.start()
    cpu, wall = time.process_time(), time.monotonic()
    snap = run_command.follow(session, "tiny-cpu-demo", live=True)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    assert snap.exit_code == 0 and wall >= QUIET_S
    # one poll per POLL_S (0.25 s), not a spinning loop
    assert engine.polls <= QUIET_S / run_command.POLL_S + 3, engine.polls
    # the first paint, the log line's arrival, the exit, the final paint: never per poll or timer
    assert len(renders) <= 4, len(renders)
    assert cpu < 0.5 * wall, (cpu, wall)
