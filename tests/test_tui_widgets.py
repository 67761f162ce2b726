"""Widgets on their own: bounded histories, the 8-GPU memory panel, the log tail, settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.app import App, ComposeResult
from textual.widget import Widget
from tui_fixtures import run_async

from osstune.engine.session.fold import GpuMemory, StepPoint
from osstune.tui.settings import Settings
from osstune.tui.widgets.bars import meter
from osstune.tui.widgets.log_tail import LogTail
from osstune.tui.widgets.loss_chart import LossChart, bucket_means
from osstune.tui.widgets.memory_panel import MemoryPanel


class Host(App[None]):
    def __init__(self, widget: Widget) -> None:
        super().__init__()
        self.widget = widget

    def compose(self) -> ComposeResult:
        yield self.widget


def rendered_lines(widget: Widget) -> list[str]:
    return str(widget.render()).splitlines()


@run_async
async def test_loss_chart_keeps_a_bounded_history() -> None:
    chart = LossChart(maxlen=256)
    async with Host(chart).run_test(size=(100, 12)) as pilot:
        for start in range(0, 10_000, 500):
            chart.add_points(StepPoint(s, 10.0 / s, 1e-3) for s in range(start + 1, start + 501))
        await pilot.pause()
        assert len(chart.history) == 256
        assert chart.history[0].step == 10_000 - 255 and chart.history[-1].step == 10_000
        lines = rendered_lines(chart)
        assert len(lines) == chart.content_size.height
        assert lines[-1].split() == ["step", "9745", "10000"]
        assert all(len(line) <= chart.content_size.width for line in lines)


@run_async
async def test_loss_chart_puts_high_loss_at_the_top() -> None:
    chart = LossChart()
    async with Host(chart).run_test(size=(40, 6)) as pilot:
        chart.add_points([StepPoint(1, 4.0, 0.0), StepPoint(2, 1.0, 0.0)])
        await pilot.pause()
        top, *_, bottom_row, axis = rendered_lines(chart)
        assert top.startswith("     4 ┤█") and top[9] == " "  # only step 1 reaches the top row
        assert bottom_row.startswith("     1 ┤█▁")  # the lowest loss is a sliver, not a gap
        assert axis.split() == ["step", "1", "2"]


def test_bucket_means_averages_down_to_the_width() -> None:
    assert bucket_means([1, 2, 3], 5) == [1, 2, 3]
    assert bucket_means([1, 3, 5, 7], 2) == [2.0, 6.0]


@run_async
async def test_memory_panel_shows_eight_gpus_one_row_each() -> None:
    panel = MemoryPanel()
    gpus = [GpuMemory(r, "NVIDIA H100 80GB HBM3", 79.65, 30.0 + r, 40.0 + r) for r in range(8)]
    async with Host(panel).run_test(size=(100, 30)) as pilot:
        panel.set_gpus(gpus)
        await pilot.pause()
        lines = rendered_lines(panel)
        assert len(lines) == 8 and panel.size.height == 8
        for rank, line in enumerate(lines):
            assert line.split()[0] == str(rank)
            assert f"{30.0 + rank:.1f}/79.7" in line and f"pk  {40.0 + rank:.1f}" in line
            assert "H100 80GB" in line


@run_async
async def test_memory_panel_marks_the_peak_and_handles_no_gpu() -> None:
    panel = MemoryPanel()
    async with Host(panel).run_test(size=(60, 10)) as pilot:
        await pilot.pause()
        assert "no GPU" in rendered_lines(panel)[0]
        panel.set_gpus([GpuMemory(0, "cpu", 0.0, 0.0, 0.0)])  # what a CPU run reports
        await pilot.pause()
        assert rendered_lines(panel) == [" 0 cpu          no device memory (CPU)"]
        panel.set_gpus([GpuMemory(0, "A", 80.0, 20.0, 60.0)])
        await pilot.pause()
        assert "▏" in rendered_lines(panel)[0]


@run_async
async def test_memory_panel_grows_to_sixteen_gpus() -> None:
    panel = MemoryPanel()
    async with Host(panel).run_test(size=(100, 30)) as pilot:
        panel.set_gpus([GpuMemory(r, "GPU", 80.0, 1.0, 1.0) for r in range(16)])
        await pilot.pause()
        assert panel.size.height == 16


def test_meter_fills_and_marks() -> None:
    bar = meter(0.5, 10, peak=0.8)
    assert len(bar) == 10 and bar.plain.startswith("█████") and bar.plain[7] == "▏"
    assert meter(None, 4).plain == "····"
    assert meter(2.0, 4).plain == "████"


@run_async
async def test_log_tail_shows_the_last_lines_that_fit() -> None:
    tail = LogTail(maxlen=50)
    async with Host(tail).run_test(size=(60, 10)) as pilot:
        tail.set_lines(f"[red]line {i}" for i in range(100))
        await pilot.pause()
        assert len(tail.lines) == 50
        assert rendered_lines(tail) == [f"[red]line {i}" for i in range(94, 100)]  # no markup


def test_settings_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "wizard.json"
    assert Settings.load(path) == Settings()
    Settings(preset="tiny-cpu-demo", dataset="data.jsonl", output_dir="out").save(path)
    assert Settings.load(path) == Settings("tiny-cpu-demo", "data.jsonl", "out")


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"preset": 3, "other": "x"}'])
def test_settings_ignore_a_broken_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "wizard.json"
    path.write_text(content)
    assert Settings.load(path) == Settings()


def test_settings_default_under_the_user_config_dir(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    Settings(preset="p").save()
    saved = json.loads((tmp_path / "osstune" / "wizard.json").read_text())
    assert saved["preset"] == "p"
