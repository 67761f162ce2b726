"""Widgets on their own: bounded histories, the 8-GPU memory panel, the log tail, settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.app import App, ComposeResult
from textual.widget import Widget
from tui_fixtures import run_async

from osstune.engine.session.fold import GpuMemory, StepPoint
from osstune.tui.render.chart import column_means
from osstune.tui.settings import Settings
from osstune.tui.widgets.bars import meter
from osstune.tui.widgets.log_tail import LogTail
from osstune.tui.widgets.loss_chart import LossChart
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
        axis = lines[-1].split()
        assert axis[:2] == ["step", "9745"] and axis[-1] == "10000"
        assert len(axis) == 4 and 9745 < int(axis[2]) < 10000  # a middle tick
        assert all(len(line) <= chart.content_size.width for line in lines)


@run_async
async def test_loss_chart_puts_high_loss_at_the_top() -> None:
    chart = LossChart()
    async with Host(chart).run_test(size=(40, 6)) as pilot:
        chart.add_points([StepPoint(1, 4.0, 0.0), StepPoint(2, 1.0, 0.0)])
        await pilot.pause()
        top, *_, bottom_row, axis = rendered_lines(chart)
        # two steps share the plot's columns: step 1 the left half, step 2 the right half
        half = (chart.content_size.width - 8) // 2
        assert top == "     4 ┤" + "█" * half + " " * half  # only step 1 reaches the top row
        assert bottom_row == "     1 ┤" + "█" * half + "▁" * half  # the lowest: a sliver
        assert axis.split() == ["step", "1", "2"] and axis.endswith("2")


def test_column_means_fill_the_width_whatever_the_number_of_steps() -> None:
    assert column_means([1, 2, 3], 5) == [1, 1, 2, 2, 3]  # few: stretched
    assert column_means([1, 3, 5, 7], 2) == [2.0, 6.0]  # many: averaged
    assert column_means([1, 2], 2) == [1, 2]
    assert column_means([], 4) == []


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
        panel.set_gpus([GpuMemory(0, "cpu", 0.0, None)])  # a CPU run's run_start: no GPU wait
        await pilot.pause()
        assert rendered_lines(panel) == [" 0 cpu          no device memory (CPU)"]
        panel.set_gpus([GpuMemory(0, "cpu", 0.0, 0.0, 0.0)])  # what a CPU run reports
        await pilot.pause()
        assert rendered_lines(panel) == [" 0 cpu          no device memory (CPU)"]
        panel.set_gpus([GpuMemory(0, "A", 80.0, 20.0, 60.0)])
        await pilot.pause()
        assert "▏" in rendered_lines(panel)[0]
        panel.set_gpus([GpuMemory(0, "A", None, 3.0, 3.0)])  # no card size: figures, no bar
        await pilot.pause()
        assert rendered_lines(panel) == [" 0 A            3.00 GiB reserved (peak since last step)"]


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


def visible_log(tail: LogTail) -> list[str]:
    return [tail.render_line(y).text.rstrip() for y in range(tail.scrollable_content_region.height)]


@run_async
async def test_log_tail_follows_the_end_and_scrolls_back() -> None:
    tail = LogTail(maxlen=50)
    async with Host(tail).run_test(size=(60, 10)) as pilot:
        tail.styles.height = 6
        tail.set_lines(f"[red]line {i}" for i in range(100))
        await pilot.pause()
        assert len(tail.lines) == 50
        assert visible_log(tail) == [f"[red]line {i}" for i in range(94, 100)]  # no markup
        tail.scroll_to(y=10, animate=False, immediate=True)  # the user reads back...
        await pilot.pause()
        assert visible_log(tail)[0] == "[red]line 60" and not tail.following
        tail.set_lines(f"[red]line {i}" for i in range(1, 101))  # ...and a new line comes
        await pilot.pause()
        assert visible_log(tail)[0] == "[red]line 60"  # it stays where it was read
        assert tail.lines[-1] == "[red]line 100" and len(tail.lines) == 50
        tail.scroll_end(animate=False, immediate=True)
        await pilot.pause()
        assert tail.following and visible_log(tail)[-1] == "[red]line 100"
        tail.set_lines(["a new run"])  # no overlap: starts again
        await pilot.pause()
        assert list(tail.lines) == ["a new run"]


def test_new_part_finds_the_overlap_of_two_windows() -> None:
    from osstune.tui.widgets.log_tail import new_part

    assert new_part([], ["a"]) == 0
    assert new_part(["a", "b", "c"], ["b", "c", "d"]) == 2
    assert new_part(["a", "b"], ["a", "b"]) == 2
    assert new_part(["a", "b"], ["x", "y"]) is None


def test_settings_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "wizard.json"
    assert Settings.load(path) == Settings()
    Settings(preset="tiny-cpu-demo", dataset="data.jsonl", output_dir="out",
             presets={"no GPU": "tiny-cpu-demo"}).save(path)
    assert Settings.load(path) == Settings("tiny-cpu-demo", "data.jsonl", "out",
                                           {"no GPU": "tiny-cpu-demo"})


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"preset": 3, "other": "x"}',
                                     '{"presets": {"no GPU": 3}}', '{"presets": ["a"]}'])
def test_settings_ignore_a_broken_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "wizard.json"
    path.write_text(content)
    assert Settings.load(path) == Settings()


def test_settings_default_under_the_user_config_dir(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    Settings(preset="p").save()
    saved = json.loads((tmp_path / "osstune" / "wizard.json").read_text())
    assert saved["preset"] == "p"
