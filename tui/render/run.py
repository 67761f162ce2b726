"""A run's figures as text: the plain line per event, the Rich live panel, the wizard's stats line.

All of them read a `RunSnapshot` (engine/session/fold.py) or one typed event, so `osstune run` and
the wizard show the same numbers formatted the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from osstune.engine.plan.units import fmt_clock, plural
from osstune.engine.session import events as ev
from osstune.engine.session.fold import error_note

if TYPE_CHECKING:
    from rich.text import Text

    from osstune.engine.session.fold import GpuMemory, RunSnapshot

LOG_TAIL = 6
NOTES_SHOWN = 3


def fmt_loss(loss: float | None) -> str:
    return "-" if loss is None else f"{loss:.4f}"


def fmt_lr(lr: float | None) -> str:
    return "-" if lr is None else f"{lr:.3g}"


def fmt_tokens_per_s(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:,.0f}"


def gpu_summary(gpus: list[ev.StepGpu]) -> str | None:
    """'r0:41.9GiB r1:26.5GiB'; None for a CPU run, whose ranks report no device memory (every
    figure 0, engine/trainer/metrics.py)."""
    if not any(g.device_mem_reserved_gib or g.mem_allocated_gib or g.mem_active_gib for g in gpus):
        return None
    return " ".join(f"r{g.rank}:{g.device_mem_reserved_gib:.1f}GiB" for g in gpus)


def skipped_rows_line(stats: dict[str, Any]) -> str | None:
    """'data.jsonl: 3 of 40 rows skipped (unknown role: 2, ...); first: row 7: ...' from a
    dataset's statistics (`DatasetStats.as_dict()`, run_start's `dataset`), None when none was
    skipped. Rows count from 1, like lines; the samples name the file for a folder or a mix."""
    by_reason: dict[str, int] = stats.get("rows_skipped") or {}
    skipped = sum(by_reason.values())
    if not skipped:
        return None
    reasons = skip_reasons(by_reason)
    samples = stats.get("skip_samples") or []
    first = f"; first (rows count from 1): {samples[0]}" if samples else ""
    source = f"{stats['source']}: " if stats.get("source") and not stats.get("sources") else ""
    return (f"{source}{skipped:,} of {plural(stats.get('rows_read', 0), 'row')} skipped "
            f"({reasons}){first}")


def dataset_lines(stats: dict[str, Any]) -> list[str]:
    """One line per source of a mixed dataset, and the validation split (run_start's stats)."""
    lines = []
    for s in stats.get("sources") or []:
        skipped = sum(s["rows_skipped"].values())
        lines.append(f"  dataset {s['source']} ({s['format']}, weight {s['weight']:g}): "
                     f"{plural(s['examples_used'], 'example')} from "
                     f"{plural(s['rows_read'], 'row')}"
                     + (f", {skipped:,} skipped" if skipped else ""))
    val = stats.get("validation")
    if val:
        lines.append(f"  validation ({val['source']}): {plural(val['examples'], 'example')}, "
                     f"{plural(val['tokens_trained'], 'trained token')}")
    return lines


def pack_len_lines(pack_len: dict[str, Any] | None) -> list[str]:
    """run_start's packed row length and why (engine/plan/packlen.py), when the engine says."""
    return [f"  rows: pack_len {pack_len['detail']}"] if pack_len else []


def event_line(event: ev.AnyEvent) -> str | None:
    """The plain-text line for one event (None for events that have no line)."""
    if isinstance(event, ev.RunStart):
        skipped = skipped_rows_line(event.dataset)
        return "\n".join([f"run_start: {event.model.get('id')} ({event.model.get('init')}), "
                          f"world size {event.world_size}, {plural(event.total_steps, 'step')}",
                          *pack_len_lines(event.pack_len), *dataset_lines(event.dataset),
                          *([f"  {skipped}"] if skipped else [])])
    if isinstance(event, ev.Eval):
        return f"eval step {event.step}: loss {event.loss:.4f}"
    if isinstance(event, ev.Step):
        mem = gpu_summary(event.gpus)
        return (f"step {event.step}/{event.total_steps} loss {event.loss:.4f} "
                f"lr {event.lr:.3g} {event.tokens_per_s:.0f} tok/s "
                + (f"mem {mem} " if mem else "") + f"eta {fmt_clock(event.eta_s)}")
    if isinstance(event, ev.Checkpoint):
        return f"checkpoint step {event.step}: {event.path}"
    if isinstance(event, ev.WarningEvent):
        return f"warning: {event.message}"
    if isinstance(event, ev.ErrorEvent):
        return f"error ({event.kind}): {event.message}\n  hint: {event.hint}"
    if isinstance(event, ev.RunEnd):
        outs = ", ".join(f"{k}={v}" for k, v in event.outputs.items())
        return f"run_end: {event.status}" + (f" ({outs})" if outs else "")
    return None


def run_panel(name: str, snap: RunSnapshot, log_tail: int = LOG_TAIL) -> Any:
    """The live panel of `osstune run`."""
    from rich.panel import Panel
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("status", snap.status)
    grid.add_row("step", f"{snap.step}/{snap.total_steps or '?'}")
    if snap.total_steps:
        grid.add_row("", ProgressBar(total=snap.total_steps, completed=snap.step, width=40))
    grid.add_row("loss", fmt_loss(snap.loss))
    if snap.eval_loss is not None:
        grid.add_row("eval loss", fmt_loss(snap.eval_loss))
    grid.add_row("lr", fmt_lr(snap.lr))
    grid.add_row("tokens/s", fmt_tokens_per_s(snap.tokens_per_s))
    grid.add_row("ETA", fmt_clock(snap.eta_s))
    if snap.pack_len:
        grid.add_row("rows", Text(snap.pack_len))
    for g in snap.gpus:
        grid.add_row(f"rank {g.rank}", gpu_memory_text(g))
    if snap.dataset and (skipped := skipped_rows_line(snap.dataset)):
        grid.add_row("data", Text(skipped))  # file text, never Rich markup
    for note in notes_to_show(snap):  # never Rich markup
        grid.add_row("", Text(note))
    for line in snap.log_lines[-log_tail:]:
        grid.add_row("log", Text(line, no_wrap=True, overflow="ellipsis"))
    return Panel(grid, title=f"osstune run {name}", subtitle=panel_hint(snap))


def gpu_memory_status(gpu: GpuMemory) -> str | None:
    """Why a rank has no memory figure yet (CPU rank: run_start says 0 GiB of device memory; a
    GPU before its first step), None once there is one. The panel and the wizard both say it."""
    if gpu.total_gib == 0:
        return "no device memory (CPU)"
    if gpu.reserved_gib is None:
        return "GPU: waiting for the first step"
    return None


def gpu_memory_text(gpu: GpuMemory) -> str:
    """One rank's memory for the Rich panel."""
    return gpu_memory_status(gpu) or f"{gpu.reserved_gib:.2f} GiB reserved (peak since last step)"


def skip_reasons(rows_skipped: dict[str, int]) -> str:
    """'unknown role: 2, empty: 1': skipped rows by reason."""
    return ", ".join(f"{reason}: {n:,}" for reason, n in rows_skipped.items())


def notes_to_show(snap: RunSnapshot, count: int = NOTES_SHOWN) -> list[str]:
    """The latest notes (checkpoints, warnings, the end), without the error's own note: the error
    is shown once, by itself (`osstune run`'s final report, the wizard's error box)."""
    error = error_note(snap.error) if snap.error is not None else None
    return [n for n in snap.notes if n != error][-count:]


STOP_HINT = "Ctrl-C: stop and save"
STOPPING_HINT = "stopping: the engine finishes this step and saves (Ctrl-C again to kill)"


def panel_hint(snap: RunSnapshot) -> str | None:
    """What Ctrl-C does now: stop, or kill once a stop was asked; nothing once the run is over."""
    if snap.finished or snap.end is not None:
        return None
    return STOPPING_HINT if snap.status == "stopping" else STOP_HINT


def stats_line(snap: RunSnapshot) -> Text:
    """The wizard's one-line figures, formatted as the panel formats them."""
    from rich.text import Text

    total = snap.total_steps if snap.total_steps is not None else "?"
    parts: list[Any] = [("step ", "dim"), (f"{snap.step}/{total}", "bold")]
    if snap.loss is not None:
        parts += [("  loss ", "dim"), (fmt_loss(snap.loss), "bold cyan")]
    if snap.lr is not None:
        parts += [("  lr ", "dim"), fmt_lr(snap.lr)]
    if snap.tokens_per_s is not None:
        parts += [("  tok/s ", "dim"), fmt_tokens_per_s(snap.tokens_per_s)]
    if snap.epoch is not None:
        parts += [("  epoch ", "dim"), f"{snap.epoch:.2f}"]
    parts += [("  elapsed ", "dim"), fmt_clock(snap.elapsed_s),
              ("  ETA ", "dim"), fmt_clock(snap.eta_s)]
    return Text.assemble(*parts)


def serve_hint_lines(outputs: dict[str, str], served_tp: int, output_dir: str) -> list[str]:
    """What to do with a completed run's outputs: the one place serve hints are written."""
    from osstune.engine.session.launch import serve_commands

    lines: list[str] = []
    served = outputs.get("export")
    if served:
        lines.append("Serve it:")
        lines += [f"  {line}" for line in serve_commands(served, served_tp)]
    adapter = outputs.get("adapter")
    if adapter:
        lines.append(f"Adapter: {adapter} (merge: osstune merge-lora {output_dir})")
    return lines
