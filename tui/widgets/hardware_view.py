"""The machine as the planner sees it: each GPU with a memory bar, then host RAM, CPUs and disk."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from osstune.tui.widgets.bars import meter

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult

    from osstune.engine.plan.hardware import HardwareProfile

BAR_WIDTH, NARROW_BAR_WIDTH = 24, 8
WIDE_TABLE = 98  # the content width of a 100-column screen


def _num(value: float | None, unit: str = " GiB") -> str:
    if value is None:
        return "?"
    if unit == " GiB":  # a size: the one format every command uses
        from osstune.engine.plan.units import fmt_gib

        return fmt_gib(value)
    return f"{value:,.1f}{unit}"


def gpu_table(profile: HardwareProfile, bar_width: int = BAR_WIDTH) -> Table:
    table = Table(box=None, pad_edge=False, expand=True, header_style="bold")
    for name, kw in (
        ("#", {"justify": "right", "width": 2}),
        ("GPU", {"ratio": 2}),
        ("memory used / total", {"width": bar_width + 18}),
        ("util", {"justify": "right"}),
        ("cc", {}),
        ("NVLink", {}),
    ):
        table.add_column(name, no_wrap=True, **kw)
    for gpu in profile.gpus:
        used = gpu.memory_used_gib
        if used is None and gpu.memory_free_gib is not None:
            used = gpu.memory_total_gib - gpu.memory_free_gib
        fraction = (
            used / gpu.memory_total_gib if used is not None and gpu.memory_total_gib else None
        )
        bar = meter(fraction, bar_width)
        bar.append(f" {_num(used, '')}/{_num(gpu.memory_total_gib)}")
        util = "?" if gpu.utilization_pct is None else f"{gpu.utilization_pct:.0f}%"
        nvlink = {True: "yes", False: "no", None: "?"}[gpu.nvlink]
        table.add_row(str(gpu.index), gpu.name, bar, util, gpu.compute_capability or "?", nvlink)
    return table


def host_lines(profile: HardwareProfile) -> Text:
    ram = f"RAM {_num(profile.ram_gib)}"
    if profile.ram_available_gib is not None:
        ram += f" ({_num(profile.ram_available_gib)} available)"
    disk = f"disk {_num(profile.disk_free_gib)} free at {profile.output_dir}"
    if profile.hf_cache_free_gib is not None:
        disk += f" · HF cache {_num(profile.hf_cache_free_gib)} free"
    driver = f"driver {profile.driver_version or '?'} · CUDA {profile.cuda_version or '?'}"
    return Text(
        "\n".join([f"{ram} · {profile.cpu_count} CPUs", disk, driver, f"source: {profile.source}"])
    )


class MachineView:
    """A Rich renderable: the GPU table's bars shrink when it is drawn narrower than
    `WIDE_TABLE` columns (an 80-column terminal), so the GPU names keep their room."""

    def __init__(self, profile: HardwareProfile) -> None:
        self.profile = profile

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        profile = self.profile
        if profile.gpus:
            title = Text(f"{len(profile.gpus)} GPU(s)", style="bold")
            bar = BAR_WIDTH if options.max_width >= WIDE_TABLE else NARROW_BAR_WIDTH
            gpus: Table | Text = gpu_table(profile, bar)
        else:
            title = Text("no GPU", style="bold yellow")
            gpus = Text(profile.gpu_error or "no NVIDIA GPU found", style="yellow")
        yield Group(title, gpus, Text(""), Text("Host", style="bold"), host_lines(profile))


class HardwareView(Static):
    def show(self, profile: HardwareProfile) -> None:
        self.update(MachineView(profile))
