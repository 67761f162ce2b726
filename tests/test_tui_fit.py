"""The wizard at the classic 80x24 terminal and at 120x36, driven with Pilot: every screen's
primary binding is in its footer, no YAML line or token is cut and the loss chart spans its width.
tests/test_tui_machine.py has the rest of what is checked at both sizes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import screen_fixtures
from screen_fixtures import make_app, quiet_and_isolated, scripted_run  # noqa: F401 (autouse)
from textual.widgets._footer import FooterKey
from tui_fixtures import (
    h100_profile,
    run_async,
    screen_name,
    to_presets,
    wait_until,
)

from osstune.engine.plan.config import dump_config
from osstune.tui.render.chart import AXIS_WIDTH, EVAL_MARK
from osstune.tui.widgets.loss_chart import LossChart

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 36), id="120x36")]


def screen_lines(app) -> list[str]:  # noqa: ANN001
    """The terminal as the user sees it, one string per row."""
    update = app.screen._compositor.render_full_update(simplify=True)
    return ["".join(segment.text for segment in row) for row in update.strips]


def assert_footer_fits(app, primary: str) -> None:  # noqa: ANN001
    """`primary` ('^n Next: review') is whole on the footer row and no shown key is cut off."""
    width = app.size.width
    footer = screen_lines(app)[-1]
    assert primary in footer, f"{primary!r} not in footer {footer!r}"
    keys = list(app.screen.query(FooterKey))
    assert keys and all(key.region.right <= width for key in keys), [
        (key.key, key.region) for key in keys]


async def settle(pilot) -> None:  # noqa: ANN001
    await pilot.pause()
    await pilot.pause()


async def force_refused_start(app, pilot, screen, launcher) -> None:  # noqa: ANN001
    """On a Training screen refused by the pre-flight: `f` is offered, pressing it starts the
    run forced (and `f` leaves the footer once the run is going)."""
    assert_footer_fits(app, "f Run anyway")
    await pilot.press("f")
    await wait_until(pilot, launcher.started.is_set, what="the forced start")
    assert launcher.calls == [(screen.config.output.dir, False, True)]
    await wait_until(pilot, lambda: screen.running)
    await settle(pilot)
    assert "f Run anyway" not in screen_lines(app)[-1]  # only while it applies


async def footer_once(pilot, ready, primary: str) -> None:  # noqa: ANN001
    """Once `ready()` holds and the screen has painted, `primary` is whole on its footer."""
    await wait_until(pilot, ready)
    await settle(pilot)
    assert_footer_fits(pilot.app, primary)


async def to_dataset(pilot) -> None:  # noqa: ANN001
    await screen_fixtures.to_dataset(pilot)
    await settle(pilot)


# ----------------------------------------------------------------------------- 1. footers


@pytest.mark.parametrize("size", SIZES)
@run_async
async def test_every_screen_shows_its_primary_binding(tmp_path: Path, size) -> None:  # noqa: ANN001
    app = make_app(tmp_path)
    async with app.run_test(size=size) as pilot:
        await footer_once(pilot, lambda: app.plan.recommendation is not None, "⏎ Next: presets")
        await to_presets(pilot)
        await footer_once(pilot, lambda: True, "⏎ Choose")
        text = "\n".join(screen_lines(app))
        assert "disk" in text and "tiny-cpu-demo" in text  # every table column is in view
        await pilot.press("enter")
        await footer_once(pilot, lambda: app.screen.preview is not None, "^n Next: review")
        await pilot.press("ctrl+n")
        await footer_once(pilot, lambda: screen_name(app) == "ReviewScreen", "^n Start training")


@pytest.mark.parametrize("size", SIZES)
@run_async
async def test_training_and_done_footers_fit(tmp_path: Path, size) -> None:  # noqa: ANN001
    async with scripted_run(tmp_path, "gpt-oss-120b-fft-fsdp2-offload", steps=3, gpus=8,
                            size=size) as (pilot, launcher):
        app = pilot.app
        assert_footer_fits(app, "s Stop+save")
        assert "running" in screen_lines(app)[1]  # the status is the first thing on the title
        assert "H100" in "\n".join(screen_lines(app)) or size[0] < 100  # names when there is room
        launcher.process.finish()
        await footer_once(pilot, lambda: not app.screen.running, "⏎ Done")
        assert "completed (exit code 0)" in screen_lines(app)[1]
        await pilot.press("enter")
        await footer_once(pilot, lambda: screen_name(app) == "DoneScreen", "c Chat with it")


@pytest.mark.parametrize("size", SIZES)
@run_async
async def test_hardware_screen_keeps_gpu_names_whole(tmp_path: Path, size) -> None:  # noqa: ANN001
    app = make_app(tmp_path, h100_profile(2))
    async with app.run_test(size=size) as pilot:
        await wait_until(pilot, lambda: app.plan.recommendation is not None)
        await settle(pilot)
        text = "\n".join(screen_lines(app))
        assert text.count("NVIDIA H100 80GB HBM3") == 2 and "NVLink" in text


@run_async
async def test_the_preset_table_follows_a_resized_terminal(tmp_path: Path) -> None:
    app = make_app(tmp_path, h100_profile(1))
    async with app.run_test(size=(120, 36)) as pilot:
        await to_presets(pilot)
        await settle(pilot)
        assert "memory / GPU vs card" in "\n".join(screen_lines(app))
        await pilot.resize_terminal(80, 24)
        await settle(pilot)
        text = "\n".join(screen_lines(app))
        # the compact column: the figure without its bar (the figure itself is the estimator's)
        assert "mem/GPU" in text and re.search(r"★ +gpt-oss-20b-lora-1gpu +fits +1 +\d+/80 GiB",
                                               text) and "disk" in text
        assert "█" not in text.split("mem/GPU")[1].split("────")[0]  # the bars gave way
        assert_footer_fits(app, "⏎ Choose")


# ----------------------------------------------------------------------------- 2. review YAML


@pytest.mark.parametrize("size", SIZES)
@run_async
async def test_review_yaml_loses_no_line(tmp_path: Path, size) -> None:  # noqa: ANN001
    app = make_app(tmp_path)
    async with app.run_test(size=size) as pilot:
        screen = await screen_fixtures.to_review(pilot)
        await settle(pilot)
        pane, scroll = screen.query_one("#review-yaml"), screen.query_one("#review-yaml-scroll")
        source = dump_config(app.plan.config())
        area = scroll.content_region
        assert len(max(source.splitlines(), key=len)) > area.width  # some lines must wrap here
        rows: list[str] = []
        for top in range(0, pane.size.height, area.height):  # page through the pane
            scroll.scroll_to(y=top, animate=False, immediate=True)
            await settle(pilot)
            left = pane.content_region.x  # the text, not the scroll bar beside it
            shown = [row[left: left + pane.content_size.width]
                     for row in screen_lines(app)[area.y: area.bottom]]
            skip = top - round(scroll.scroll_y)  # the last page stops at the end
            rows += shown[skip: skip + pane.size.height - top]
        assert len(rows) == pane.size.height
        assert " ".join(rows).split() == source.split()  # every word, whole and in order
        top_level = {line.split(":")[0] for line in source.splitlines() if line[:1].isalpha()}
        assert {row.split(":")[0] for row in rows if row[:1].isalpha()} == top_level


# ----------------------------------------------------------------------------- 3. token preview


def cut_inside_a_token(plain: str, lines: list[str], starts: set[int]) -> list[str]:
    """The lines (as drawn) that end inside a token while a space or a token start was free."""
    bad, pos = [], 0
    for line in lines[:-1]:
        body = line.rstrip()
        if not body:
            continue
        at = plain.index(body, pos)
        end = at + len(body)
        if end >= len(plain):
            break
        if not (plain[end].isspace() or end in starts):
            bad.append(line)
        pos = end
    return bad


def token_starts(screen) -> set[int]:  # noqa: ANN001
    """Where each token of the shown example starts in the preview's text."""
    from osstune.engine.data.token_view import token_view
    from osstune.tui.render.tokens import token_text

    views = token_view(screen.preview.tokenizer, screen.preview.examples[screen.index])
    starts, offset = set(), 0
    for view in views:
        starts.add(offset)
        offset += len(token_text(view, False))
    return starts


