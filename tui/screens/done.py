"""Screen 6: where the outputs are and the commands that merge and serve them."""

from __future__ import annotations

import shlex
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Header, Static

from osstune.engine.plan.config import RunConfig
from osstune.tui.screens.base import WizardScreen, wizard_footer


def chat_command(cfg: RunConfig) -> str:
    return shlex.join(["osstune", "chat", cfg.output.dir])


def next_commands(cfg: RunConfig, outputs: dict[str, str]) -> list[tuple[str, str]]:
    """(what it does, command) pairs for the finished run."""
    from osstune.engine.session.launch import serve_commands, serving_tensor_parallel

    out = cfg.output.dir
    steps: list[tuple[str, str]] = []
    if cfg.method == "lora":
        steps.append(
            ("merge the adapter into full weights", shlex.join(["osstune", "merge-lora", out]))
        )
        model = outputs.get("merged") or str(Path(out) / "merged")
    else:
        if cfg.distributed.fsdp and "merged" not in outputs:
            steps.append(
                (
                    "merge the sharded checkpoint (if the automatic merge did not run)",
                    shlex.join(["osstune", "merge-sharded-fsdp-weights", out]),
                )
            )
        model = outputs.get("merged") or outputs.get("export") or outputs.get("model") or out
    steps.append(("chat with it (c)", chat_command(cfg)))
    for command in serve_commands(model, serving_tensor_parallel(cfg)):
        steps.append((f"serve with {'vLLM' if command.startswith('vllm') else 'SGLang'}", command))
    return steps


class DoneScreen(WizardScreen):
    BINDINGS = [
        Binding("c", "chat", "Chat with it"),
        Binding("n", "new_run", "New run"),
        Binding("escape", "app.pop_screen", "Back"),
    ]

    def __init__(self, config: RunConfig) -> None:
        super().__init__()
        self.config = config

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Done", classes="screen-title")
        with VerticalScroll(id="done-scroll"):
            yield Static(self._body(), id="done-body")
        yield wizard_footer()

    def _body(self) -> Text:
        end = self.plan.run_end
        status = end.status if end is not None else "unknown"
        outputs: dict[str, str] = dict(end.outputs) if end is not None else {}
        parts: list[Text] = [
            Text.assemble(
                ("Run ", "bold"),
                (status, "bold green" if status == "completed" else "bold yellow"),
                " — output directory ",
                (self.config.output.dir, "bold"),
            ),
            Text(""),
            Text("Outputs", style="bold"),
        ]
        parts += [Text(f"  {name:<12} {path}") for name, path in sorted(outputs.items())] or [
            Text("  (the engine reported none)", style="dim")
        ]
        parts += [Text(""), Text("Next", style="bold")]
        for what, command in next_commands(self.config, outputs):
            parts += [Text(f"  {what}", style="dim"), Text(f"  $ {command}")]
        parts += [
            Text(""),
            Text("Repeat this run", style="bold"),
            Text(f"  $ {self.plan.command()}"),
        ]
        return Text("\n").join(parts)

    def action_chat(self) -> None:
        """Leave the screen to `osstune chat` in this terminal; come back when it ends."""
        import subprocess
        import sys

        from textual.app import SuspendNotSupported

        argv = [sys.executable, "-m", "osstune.tui.cli", "chat", self.config.output.dir]
        try:
            with self.app.suspend():
                subprocess.call(argv)
        except SuspendNotSupported:
            self.notify(f"run in a terminal: {chat_command(self.config)}", timeout=15)

    def action_new_run(self) -> None:
        self.advance()  # after the last screen the wizard starts from the top
