"""How a run reads: plain lines per event and the Rich live panel, from typed events."""

from __future__ import annotations

from rich.console import Console

from osstune.engine.session.events import SCHEMA_VERSION, parse_event
from osstune.engine.session.fold import RunFold
from osstune.tui.render.run import (
    STOP_HINT,
    STOPPING_HINT,
    event_line,
    run_panel,
    skipped_rows_line,
    stats_line,
)

STEP = {"v": 1, "type": "step", "time": 1.0, "step": 3, "total_steps": 40, "epoch": 0.3,
        "loss": 2.34567, "lr": 2e-4, "grad_norm": 0.5, "trained_tokens": 900,
        "tokens_per_s": 4432.4, "elapsed_s": 12.0, "eta_s": 3725.0,
        "gpus": [{"rank": 0, "device_mem_reserved_gib": 41.91, "mem_allocated_gib": 40.3,
                  "mem_active_gib": 40.3},
                 {"rank": 1, "device_mem_reserved_gib": 26.53, "mem_allocated_gib": 11.6,
                  "mem_active_gib": 11.6}]}


def _event(kind: str, /, **fields):  # noqa: ANN202
    return parse_event({"v": SCHEMA_VERSION, "type": kind, "time": 1.0, **fields})


def test_plain_step_line():
    assert event_line(parse_event(STEP)) == ("step 3/40 loss 2.3457 lr 0.0002 4432 tok/s "
                                             "mem r0:41.9GiB r1:26.5GiB eta 1:02:05")


def test_error_and_end_lines():
    error = _event("error", kind="out_of_memory", message="out of GPU memory",
                   hint="lower training.sequence_len")
    assert event_line(error) == ("error (out_of_memory): out of GPU memory\n"
                                 "  hint: lower training.sequence_len")
    end = _event("run_end", status="stopped", outputs={"checkpoint": "/o/c"})
    assert event_line(end) == "run_end: stopped (checkpoint=/o/c)"


def test_panel_renders_the_folded_snapshot():
    fold = RunFold()
    fold.apply([_event("run_start", total_steps=40, start_step=2, model={}, world_size=2,
                       config={}, gpus=[], dataset={})])
    assert (fold.step, fold.total_steps, fold.status) == (2, 40, "training")
    fold.apply([parse_event(STEP), _event("checkpoint", step=3, path="/o/c")])
    snap = fold.snapshot(log_lines=("[engine] step 3/40",))
    assert snap.loss == 2.34567 and snap.notes == ("checkpoint at step 3: /o/c",)
    console = Console(width=100, record=True, color_system=None)
    console.print(run_panel("demo", snap))
    text = console.export_text()
    assert "3/40" in text and "2.3457" in text and "41.91 GiB reserved" in text
    assert "rank 1" in text and "1:02:05" in text and "[engine] step 3/40" in text


CPU_STEP = {**STEP, "gpus": [{"rank": 0, "device_mem_reserved_gib": 0.0, "mem_allocated_gib": 0.0,
                               "mem_active_gib": 0.0}]}  # a CPU rank reports zeros (metrics.py)


def test_a_cpu_run_shows_no_gpu_figure_in_the_line_or_the_panel():
    assert event_line(parse_event(CPU_STEP)) == ("step 3/40 loss 2.3457 lr 0.0002 4432 tok/s "
                                                 "eta 1:02:05")
    fold = RunFold()
    fold.apply([_event("run_start", total_steps=40, model={}, world_size=1, config={},
                       gpus=[{"rank": 0, "name": "cpu", "memory_total_gib": 0.0}], dataset={})])
    assert "rank 0" in _panel_text(fold.snapshot())
    assert "no device memory (CPU)" in _panel_text(fold.snapshot())  # also before the first step
    fold.apply([parse_event(CPU_STEP)])
    text = _panel_text(fold.snapshot())
    assert "no device memory (CPU)" in text and "GiB" not in text


def test_the_clock_reads_to_the_second_in_the_line_the_panel_and_the_stats():
    fold = RunFold()
    fold.apply([parse_event({**STEP, "elapsed_s": 59.6})])
    snap = fold.snapshot()
    assert event_line(parse_event(STEP)).endswith("eta 1:02:05")
    assert "1:02:05" in _panel_text(snap)
    assert "elapsed 1:00  ETA 1:02:05" in stats_line(snap).plain


