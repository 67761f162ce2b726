"""Screen 4: the effective config as YAML, key settings editable, the command that repeats it.

Every edit becomes a `--set` override on the plan and the whole config is validated again through
`engine.plan.config` (the same code `osstune run` uses), so an error here is exactly the error the
run
would give, shown next to the field instead of after a launch. Each valid edit is also estimated
again (engine/plan/estimate.py, well under 50 ms): the verdict, the memory bar against the card,
host RAM, disk, tokens/s and the time for the dataset; `ctrl+e` shows the terms instead of the YAML.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rich.syntax import Syntax
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Header, Input, Label, Static

from osstune.engine.plan.config import ConfigError, RunConfig, dump_config, load_preset
from osstune.tui.render.wrap import SoftWrap
from osstune.tui.screens.base import WizardScreen, wizard_footer
from osstune.tui.screens.plan import yaml_text
from osstune.tui.widgets.estimate_view import card_gib, summary, terms

# (dotted key, label, lora only)
FIELDS: list[tuple[str, str, bool]] = [
    ("training.learning_rate", "learning rate", False),
    ("training.num_epochs", "epochs", False),
    ("training.max_steps", "max steps", False),
    ("training.sequence_len", "sequence len", False),
    ("training.pack_len", "pack len", False),
    ("training.micro_batch_size", "micro batch", False),
    ("training.gradient_accumulation_steps", "grad accum", False),
    ("distributed.gpus", "GPUs", False),
    ("lora.r", "LoRA r", True),
    ("lora.alpha", "LoRA alpha", True),
    ("output.dir", "output dir", False),
]
_ERROR_KEY = re.compile(
    r"((?:model|method|lora|distributed|training|dataset|output|name)"
    r"[\w.]*): (.*)$"
)


def yaml_view(text: str) -> SoftWrap:
    """The config highlighted and wrapped to the pane: every line whole, continuations indented
    under their key (no line is cut at the pane's edge)."""
    syntax = Syntax(text, "yaml", theme="ansi_dark", background_color="default")
    return SoftWrap(syntax.highlight(text.rstrip("\n")), hang=True)


def field_value(cfg: RunConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def field_text(value: Any) -> str:
    return "" if value is None else str(value)


def error_lines(message: str) -> list[tuple[str | None, str]]:
    """ConfigError text -> (dotted key or None, 'key: what is wrong') per line, source dropped."""
    out = []
    for line in message.splitlines():
        match = _ERROR_KEY.search(line)
        out.append(
            (match.group(1), f"{match.group(1)}: {match.group(2)}") if match else (None, line)
        )
    return out


class ReviewScreen(WizardScreen):
    BINDINGS = [
        Binding("ctrl+n", "start", "Start training", priority=True),
        Binding("ctrl+s", "save", "Save", priority=True),
        Binding("ctrl+e", "toggle_terms", "Terms/YAML", priority=True),
        Binding("escape", "app.pop_screen", "Back"),
    ]

    valid = False
    show_terms = False
    current_estimate = None

    def compose(self) -> ComposeResult:
        self.base = load_preset(str(self.plan.preset))
        current = self._config_or_base()
        yield Header()
        yield Static("Review", classes="screen-title")
        with Horizontal(id="review-main"):
            with VerticalScroll(id="review-form"):
                for key, label, lora_only in FIELDS:
                    if lora_only and current.method != "lora":
                        continue
                    with Horizontal(classes="field"):
                        yield Label(label, classes="field-label")
                        yield Input(
                            field_text(field_value(current, key)),
                            name=key,
                            id=f"f-{key.replace('.', '-')}",
                            compact=True,
                        )
                with Horizontal(classes="field"):
                    yield Label("save as", classes="field-label")
                    yield Input("", placeholder=str(self.default_save_path(current)),
                                id="save-path", compact=True)
                yield Static(id="review-errors", classes="error")
                yield Static(id="review-estimate")
            with VerticalScroll(id="review-yaml-scroll"):
                yield Static(id="review-yaml")
        yield Static(id="review-command", classes="summary")
        yield wizard_footer()

    def default_save_path(self, cfg: RunConfig) -> Path:
        """Saved next to the run's outputs unless a path is typed (follows output.dir edits)."""
        return Path(cfg.output.dir) / f"{self.plan.preset}-run.yaml"

    def _config_or_base(self) -> RunConfig:
        try:
            return self.plan.config()
        except ConfigError:
            return self.base

    def on_mount(self) -> None:
        self.validate()

    def on_input_changed(self, event: Input.Changed) -> None:
        key = event.input.name
        if not key:
            return
        text = event.value.strip()
        if text == field_text(field_value(self.base, key)):
            self.plan.set_override(key, None)
        elif key == "output.dir":
            self.plan.set_override(key, yaml_text(text))
        else:
            self.plan.set_override(key, text or "null")
        self.validate()

    def validate(self) -> RunConfig | None:
        errors = self.query_one("#review-errors", Static)
        for field in self.query(Input):
            field.remove_class("-invalid")
        try:
            cfg = self.plan.config()
        except ConfigError as e:
            lines = error_lines(str(e))
            for key, _ in lines:
                if key is not None:
                    for field in self.query(Input):
                        if field.name == key:
                            field.add_class("-invalid")
            errors.update(Text("\n".join(text for _, text in lines)))
            self.query_one("#review-estimate", Static).update(
                Text("estimate: after the errors are fixed", style="dim"))
            self.query_one("#review-command", Static).update(
                Text("fix the errors in the form", "yellow")
            )
            self.valid = False
            self.refresh_bindings()
            return None
        errors.update("")
        self.query_one("#save-path", Input).placeholder = str(self.default_save_path(cfg))
        self._estimate(cfg)
        self._show_right(cfg)
        self.query_one("#review-command", Static).update(
            Text.assemble(("repeat with: ", "dim"), ("$ " + self.plan.command(), "bold"))
        )
        self.valid = True
        self.refresh_bindings()
        return cfg

    def _estimate(self, cfg: RunConfig) -> None:
        """Judge the edited config on this machine (the same estimate as `osstune plan`)."""
        from osstune.engine.plan.estimate import estimate
        from osstune.engine.plan.recommend import judge

        profile, facts = self.plan.profile, self.plan.dataset_facts
        if profile is None:
            self.current_estimate, verdict = estimate(cfg, None, dataset=facts), None
        else:
            judged = judge(cfg, profile, facts)
            self.current_estimate, verdict = judged.estimate, judged.verdict
        gpus = self.current_estimate.gpus if self.current_estimate is not None else 0
        self.query_one("#review-estimate", Static).update(
            summary(self.current_estimate, verdict, card_gib(profile, gpus)))

    def _show_right(self, cfg: RunConfig) -> None:
        target = self.query_one("#review-yaml", Static)
        if self.show_terms:
            target.update(terms(self.current_estimate))
        else:
            target.update(yaml_view(dump_config(cfg)))

    def action_toggle_terms(self) -> None:
        self.show_terms = not self.show_terms
        self.validate()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("start", "save"):
            return self.valid
        return True

    def action_save(self) -> None:
        cfg = self.validate()
        if cfg is None:
            return
        typed = self.query_one("#save-path", Input).value.strip()
        path = Path(typed) if typed else self.default_save_path(cfg)
        text = dump_config(cfg)
        if path.exists() and path.read_text(encoding="utf-8") != text:
            self.notify(f"{path} exists and differs: choose another name", severity="error")
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except OSError as e:
            self.notify(f"cannot write {path}: {e.strerror or e}", severity="error")
            return
        self.plan.saved_config = str(path)
        self.notify(f"saved {path}")
        self.validate()

    def action_start(self) -> None:
        cfg = self.validate()
        if cfg is None:
            return
        self.wizard.remember(
            preset=self.plan.preset, dataset=cfg.dataset.path, output_dir=cfg.output.dir
        )
        self.advance(cfg)
