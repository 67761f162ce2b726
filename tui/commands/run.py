"""`osstune run PRESET|CONFIG.yaml`: start the engine and follow it until it ends.

On a terminal a Rich live panel (step, loss, lr, tokens/s, per-GPU reserved memory, ETA, log
tail); otherwise one plain line per event. Ctrl-C once stops gracefully (the engine finishes the
step and checkpoints), twice kills. Exit 0 only for a completed run. No torch in this process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from osstune.tui import output

if TYPE_CHECKING:
    from osstune.engine.plan.config import RunConfig
    from osstune.engine.session.launch import TrainingProcess

POLL_S = 0.25
LOG_TAIL = 6


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def dataset_lines(stats: dict[str, Any]) -> list[str]:
    """One line per source of a mixed dataset, and the validation split (run_start's stats)."""
    lines = []
    for s in stats.get("sources") or []:
        skipped = sum(s["rows_skipped"].values())
        lines.append(f"  dataset {s['source']} ({s['format']}, weight {s['weight']:g}): "
                     f"{s['examples_used']} examples from {s['rows_read']} rows"
                     + (f", {skipped} skipped" if skipped else ""))
    val = stats.get("validation")
    if val:
        lines.append(f"  validation ({val['source']}): {val['examples']} examples, "
                     f"{val['tokens_trained']:,} trained tokens")
    return lines


def gpu_summary(gpus: list[dict[str, Any]]) -> str:
    return " ".join(f"r{g['rank']}:{g['device_mem_reserved_gib']:.1f}GiB" for g in gpus)


def event_line(event: dict[str, Any]) -> str | None:
    """The plain-text line for one event (None for events that have no line)."""
    kind = event["type"]
    if kind == "run_start":
        model = event["model"]
        return "\n".join([f"run_start: {model.get('id')} ({model.get('init')}), world size "
                          f"{event['world_size']}, {event['total_steps']} steps",
                          *dataset_lines(event["dataset"])])
    if kind == "step":
        return (f"step {event['step']}/{event['total_steps']} loss {event['loss']:.4f} "
                f"lr {event['lr']:.3g} {event['tokens_per_s']:.0f} tok/s "
                f"mem {gpu_summary(event['gpus'])} eta {fmt_duration(event['eta_s'])}")
    if kind == "eval":
        return f"eval step {event['step']}: loss {event['loss']:.4f}"
    if kind == "checkpoint":
        return f"checkpoint step {event['step']}: {event['path']}"
    if kind == "warning":
        return f"warning: {event['message']}"
    if kind == "error":
        return f"error ({event['kind']}): {event['message']}\n  hint: {event['hint']}"
    if kind == "run_end":
        outs = ", ".join(f"{k}={v}" for k, v in event["outputs"].items())
        return f"run_end: {event['status']}" + (f" ({outs})" if outs else "")
    return None


@dataclass
class RunView:
    """What the live panel shows; folded from events."""

    name: str
    step: int = 0
    total: int = 0
    loss: float | None = None
    eval_loss: float | None = None
    lr: float | None = None
    tokens_per_s: float | None = None
    eta_s: float | None = None
    gpus: list[dict[str, Any]] = field(default_factory=list)
    status: str = "starting"
    end: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def apply(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "run_start":
            self.total, self.status = event["total_steps"], "training"
            self.step = event.get("start_step", 0) or 0
        elif kind == "step":
            self.step, self.total = event["step"], event["total_steps"]
            self.loss, self.lr = event["loss"], event["lr"]
            self.tokens_per_s, self.eta_s, self.gpus = (event["tokens_per_s"], event["eta_s"],
                                                        event["gpus"])
        elif kind == "eval":
            self.eval_loss = event["loss"]
        elif kind == "checkpoint":
            self.notes.append(f"checkpoint step {event['step']}")
        elif kind == "warning":
            self.notes.append(f"warning: {event['message']}")
        elif kind == "error":
            self.error = event
        elif kind == "run_end":
            self.end, self.status = event, event["status"]
        self.notes = self.notes[-3:]

    def renderable(self, log_tail: list[str]) -> Any:
        from rich.panel import Panel
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        grid.add_row("status", self.status)
        grid.add_row("step", f"{self.step}/{self.total or '?'}")
        if self.total:
            grid.add_row("", ProgressBar(total=self.total, completed=self.step, width=40))
        grid.add_row("loss", "-" if self.loss is None else f"{self.loss:.4f}")
        if self.eval_loss is not None:
            grid.add_row("eval loss", f"{self.eval_loss:.4f}")
        grid.add_row("lr", "-" if self.lr is None else f"{self.lr:.3g}")
        grid.add_row("tokens/s", "-" if self.tokens_per_s is None else f"{self.tokens_per_s:,.0f}")
        grid.add_row("ETA", fmt_duration(self.eta_s))
        for g in self.gpus:
            grid.add_row(f"rank {g['rank']}", f"{g['device_mem_reserved_gib']:.2f} GiB reserved "
                         f"(peak since last step)")
        for note in self.notes:  # engine text, never Rich markup
            grid.add_row("", Text(note))
        for line in log_tail[-LOG_TAIL:]:
            grid.add_row("log", Text(line, no_wrap=True, overflow="ellipsis"))
        return Panel(grid, title=f"osstune run {self.name}", subtitle="Ctrl-C: stop and save")


def _effective_config(target: str, overrides: list[str], dataset: str | None,
                      output_dir: str | None) -> RunConfig:
    from osstune.engine.plan.config import ConfigError, load_config

    try:
        cfg = load_config(target, overrides)
        if dataset is not None:
            if cfg.datasets:
                output.fail(f"--dataset: {target} mixes {len(cfg.datasets)} datasets "
                            "(datasets:); edit that list instead")
            cfg.dataset.path = dataset
        if output_dir is not None:
            cfg.output.dir = output_dir
    except ConfigError as e:
        output.fail(str(e))
    except ValueError as e:  # pydantic assignment validation
        output.fail(f"{target}: {e}")
    return cfg


def follow(proc: TrainingProcess, view: RunView, live: bool) -> None:
    """Poll events until the process exits; Ctrl-C once stops, twice kills."""
    assert proc.events is not None
    interrupts = 0
    display = None
    if live:
        from rich.live import Live

        display = Live(view.renderable([]), console=output.console(), refresh_per_second=4,
                       transient=False)
        display.start()
    try:
        while True:
            try:
                for event in proc.events.poll():
                    view.apply(event)
                    if not live:
                        line = event_line(event)
                        if line:
                            output.print_line(line)
                if display is not None:
                    display.update(view.renderable(proc.stderr_tail(LOG_TAIL)))
                if proc.poll() is not None:
                    proc.wait()
                    for event in proc.events.poll():
                        view.apply(event)
                        if not live and (line := event_line(event)):
                            output.print_line(line)
                    break
                time.sleep(POLL_S)
            except KeyboardInterrupt:
                interrupts += 1
                if interrupts == 1:
                    view.status = "stopping (finishing the step, then a checkpoint)"
                    output.warn("stopping: the engine finishes this step and saves "
                                "(Ctrl-C again to kill)")
                    proc.stop()
                else:
                    proc.kill()
    finally:
        if display is not None:
            display.update(view.renderable(proc.stderr_tail(LOG_TAIL)))
            display.stop()


def run(
    target: Annotated[str, typer.Argument(metavar="PRESET|CONFIG.yaml",
                                          help="A preset name or a run config file")],
    set_: Annotated[list[str] | None, typer.Option(
        "--set", metavar="KEY=VALUE", help="Override a config key, e.g. --set max_steps=30"),
    ] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Dataset file, folder or hub id")
                       ] = None,
    output_dir: Annotated[str | None, typer.Option("--output", help="Output directory")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint")
                      ] = False,
    force: Annotated[bool, typer.Option("--force", help="Run despite pre-flight refusals")
                     ] = False,
) -> None:
    """Train with a preset or config file and follow it until it ends."""
    from osstune.engine.plan.preflight import PreflightError, preflight
    from osstune.engine.session.launch import (
        TrainingProcess,
        serve_commands,
        serving_tensor_parallel,
    )

    cfg = _effective_config(target, list(set_ or []), dataset, output_dir)
    out = Path(cfg.output.dir)
    try:
        preflight(cfg, out, resume=resume, force=force)
    except PreflightError as e:
        output.fail(str(e), code=output.EXIT_PROBLEM)

    proc = TrainingProcess()
    try:
        proc.start(cfg, out, resume=resume, force=force)
    except OSError as e:
        output.fail(f"cannot start the engine: {e}", code=output.EXIT_PROBLEM)
    view = RunView(name=cfg.name)
    live = output.is_terminal()
    if not live:
        output.print_line(f"osstune run {cfg.name}: output {out}")
    follow(proc, view, live)

    code = proc.poll()
    if view.end is not None and view.end["status"] == "completed" and code == 0:
        served = view.end["outputs"].get("export")
        if served:
            output.print_line("Serve it:")
            for line in serve_commands(served, serving_tensor_parallel(cfg)):
                output.print_line(f"  {line}")
        adapter = view.end["outputs"].get("adapter")
        if adapter:
            output.print_line(f"Adapter: {adapter} (merge: osstune merge-lora {out})")
        return
    if view.end is not None and view.end["status"] == "stopped":
        output.fail(f"run stopped at step {view.step}/{view.total}; continue with "
                    f"`osstune run {target} --resume` (same --set/--output)",
                    code=output.EXIT_PROBLEM)
    if view.error is not None:
        output.fail(f"{view.error['message']} (hint: {view.error['hint']})",
                    code=output.EXIT_PROBLEM)
    tail = "\n".join(proc.stderr_tail(15))
    output.fail(f"the engine exited with code {code} before finishing" +
                (f"; its last lines:\n{tail}" if tail else ""), code=output.EXIT_PROBLEM)
