"""Per-GPU `device_mem_reserved`: current and peak against the card's size, one row per GPU."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widget import Widget

from osstune.engine.session.fold import GpuMemory
from osstune.tui.render.run import gpu_memory_status, gpu_memory_text
from osstune.tui.widgets.bars import meter

NAME_WIDTH = 12
WIDE_ENOUGH_FOR_NAMES = 46  # below this the bar gets the room and names are left out


def short_name(name: str) -> str:
    return name.replace("NVIDIA ", "").replace("GeForce ", "")


def _gib(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}"


class MemoryPanel(Widget):
    """Height follows the GPU count: 8+ GPUs scroll inside their container, never clip."""

    DEFAULT_CSS = """
    MemoryPanel { height: auto; text-wrap: nowrap; text-overflow: clip; }
    """

    def __init__(
        self, *, name: str | None = None, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.gpus: tuple[GpuMemory, ...] = ()

    def set_gpus(self, gpus: Sequence[GpuMemory]) -> None:
        gpus = tuple(gpus)
        if gpus != self.gpus:
            resized = len(gpus) != len(self.gpus)
            self.gpus = gpus
            self.refresh(layout=resized)

    def get_content_height(self, container, viewport, width: int) -> int:  # noqa: ANN001
        return max(len(self.gpus), 1)

    def render(self) -> Text:
        if not self.gpus:
            return Text("no GPU in this run (CPU): nothing to report", style="dim")
        width = self.content_size.width
        rows = [self._row(gpu, width) for gpu in self.gpus]
        return Text("\n", no_wrap=True, overflow="crop").join(rows)

    @staticmethod
    def _row(gpu: GpuMemory, width: int) -> Text:
        label = f"{gpu.rank:>2} "
        if width >= WIDE_ENOUGH_FOR_NAMES:
            label += f"{short_name(gpu.name)[:NAME_WIDTH]:<{NAME_WIDTH}} "
        row = Text(label)
        total = gpu.total_gib or 0.0
        status = gpu_memory_status(gpu)  # a CPU rank, or a GPU before its first step
        if status is not None or total <= 0:  # no card size (an older log): figures, no bar
            row.append(status or gpu_memory_text(gpu), style="dim")
            return row
        figures = f" {_gib(gpu.reserved_gib):>5}/{_gib(total)} pk {_gib(gpu.peak_gib):>5}"
        bar_width = max(width - len(label) - len(figures), 4)
        row.append_text(meter(gpu.reserved_gib / total, bar_width, gpu.peak_gib / total))
        row.append(figures)
        return row
