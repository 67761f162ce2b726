"""Screen 2: every preset with its verdict and the reasons in numbers; the recommended one first."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Header, Static

from osstune.engine.plan.config import ConfigError, RunConfig, load_preset
from osstune.tui.render.verdict import verdict_style
from osstune.tui.screens.base import NARROW_WIDTH, WizardScreen, wizard_footer
from osstune.tui.screens.plan import yaml_text
from osstune.tui.widgets.estimate_view import card_gib, memory_bar, summary, terms


def _gib(value: float) -> str:
    from osstune.engine.plan.units import fmt_gib

    return fmt_gib(value)


def trains_line(cfg: RunConfig) -> str:
    if cfg.method == "lora":
        targets = ", ".join(cfg.lora.target_modules + cfg.lora.target_parameters)
        what = f"LoRA r={cfg.lora.r} alpha={cfg.lora.alpha} on {targets}"
    else:
        what = "full fine-tune (every weight)"
    dist = cfg.distributed
    where = "CPU" if dist.gpus == 0 else f"{dist.world_size} GPU(s)"
    if dist.fsdp:
        where += ", FSDP2" + (" + CPU offload" if dist.cpu_offload else "")
    init = " (random init)" if cfg.model.init == "random" else ""
    return f"{cfg.model.id}{init}: {what}; {where}"


def details(cfg: RunConfig | None, verdict, card: float | None = None  # noqa: ANN001
            ) -> Group:
    style = verdict_style(verdict.verdict)
    parts: list[Text] = [
        Text.assemble(
            (verdict.name, "bold"),
            "  ",
            (verdict.verdict, f"bold {style}"),
            ("  ★ recommended" if verdict.recommended else "", "bold cyan"),
        ),
        Text(verdict.description or (cfg.description if cfg else "")),
    ]
    if cfg is not None:
        parts.append(Text.assemble(("trains: ", "bold"), trains_line(cfg)))
    req = verdict.requirements or (cfg.requirements if cfg else None)
    if req is not None:
        mem = f"~{_gib(req.peak_mem_gib_per_gpu)} per GPU" if req.gpus else "no GPU"
        others = ", ".join(
            f"{n} GPUs: ~{_gib(v)}" for n, v in sorted(req.peak_mem_gib_by_gpus.items())
        )
        if others:
            mem += f" ({others})"
        parts += [
            Text.assemble(
                ("expected memory: ", "bold"),
                mem,
                f"; card ≥ {_gib(req.min_gpu_mem_gib)}" if req.gpus else "",
            ),
            Text.assemble(
                ("host RAM: ", "bold"),
                _gib(req.host_ram_gib),
                ("   disk needed: ", "bold"),
                _gib(req.disk_gib),
            ),
            Text.assemble(
                ("figures: ", "bold"), req.source or "?", " (estimate)" if req.estimate else ""
            ),
        ]
    if verdict.reasons:
        parts.append(Text("why:", style="bold"))
        parts += [Text(f"  • {reason}") for reason in verdict.reasons]
    est = getattr(verdict, "estimate", None)
    if est is not None:
        parts += [summary(est, verdict.verdict, card), terms(est)]
    return Group(*parts)


class PresetScreen(WizardScreen):
    BINDINGS = [
        Binding("enter", "choose", "Choose", priority=True),
        Binding("escape", "app.pop_screen", "Back"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Preset", classes="screen-title")
        yield DataTable(id="presets", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="preset-details-scroll"):
            yield Static(id="preset-details")
        yield wizard_footer()

    def on_mount(self) -> None:
        rec = self.plan.recommendation
        assert rec is not None, "the hardware screen sets the recommendation first"
        self.configs: dict[str, RunConfig | None] = {}
        for v in rec.verdicts:
            try:
                self.configs[v.name] = load_preset(v.name)
            except ConfigError:
                self.configs[v.name] = None  # the verdict's reasons already say what is wrong
        names = [v.name for v in rec.verdicts]
        preferred = self.plan.preset or self._remembered_if_it_fits() or rec.recommended
        self._fill_table(names.index(preferred) if preferred in names else 0)
        self._show(names[self.query_one(DataTable).cursor_row] if names else None)
        self.query_one(DataTable).focus()

    def _fill_table(self, row: int) -> None:
        """One row per preset; below 100 columns the memory bar gives way to its figures, so
        every column fits an 80-column terminal."""
        rec = self.plan.recommendation
        table = self.query_one(DataTable)
        self._narrow = self.app.size.width < NARROW_WIDTH
        table.clear(columns=True)
        table.add_columns("", "preset", "verdict", "GPUs",
                          "mem/GPU" if self._narrow else "memory / GPU vs card", "disk")
        for v in rec.verdicts if rec else []:
            req = v.requirements
            table.add_row(
                Text("★", style="bold cyan") if v.recommended else "",
                Text(v.name, style="bold" if v.recommended else ""),
                Text(v.verdict, style=verdict_style(v.verdict)),
                str(req.gpus) if req else "?",
                memory_bar(v.estimate, self._card(v), width=0 if self._narrow else 12),
                _gib(req.disk_gib) if req else "?",
                key=v.name,
            )
        table.move_cursor(row=row)

    def on_resize(self) -> None:
        if (self.app.size.width < NARROW_WIDTH) != getattr(self, "_narrow", None):
            self._fill_table(self.query_one(DataTable).cursor_row)

    def _card(self, verdict) -> float | None:  # noqa: ANN001 - PresetVerdict
        est = verdict.estimate
        return card_gib(self.plan.profile, est.gpus) if est is not None and est.ok else None

    def _remembered_if_it_fits(self) -> str | None:
        """The preset last chosen on this machine (not on another one) if it still fits."""
        profile, rec = self.plan.profile, self.plan.recommendation
        name = self.wizard.settings.preset_for(profile) if profile is not None else None
        fits = rec is not None and any(
            v.name == name and v.verdict != "does-not-fit" for v in rec.verdicts
        )
        return name if fits else None

    def _show(self, name: str | None) -> None:
        rec = self.plan.recommendation
        verdict = next((v for v in rec.verdicts if v.name == name), None) if rec else None
        target = self.query_one("#preset-details", Static)
        target.update(details(self.configs.get(name), verdict, self._card(verdict))
                      if verdict else "no presets")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show(event.row_key.value)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self._choose(event.row_key.value)

    def action_choose(self) -> None:
        table = self.query_one(DataTable)
        if table.row_count:
            self._choose(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def _choose(self, name: str | None) -> None:
        if name is None or self.configs.get(name) is None:
            self.notify(f"preset {name} cannot be loaded", severity="error")
            return
        verdict = next(v for v in self.plan.recommendation.verdicts if v.name == name)
        if verdict.verdict == "does-not-fit":
            self.notify(
                f"{name} does not fit this machine; you can still review and save it",
                severity="warning",
            )
        if name != self.plan.preset:
            self.plan.choose_preset(name)
            remembered = self.wizard.settings
            default_dir = self.configs[name].output.dir
            if remembered.preset == name and remembered.output_dir not in (None, default_dir):
                self.plan.set_override("output.dir", yaml_text(remembered.output_dir))
        self.wizard.remember(preset=name)
        self.advance()
