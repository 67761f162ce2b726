"""Screen 3: the dataset, its field mapping and render options, and a masked-token preview.

Loading (tokenizer + dataset pipeline, which import transformers) runs in a thread worker; the
screen stays responsive and a failure shows in place of the preview.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Header, Input, Label, Select, Static

from osstune.engine.plan.config import ConfigError, RunConfig, load_preset
from osstune.tui.screens.base import WizardScreen, describe_error, wizard_footer
from osstune.tui.screens.plan import yaml_text
from osstune.tui.widgets.token_preview import TokenPreview, legend

if TYPE_CHECKING:
    from osstune.engine.data.dataset import DatasetStats
    from osstune.engine.data.harmony import Example
    from osstune.engine.plan.packlen import PackLen

EXAMPLES = Binding.Group("Example")
PREVIEW_MAX_ROWS = 20_000  # the preview reads at most this many rows of a large dataset

TEXT_FIELDS: list[tuple[str, str]] = [  # (dotted key, label)
    ("dataset.path", "path or hub id"),
    ("dataset.field_messages", "messages"),
    ("dataset.message_property_mappings.role", "role key"),
    ("dataset.message_property_mappings.content", "content key"),
    ("dataset.field_thinking", "thinking"),
    ("dataset.field_tools", "tools"),
]
CHOICES: list[tuple[str, str, tuple[str, ...]]] = [
    ("dataset.format", "format", ("auto", "messages", "sharegpt")),
    ("dataset.reasoning_effort", "reasoning", ("low", "medium", "high")),
    ("dataset.train_turns", "train turns", ("all", "last", "expand")),
]


@dataclass
class Preview:
    tokenizer: Any
    examples: list[Example]
    stats: DatasetStats
    sequence_len: int
    capped: bool
    pack: PackLen | None = None  # the row length the run would pack at (pack_len: auto resolved)


def dataset_value(cfg: RunConfig, key: str) -> str:
    parts = key.split(".")[1:]
    node: Any = cfg.dataset
    for part in parts:
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return "" if node is None else str(node)


def summary_text(stats: DatasetStats, sequence_len: int, capped: bool,
                 pack: PackLen | None = None) -> Text:
    """The summary `osstune inspect` prints, so both views of a dataset read the same."""
    from osstune.tui.commands.inspect import summary_lines

    lines = summary_lines(stats, sequence_len, pack)
    if capped:
        lines.insert(1, f"(preview: the first {PREVIEW_MAX_ROWS:,} rows)")
    return Text("\n".join(lines))


class DatasetScreen(WizardScreen):
    BINDINGS = [
        Binding("ctrl+n", "next", "Next: review", priority=True),
        Binding("ctrl+r", "load", "Reload", priority=True),
        Binding("pageup", "move(-1)", "Example", priority=True, group=EXAMPLES),
        Binding("pagedown", "move(1)", "Example", priority=True, group=EXAMPLES),
        Binding("ctrl+g", "jump", "Jump", priority=True),
        Binding("ctrl+t", "toggle_ids", "Ids", priority=True),
        Binding("escape", "app.pop_screen", "Back"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.preview: Preview | None = None
        self.index = 0
        self.show_ids = False

    def compose(self) -> ComposeResult:
        self.base = load_preset(str(self.plan.preset))
        remembered = self.wizard.settings.dataset
        if (
            remembered
            and "dataset.path" not in self.plan.overrides
            and remembered != self.base.dataset.path
        ):
            self.plan.set_override("dataset.path", yaml_text(remembered))
        cfg = self._config() or self.base
        yield Header()
        yield Static("Dataset", classes="screen-title")
        with Horizontal(id="dataset-main"):
            with Vertical(id="dataset-form"):
                for key, label in TEXT_FIELDS:
                    with Horizontal(classes="field"):
                        yield Label(label, classes="field-label")
                        yield Input(
                            dataset_value(cfg, key),
                            name=key,
                            compact=True,
                            id="f-" + key.replace(".", "-"),
                        )
                for key, label, options in CHOICES:
                    with Horizontal(classes="field"):
                        yield Label(label, classes="field-label")
                        yield Select(
                            [(o, o) for o in options],
                            value=dataset_value(cfg, key),
                            allow_blank=False,
                            compact=True,
                            name=key,
                            id="f-" + key.replace(".", "-"),
                        )
                with Horizontal(classes="field"):
                    yield Label("example #", classes="field-label")
                    yield Input(
                        "", placeholder="index, enter", id="jump", compact=True, type="integer"
                    )
                yield Static(id="dataset-summary")
            with Vertical(id="dataset-preview-pane"):
                yield Static(id="example-header")
                with VerticalScroll(id="preview-scroll"):
                    yield TokenPreview(id="token-preview")
                yield Static(legend(), id="legend")
        yield wizard_footer()

    def on_mount(self) -> None:
        self.action_load()

    def _config(self) -> RunConfig | None:
        try:
            return self.plan.config()
        except ConfigError:
            return None

    # -- edits become overrides -------------------------------------------------------------
    def _set_field(self, key: str, text: str) -> None:
        if key.startswith("dataset.message_property_mappings."):
            current = dict(self.base.dataset.message_property_mappings)
            for field in self.query(Input):
                if field.name and field.name.startswith("dataset.message_property_mappings."):
                    current[field.name.rsplit(".", 1)[1]] = field.value.strip()
            same = current == self.base.dataset.message_property_mappings
            self.plan.set_override(
                "dataset.message_property_mappings", None if same else yaml_text(current)
            )
            return
        same = text == dataset_value(self.base, key)
        self.plan.set_override(key, None if same else yaml_text(text))

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.name:
            self._set_field(event.input.name, event.value.strip())

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "jump":
            if event.value.strip():
                self._show(int(event.value) - 1)
        else:
            self.action_load()

    def on_select_changed(self, event: Select.Changed) -> None:
        key = event.select.name
        if (
            key
            and isinstance(event.value, str)
            and event.value != dataset_value(self._config() or self.base, key)
        ):
            self._set_field(key, event.value)
            self.action_load()

    # -- loading ---------------------------------------------------------------------------
    def action_load(self) -> None:
        try:
            cfg = self.plan.config()
        except ConfigError as e:
            self._show_problem(str(e))
            return
        self.query_one("#example-header", Static).update(
            Text(f"loading {cfg.dataset.path} …", style="italic")
        )
        self.load_preview(cfg)

    @work(thread=True, exclusive=True, group="dataset", exit_on_error=False)
    def load_preview(self, cfg: RunConfig) -> Preview:
        from osstune.engine.data.dataset import prepare_dataset
        from osstune.engine.data.tokenizer import load_tokenizer

        capped = cfg.dataset.max_rows is None or cfg.dataset.max_rows > PREVIEW_MAX_ROWS
        # One process: forking worker processes out of a threaded UI process is not safe.
        update: dict[str, Any] = {"num_proc": 1}
        if capped:
            update["max_rows"] = PREVIEW_MAX_ROWS
        cfg = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update=update)})
        tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.id)
        prepared = prepare_dataset(cfg, tokenizer)
        capped = capped and prepared.stats.rows_read >= PREVIEW_MAX_ROWS
        return Preview(tokenizer, prepared.examples, prepared.stats, cfg.training.sequence_len,
                       capped, self._pack_len(cfg, prepared, capped))

    def _pack_len(self, cfg: RunConfig, prepared: Any, capped: bool) -> PackLen:
        """As `osstune inspect`: the row length for this machine, packing redone at it."""
        from osstune.engine.data.dataset_mix import pack_stats
        from osstune.engine.plan.estimate import DatasetFacts, pack_len_on

        stats, t = prepared.stats, cfg.training
        facts = DatasetFacts(None if capped else stats.tokens_total, stats.examples)
        pack = pack_len_on(cfg, self.plan.profile, facts)
        if cfg.dataset.packing and pack.length != t.sequence_len:
            pack_stats(stats, prepared.examples, pack.length, t.seed)
        return pack

    def worker_done_dataset(self, preview: Preview) -> None:
        from osstune.engine.plan.estimate import DatasetFacts

        self.preview = preview
        stats = preview.stats
        self.plan.dataset_facts = DatasetFacts(  # Review's time estimate
            None if preview.capped else stats.tokens_total, stats.examples,
            stats.packing_efficiency, mean_example_tokens=stats.tokens_total / stats.examples
            if stats.examples else None)
        self.query_one("#dataset-summary", Static).update(
            summary_text(preview.stats, preview.sequence_len, preview.capped, preview.pack)
        )
        self._show(0)

    def worker_failed(self, group: str, error: BaseException | None) -> None:
        self._show_problem(describe_error(error))

    def _show_problem(self, message: str) -> None:
        self.preview = None
        self.query_one("#example-header", Static).update(
            Text.assemble(("cannot load the dataset: ", "bold red"), message)
        )
        self.query_one(TokenPreview).update("")
        self.query_one("#dataset-summary", Static).update("")

    # -- browsing --------------------------------------------------------------------------
    def _show(self, index: int) -> None:
        if self.preview is None or not self.preview.examples:
            return
        from osstune.engine.data.token_view import token_view

        examples = self.preview.examples
        self.index = min(max(index, 0), len(examples) - 1)
        example = examples[self.index]
        tokens = token_view(self.preview.tokenizer, example)
        trained = sum(t.trained for t in tokens)
        turn = f" · turn {example.turn}" if example.turn is not None else ""
        self.query_one("#example-header", Static).update(
            Text.assemble(
                (f"example {self.index + 1}/{len(examples)}", "bold"),
                f" · row {example.row}{turn} · {len(tokens)} tokens · {trained} trained "
                f"({trained / max(len(tokens), 1):.0%})",
            )
        )
        self.query_one(TokenPreview).show(tokens, self.show_ids)
        self.query_one("#preview-scroll", VerticalScroll).scroll_home(animate=False)

    def action_move(self, delta: int) -> None:
        self._show(self.index + delta)

    def action_jump(self) -> None:
        self.query_one("#jump", Input).focus()

    def action_toggle_ids(self) -> None:
        self.show_ids = not self.show_ids
        self._show(self.index)

    def action_next(self) -> None:
        if self._config() is None:
            self.notify("fix the dataset settings first", severity="error")
            return
        self.advance()
