"""An estimate (engine/plan/estimate.py) as text: a memory bar against the card, the figures, the
time, and on request the terms each figure adds up ("why 49 GiB?")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text

from osstune.engine.plan.units import fmt_duration
from osstune.tui.render.verdict import verdict_style
from osstune.tui.widgets.bars import meter

if TYPE_CHECKING:
    from osstune.engine.plan.estimate import Estimate
    from osstune.engine.plan.hardware import HardwareProfile

def card_gib(profile: HardwareProfile | None, gpus: int) -> float | None:
    """The smallest of the `gpus` largest cards (what a run on them must fit); with fewer cards
    than that, the smallest there is."""
    if profile is None or gpus < 1 or not profile.gpus:
        return None
    cards = sorted((g.memory_total_gib for g in profile.gpus), reverse=True)
    return cards[min(gpus, len(cards)) - 1]


def memory_bar(est: Estimate | None, card: float | None, width: int = 16) -> Text:
    """'█████░░░ 49/80 GiB' - the reserved peak against the card (floor marked with auto)."""
    if est is None or not est.ok:
        return Text("no estimate", style="dim")
    if not est.gpus:
        return Text("CPU", style="dim")
    if card is None:
        return Text(f"{est.peak_mem_gib_per_gpu:.0f} GiB (no card)", style="yellow")
    figures = f"{est.peak_mem_gib_per_gpu:.0f}/{card:.0f} GiB"
    if width <= 0:  # no room for the bar: the figures alone
        return Text(figures)
    bar = meter(min(est.min_peak_mem_gib_per_gpu / card, 1.0), width,
                peak=est.peak_mem_gib_per_gpu / card)
    bar.append(" " + figures)
    return bar


def summary(est: Estimate | None, verdict: str | None, card: float | None) -> Text:
    """The estimate in five lines: verdict, GPU bar, packed row length, host RAM and disk, speed
    and time."""
    if est is None:
        return Text("")
    if not est.ok:
        return Text(str(est.problem), style="yellow")
    out = Text.assemble(("estimate: ", "bold"), (verdict or "", verdict_style(verdict)))
    if est.gpus:
        out.append("\nGPU  ")
        out.append_text(memory_bar(est, card))
        if est.min_peak_mem_gib_per_gpu != est.peak_mem_gib_per_gpu:
            out.append(f" ({est.unchecked_layers}/{est.layers} layers unchecked; "
                       f"floor {est.min_peak_mem_gib_per_gpu:.1f})", style="dim")
        out.append(f"\nrows {est.pack_len:,} tokens")
        out.append(f" ({est.pack_len_reason})", style="dim")
    out.append(f"\nhost RAM ~{est.host_ram_gib:.1f} GiB, disk ~{est.disk_gib:.1f} GiB")
    if est.tokens_per_s:
        out.append(f"\n~{est.tokens_per_s:,.0f} tokens/s")
        if est.time_s is not None:
            out.append(f", ~{fmt_duration(est.time_s)} for {est.train_tokens:,.0f} tokens")
        else:
            out.append(" (time: needs max steps or the whole dataset)", style="dim")
    return out


def terms(est: Estimate | None) -> Text:
    """Every term of GPU memory, host RAM and disk, and the speed terms."""
    if est is None or not est.ok:
        return Text("")
    out = Text()
    groups = [("GPU memory per GPU", est.peak_mem_gib_per_gpu, est.gpu_terms, "GiB"),
              ("host RAM", est.host_ram_gib, est.host_terms, "GiB"),
              ("disk", est.disk_gib, est.disk_terms, "GiB")]
    for title, total, parts, unit in groups:
        if not parts:
            continue
        out.append(f"{title}: {total:.1f} {unit}\n", style="bold")
        for name, value in parts.items():
            out.append(f"  {value:7.2f}  {name}\n")
    if est.speed_terms_us:
        out.append("time per token position (µs)\n", style="bold")
        for name, value in est.speed_terms_us.items():
            out.append(f"  {value:7.2f}  {name}\n")
    for note in est.assumptions:
        out.append(f"assumed: {note}\n", style="dim")
    return out
