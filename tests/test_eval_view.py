"""The eval loss in front of the user: the plain line, the live panel, the wizard's chart, and
the per-source dataset lines of a mixed run."""

from __future__ import annotations

import io

from rich.console import Console
from test_tui_widgets import Host, rendered_lines
from tui_fixtures import run_async

from osstune.engine.session.events import parse_event
from osstune.engine.session.fold import EvalPoint, RunFold, StepPoint
from osstune.tui.render.chart import AXIS_WIDTH, EVAL_MARK, column_span, eval_cells
from osstune.tui.render.run import dataset_lines, event_line, run_panel
from osstune.tui.widgets.loss_chart import LossChart

EVAL = {"v": 1, "type": "eval", "time": 1.0, "step": 20, "loss": 1.23456, "trained_tokens": 50}
STATS = {"sources": [
    {"source": "a.jsonl", "format": "messages", "weight": 1.0, "rows_read": 12,
     "rows_skipped": {}, "examples": 11, "examples_used": 11, "tokens_trained": 99},
    {"source": "b.jsonl", "format": "sharegpt", "weight": 0.5, "rows_read": 12,
     "rows_skipped": {"no assistant message": 2}, "examples": 10, "examples_used": 5,
     "tokens_trained": 40}],
    "validation": {"source": "val_size 0.1", "examples": 3, "tokens_trained": 1234}}


def test_plain_eval_line_and_panel():
    assert event_line(parse_event(EVAL)) == "eval step 20: loss 1.2346"
    fold = RunFold()
    fold.apply([parse_event(EVAL)])
    text = _panel(fold)
    assert "eval loss" in text and "1.2346" in text
    assert "eval loss" not in _panel(RunFold())


def _panel(fold):
    console = Console(width=100, record=True, color_system=None, file=io.StringIO())
    console.print(run_panel("demo", fold.snapshot()))
    return console.export_text()


def test_each_source_and_the_validation_split_get_a_line():
    assert dataset_lines(STATS) == [
        "  dataset a.jsonl (messages, weight 1): 11 examples from 12 rows",
        "  dataset b.jsonl (sharegpt, weight 0.5): 5 examples from 12 rows, 2 skipped",
        "  validation (val_size 0.1): 3 examples, 1,234 trained tokens"]
    start = parse_event({"v": 1, "type": "run_start", "time": 1.0, "config": {}, "gpus": [],
                         "model": {"id": "m", "init": "random"}, "world_size": 1,
                         "total_steps": 4, "dataset": STATS})
    assert event_line(start).splitlines()[1:] == dataset_lines(STATS)
    assert dataset_lines({"sources": [], "validation": None}) == []


def test_run_fold_folds_eval_points_for_the_chart():
    fold = RunFold()
    fold.apply([parse_event(EVAL)])
    assert fold.eval_loss == 1.23456 and list(fold.new_eval_points) == [EvalPoint(20, 1.23456)]
    snap = fold.snapshot()
    assert snap.eval_loss == 1.23456 and snap.new_eval_points == (EvalPoint(20, 1.23456),)


def test_eval_points_land_in_their_step_column():
    steps = list(range(1, 101))
    assert eval_cells(steps, 100, [EvalPoint(50, 1.0)]) == {49: 1.0}
    assert eval_cells(steps, 10, [EvalPoint(50, 1.0), EvalPoint(100, 2.0)]) == {4: 1.0, 9: 2.0}
    assert eval_cells(steps, 10, [EvalPoint(500, 1.0)]) == {}  # outside the window


@run_async
async def test_chart_draws_eval_as_a_second_line() -> None:
    chart = LossChart()
    async with Host(chart).run_test(size=(40, 8)) as pilot:
        chart.add_points(StepPoint(s, 4.0 - s * 0.1, 0.0) for s in range(1, 21))
        chart.add_eval_points([EvalPoint(10, 5.0), EvalPoint(20, 3.5)])
        await pilot.pause()
        lines = rendered_lines(chart)
        # eval 5.0 is above every training loss: the top row, in a column of step 10's share
        # of the width (20 steps stretched over the whole plot)
        assert lines[0].startswith("     5 ┤") and lines[0].count(EVAL_MARK) == 1
        column = lines[0].index(EVAL_MARK) - AXIS_WIDTH
        assert column_span(column, 20, chart.content_size.width - AXIS_WIDTH)[0] == 9
        assert sum(line.count(EVAL_MARK) for line in lines[:-1]) == 2
        assert f"{EVAL_MARK} eval" in lines[-1]
        chart.clear()
        assert not chart.eval_history