def test_the_packed_row_length_and_why_reach_the_line_and_the_panel():
    pack = {"length": 7168, "reason": "speed knee", "why": "auto: speed knee, ~16,767 tok/s",
            "detail": "7,168 tokens (auto: speed knee, ~16,767 tok/s)"}
    start = _event("run_start", total_steps=40, model={"id": "m"}, world_size=1, config={},
                   gpus=[], dataset={}, pack_len=pack)
    assert "  rows: pack_len 7,168 tokens (auto: speed knee, ~16,767 tok/s)" in event_line(start)
    fold = RunFold()
    fold.apply([start])
    console = Console(width=100, record=True, color_system=None)
    console.print(run_panel("demo", fold.snapshot()))
    text = console.export_text()
    assert "rows" in text and "7,168 tokens (auto: speed knee" in text
    older = _event("run_start", total_steps=40, model={}, world_size=1, config={}, gpus=[],
                   dataset={})  # engines before pack_len: no line, no row
    assert "rows:" not in event_line(older)


SKIPPED = {"rows_read": 12, "rows_skipped": {"unknown role": 1, "no assistant message": 1},
           "skip_samples": ["row 11: message 0: unknown role 'robot'", "row 12: no assistant"],
           "source": "bad.jsonl", "sources": []}


def _start(dataset, total_steps=1):  # noqa: ANN001, ANN202
    return _event("run_start", total_steps=total_steps, start_step=0, model={"id": "m"},
                  world_size=1, config={}, gpus=[], dataset=dataset)


def _panel_text(snap) -> str:  # noqa: ANN001
    console = Console(width=120, record=True, color_system=None)
    console.print(run_panel("demo", snap))
    return console.export_text()


def test_skipped_rows_are_said_in_plain_output_with_the_file_and_numbering():
    assert event_line(_start(SKIPPED)) == (
        "run_start: m (None), world size 1, 1 step\n"
        "  bad.jsonl: 2 of 12 rows skipped (unknown role: 1, no assistant message: 1); "
        "first (rows count from 1): row 11: message 0: unknown role 'robot'")
    assert skipped_rows_line({**SKIPPED, "rows_skipped": {}}) is None
    # a folder names the file in the sample; a mix names each source in its samples
    mix = {**SKIPPED, "sources": [{"source": "a.jsonl"}],
           "skip_samples": ["a.jsonl: row 3 (b.jsonl line 2): bad"]}
    assert skipped_rows_line(mix) == ("2 of 12 rows skipped (unknown role: 1, no assistant "
                                      "message: 1); first (rows count from 1): a.jsonl: row 3 "
                                      "(b.jsonl line 2): bad")


def test_panel_says_skipped_rows_and_what_ctrl_c_does_until_the_run_ends():
    fold = RunFold()
    fold.apply([_start(SKIPPED, total_steps=4)])
    running = _panel_text(fold.snapshot())
    assert "data" in running and "2 of 12 rows skipped" in running
    assert STOP_HINT in running
    stopping = _panel_text(fold.snapshot(status="stopping"))
    assert STOPPING_HINT in stopping and STOP_HINT not in stopping
    fold.apply([_event("run_end", status="completed", outputs={})])
    done = _panel_text(fold.snapshot(exit_code=0))
    assert "Ctrl-C" not in done and "2 of 12 rows skipped" in done


def test_panel_leaves_the_error_to_the_final_report():
    fold = RunFold()
    fold.apply([_start(SKIPPED), _event("error", kind="dataset", message="bad.jsonl: no rows",
                                        hint="check it"),
                _event("run_end", status="failed", outputs={})])
    text = _panel_text(fold.snapshot(exit_code=2))
    assert "no rows" not in text and "run failed" in text and "Ctrl-C" not in text


def test_the_live_terminal_settings_are_skipped_when_stdin_is_no_terminal(monkeypatch, tmp_path):
    import sys

    from osstune.tui.commands.run import terminal_for_live

    with open(tmp_path / "in", "w+") as not_a_tty:  # e.g. `osstune run ... < /dev/null`
        monkeypatch.setattr(sys, "stdin", not_a_tty)
        with terminal_for_live():
            pass
