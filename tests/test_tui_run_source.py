"""The run source: events read incrementally through engine.session.events.EventReader, folded into
bounded state, handed to the UI as coalescing progress messages."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tui_fixtures import ScriptedProcess, step_event

from osstune.engine.session.events import EVENTS_FILE, SCHEMA_VERSION
from osstune.tui.run_source import ProcessRunSource, RunMonitor, RunProgress, RunState


def _line(kind: str, **fields) -> bytes:
    event = {"v": SCHEMA_VERSION, "type": kind, "time": 1.0, **fields}
    return (json.dumps(event) + "\n").encode()


class ExitCode:
    """The smallest process: an exit code the test sets."""

    def __init__(self) -> None:
        self.code: int | None = None

    def poll(self) -> int | None:
        return self.code

    def stderr_tail(self, n: int = 50) -> str:
        return "line one\nline two\n"

    def stop(self) -> None:
        self.code = 0

    def kill(self) -> None:
        self.code = -9


def test_events_file_that_appears_late(tmp_path: Path) -> None:
    source = ProcessRunSource(ExitCode(), tmp_path / "out")
    assert source.poll_events() == []  # neither the directory nor the file exists yet
    (tmp_path / "out").mkdir()
    assert source.poll_events() == []
    (tmp_path / "out" / EVENTS_FILE).write_bytes(_line("warning", message="late but here"))
    events = source.poll_events()
    assert [e["message"] for e in events] == ["late but here"]


def test_partial_last_line_is_held_until_complete(tmp_path: Path) -> None:
    path = tmp_path / EVENTS_FILE
    first, second = _line("warning", message="one"), _line("step", **step_event(1, 10, 1))
    path.write_bytes(first + second[:25])
    source = ProcessRunSource(ExitCode(), tmp_path)
    assert [e["type"] for e in source.poll_events()] == ["warning"]
    assert source.poll_events() == []  # still half a line
    with open(path, "ab") as fh:
        fh.write(second[25:])
    events = source.poll_events()
    assert [e["type"] for e in events] == ["step"] and events[0]["step"] == 1
    assert source.events.bad_lines == 0


def test_log_tail_accepts_text_or_lines(tmp_path: Path) -> None:
    assert ProcessRunSource(ExitCode(), tmp_path).log_tail(1) == ["line two"]
    scripted = ScriptedProcess(tmp_path)
    assert ProcessRunSource(scripted, tmp_path).log_tail(5) == ["engine: starting"]


def test_monitor_reads_events_written_before_exit(tmp_path: Path) -> None:
    process = ScriptedProcess(tmp_path, gpus=2)
    monitor = RunMonitor(ProcessRunSource(process, tmp_path))
    assert monitor.pump()  # the log tail is new
    assert not monitor.pump()  # nothing changed
    process.run_start(total=3)
    for step in (1, 2, 3):
        process.step(step, 3)
    process.finish()
    assert monitor.pump() and monitor.finished
    snap = monitor.snapshot()
    assert snap.end == {"status": "completed", "outputs": {"export": "out/export"}}
    assert [p.step for p in snap.new_points] == [1, 2, 3]
    assert [g.rank for g in snap.gpus] == [0, 1] and snap.gpus[0].total_gib == 79.65
    assert monitor.snapshot().new_points == ()  # drained: each point reaches the chart once


def test_peaks_are_kept_across_steps() -> None:
    state = RunState()
    for step, reserved in ((1, 30.0), (2, 50.0), (3, 20.0)):
        event = step_event(step, 3, 1)
        event["gpus"][0]["device_mem_reserved_gib"] = reserved
        state.apply([{"type": "step", **event}])
    gpu = state.gpus[0]
    assert (gpu.reserved_gib, gpu.peak_gib) == (20.0, 50.0)


def test_memory_stays_flat_over_a_long_run() -> None:
    state = RunState(history=512)
    state.apply({"type": "step", **step_event(s, 10_000, 8)} for s in range(1, 10_001))
    for s in range(1, 200):
        state.apply([{"type": "checkpoint", "path": f"ckpt/{s}", "step": s}])
    assert len(state.new_points) == 512 and state.new_points[-1].step == 10_000
    assert len(state.notes) <= 50 and len(state.gpus) == 8
    assert state.events_seen == 10_000 + 199


def test_error_event_is_kept_for_the_crash_view() -> None:
    state = RunState()
    state.apply([{"type": "error", "kind": "oom", "message": "CUDA out of memory",
                  "hint": "lower training.sequence_len"}])
    assert state.error == {"kind": "oom", "message": "CUDA out of memory",
                           "hint": "lower training.sequence_len"}


def test_progress_messages_coalesce() -> None:
    assert RunProgress().can_replace(RunProgress())
    from textual.message import Message

    assert not RunProgress().can_replace(Message())


def test_monitor_pump_is_cheap_when_idle(tmp_path: Path) -> None:
    monitor = RunMonitor(ProcessRunSource(ExitCode(), tmp_path))
    monitor.pump()
    start = time.perf_counter()
    for _ in range(1000):
        monitor.pump()
    assert time.perf_counter() - start < 1.0