@pytest.mark.parametrize("size", SIZES)
@run_async
async def test_token_preview_wraps_between_tokens(tmp_path: Path, size) -> None:  # noqa: ANN001
    from osstune.tui.widgets.token_preview import TokenPreview

    app = make_app(tmp_path)
    async with app.run_test(size=size) as pilot:
        await to_dataset(pilot)
        screen = app.screen
        for _ in range(12):  # the first examples: system prompt, tokens without spaces between
            preview = screen.query_one(TokenPreview)
            plain = str(preview.content)
            area = screen.query_one("#preview-scroll").content_region
            width = preview.content_size.width
            drawn = [row[area.x: area.x + width]
                     for row in screen_lines(app)[area.y: area.bottom]]
            assert len(drawn) >= 10 and plain.startswith(drawn[0].rstrip())
            assert sum(bool(row.strip()) for row in drawn) > plain[:2000].count("\n") // 4
            assert cut_inside_a_token(plain, drawn, token_starts(screen)) == []
            await pilot.press("pagedown")
            await settle(pilot)


# ----------------------------------------------------------------------------- 4. loss chart


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("steps", [3, 22, 300])
@run_async
async def test_loss_chart_spans_its_width(tmp_path: Path, size, steps: int) -> None:  # noqa: ANN001
    async with scripted_run(tmp_path, "gpt-oss-20b-lora-1gpu", steps=steps,
                            size=size) as (pilot, launcher):
        app = pilot.app
        launcher.process.writer.emit("eval", step=steps, loss=4.0, trained_tokens=10)
        chart = app.screen.query_one(LossChart)
        await wait_until(pilot, lambda: bool(chart.eval_history), what="the eval point")
        await settle(pilot)
        lines = str(chart.render()).split("\n")
        plot = chart.content_size.width - AXIS_WIDTH
        assert plot >= 30
        bottom = lines[-2][AXIS_WIDTH:]
        assert len(bottom) == plot and " " not in bottom  # bars in every column
        assert lines[0][AXIS_WIDTH:].rstrip().endswith(EVAL_MARK)  # eval 4.0: top, last column
        assert lines[-1].rstrip().endswith(str(steps)) and len(lines[-1]) == len(lines[0])
        assert f"{EVAL_MARK} eval" in lines[-1]
