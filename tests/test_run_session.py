"""The run session: events read incrementally (typed), folded into bounded state, one snapshot
for both front-ends, the pre-flight before any process, and a stop that is sent once."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from tui_fixtures import ScriptedLauncher, ScriptedProcess, h100_profile, step_event

from osstune.engine.plan.config import load_config
from osstune.engine.plan.preflight import PreflightError, preflight
from osstune.engine.session.events import (
    EVENTS_FILE,
    SCHEMA_VERSION,
    ErrorEvent,
    EventReader,
    RunEnd,
    parse_event,
)
from osstune.engine.session.fold import RunFold
from osstune.engine.session.lock import OutputLock, RunLocked
from osstune.engine.session.run_session import RunSession


def _event(kind: str, /, **fields):  # noqa: ANN202
    return parse_event({"v": SCHEMA_VERSION, "type": kind, "time": 1.0, **fields})


def _line(kind: str, /, **fields) -> bytes:
    return (json.dumps({"v": SCHEMA_VERSION, "type": kind, "time": 1.0, **fields}) + "\n").encode()


def _session(tmp_path: Path, preset: str = "gpt-oss-20b-lora-1gpu", **launcher_args):  # noqa: ANN202
    cfg = load_config(preset, [f"output.dir={tmp_path / 'out'}"])
    launcher = ScriptedLauncher(**launcher_args)
    return RunSession(cfg, launcher, h100_profile(1)), launcher


def test_events_file_that_appears_late(tmp_path: Path) -> None:
    reader = EventReader(tmp_path / "out" / EVENTS_FILE)
    assert reader.poll() == []  # neither the directory nor the file exists yet
    (tmp_path / "out").mkdir()
    assert reader.poll() == []
    (tmp_path / "out" / EVENTS_FILE).write_bytes(_line("warning", message="late but here"))
    assert [e.message for e in reader.poll()] == ["late but here"]


def test_partial_last_line_is_held_until_complete(tmp_path: Path) -> None:
    path = tmp_path / EVENTS_FILE
    first, second = _line("warning", message="one"), _line("step", **step_event(1, 10, 1))
    path.write_bytes(first + second[:25])
    reader = EventReader(path)
    assert [e.type for e in reader.poll()] == ["warning"]
    assert reader.poll() == []  # still half a line
    with open(path, "ab") as fh:
        fh.write(second[25:])
    events = reader.poll()
    assert [e.type for e in events] == ["step"] and events[0].step == 1
    assert reader.bad_lines == 0


def test_session_reads_events_written_before_exit_and_skips_earlier_runs(tmp_path: Path) -> None:
    session, launcher = _session(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / EVENTS_FILE).write_bytes(_line("step", **step_event(7, 10, 1)))
    session.start(resume=True)
    process = launcher.process
    assert session.pump().changed  # the log tail is new
    assert not session.pump().changed  # nothing changed
    process.run_start(total=3)
    for step in (1, 2, 3):
        process.step(step, 3)
    process.finish()
    pumped = session.pump()
    assert pumped.finished and [e.type for e in pumped.events][-1] == "run_end"
    snap = session.snapshot()
    assert isinstance(snap.end, RunEnd) and snap.end.outputs == {"export": "out/export"}
    assert [p.step for p in snap.new_points] == [1, 2, 3]  # step 7 was an earlier attempt
    assert snap.gpus[0].total_gib == 79.65 and snap.status == "completed"
    assert session.snapshot().new_points == ()  # drained: each point reaches the chart once


def test_start_step_and_reset_on_run_start() -> None:
    fold = RunFold()
    fold.apply([_event("error", kind="oom", message="m", hint="h"),
                _event("run_end", status="failed", outputs={})])
    assert fold.status == "failed" and fold.error is not None
    fold.apply([_event("run_start", config={}, world_size=1, gpus=[], model={}, dataset={},
                       total_steps=40, start_step=12)])
    assert (fold.step, fold.total_steps, fold.status) == (12, 40, "training")
    assert fold.error is None and fold.end is None


def test_a_gpu_run_is_known_from_its_config_before_the_first_step(tmp_path: Path) -> None:
    session, _ = _session(tmp_path)
    gpus = session.snapshot().gpus
    assert [(g.rank, g.total_gib, g.reserved_gib) for g in gpus] == [(0, 79.65, None)]
    cpu, _ = _session(tmp_path, preset="tiny-cpu-demo")
    assert cpu.snapshot().gpus == ()


def test_peaks_are_kept_across_steps() -> None:
    fold = RunFold()
    for step, reserved in ((1, 30.0), (2, 50.0), (3, 20.0)):
        event = step_event(step, 3, 1)
        event["gpus"][0]["device_mem_reserved_gib"] = reserved
        fold.apply([_event("step", **event)])
    gpu = fold.gpus[0]
    assert (gpu.reserved_gib, gpu.peak_gib) == (20.0, 50.0)


def test_memory_stays_flat_over_a_long_run() -> None:
    fold = RunFold(history=512)
    fold.apply(_event("step", **step_event(s, 10_000, 8)) for s in range(1, 10_001))
    for s in range(1, 200):
        fold.apply([_event("checkpoint", path=f"ckpt/{s}", step=s)])
    assert len(fold.new_points) == 512 and fold.new_points[-1].step == 10_000
    assert len(fold.notes) <= 50 and len(fold.gpus) == 8
    assert fold.events_seen == 10_000 + 199


def test_error_event_is_kept_typed() -> None:
    fold = RunFold()
    fold.apply([_event("error", kind="oom", message="CUDA out of memory",
                       hint="lower training.sequence_len")])
    assert isinstance(fold.error, ErrorEvent) and fold.error.kind == "oom"


def test_a_preflight_refusal_starts_nothing_and_is_forceable(tmp_path: Path) -> None:
    cfg = load_config("gpt-oss-20b-lora-1gpu", [f"output.dir={tmp_path / 'out'}"])
    launcher = ScriptedLauncher(preflight=preflight)
    session = RunSession(cfg, launcher, h100_profile(0))
    with pytest.raises(PreflightError, match="0 visible"):
        session.start()
    snap = session.snapshot()
    assert snap.status == "refused" and snap.forceable and "0 visible" in snap.refusal
    assert launcher.calls == [] and not (tmp_path / "out").exists()
    waived = session.start(force=True)
    assert any("0 visible" in p for p in waived) and launcher.calls[-1][2] is True
    assert session.snapshot().refusal is None


def test_a_live_run_refuses_even_forced(tmp_path: Path) -> None:
    held = OutputLock.acquire(tmp_path / "out")
    session, launcher = _session(tmp_path)
    for force, resume in ((False, False), (True, False), (False, True)):
        with pytest.raises(RunLocked, match=f"pid {held.owner.pid}"):
            session.start(resume=resume, force=force)
        assert not session.snapshot().forceable
    assert launcher.calls == []
    held.release()


def test_stop_is_sent_once(tmp_path: Path) -> None:
    session, launcher = _session(tmp_path, finish_on_stop=False)
    session.start()
    for _ in range(3):
        session.stop()
    assert launcher.process.stop_calls == 1 and session.snapshot().status == "stopping"


def test_the_session_owns_the_folder_until_the_engine_ends(tmp_path: Path) -> None:
    session, launcher = _session(tmp_path)
    session.start()
    with pytest.raises(RunLocked):
        OutputLock.acquire(tmp_path / "out")
    launcher.process.finish()
    assert session.pump().finished
    OutputLock.acquire(tmp_path / "out").release()


def test_pump_is_cheap_when_idle(tmp_path: Path) -> None:
    session, _ = _session(tmp_path)
    session.start()
    start = time.perf_counter()
    for _ in range(1000):
        session.pump()
    assert time.perf_counter() - start < 1.0


def test_scripted_process_is_the_engine_process_surface(tmp_path: Path) -> None:
    process = ScriptedProcess(tmp_path)
    assert process.stderr_tail(5) == ["engine: starting"]


def test_events_are_typed_keep_future_fields_and_refuse_other_versions() -> None:
    from osstune.engine.session.events import EventSchemaError, Step

    step = parse_event({"v": 1, "type": "step", "time": 1.0, **step_event(3, 10, 2),
                        "added_later": {"x": 1}})
    assert isinstance(step, Step) and step.gpus[1].device_mem_reserved_gib == 21.0
    assert step.record()["added_later"] == {"x": 1}  # kept, ignored by the fold
    for bad, why in (({"v": 2, "type": "step", "time": 1.0}, "expected 1"),
                     ({"v": 1, "type": "nope", "time": 1.0}, "unknown event type"),
                     ({"v": 1, "type": "checkpoint", "time": 1.0, "path": "p", "step": True},
                      "checkpoint: step"),
                     ({"v": 1, "type": "run_end", "time": 1.0, "status": "maybe", "outputs": {}},
                      "run_end: status")):
        with pytest.raises(EventSchemaError, match=why):
            parse_event(bad)


def test_the_first_pump_after_an_attach_shows_what_the_attach_read(tmp_path: Path) -> None:
    """Both front-ends repaint on `changed`: a step read by the attach itself counts as news,
    once (`osstune attach`'s panel and the wizard showed nothing until the next event)."""
    session, _ = _session(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / EVENTS_FILE).write_bytes(_line("step", **step_event(1, 10, 1)))
    lock = OutputLock.acquire(out)  # the live run's owner
    try:
        session.attach()
        assert session.snapshot().step == 1
        assert session.pump().changed
        assert not session.pump().changed  # nothing new since
    finally:
        lock.release()
