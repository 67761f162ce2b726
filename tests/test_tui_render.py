"""The wizard's shared presentation on its own (tui/render/): wrapping at word and token
boundaries, the loss chart spread over its width, and the per-machine preset key."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.cells import cell_len
from rich.text import Text
from tui_fixtures import cpu_profile, h100_profile

from osstune.engine.session.fold import EvalPoint, StepPoint
from osstune.tui.render.chart import (
    AXIS_WIDTH,
    EVAL_MARK,
    column_of,
    column_span,
    loss_chart,
    step_axis,
)
from osstune.tui.render.wrap import SoftWrap, break_points, wrap_text
from osstune.tui.settings import Settings, machine_key

# ----------------------------------------------------------------------------- wrapping


def lines_of(text: str, width: int, boundaries=(), hang: bool = False) -> list[str]:  # noqa: ANN001
    return wrap_text(Text(text), width, boundaries, hang).plain.split("\n")


def test_words_move_whole_to_the_next_line() -> None:
    assert lines_of("hello world again", 11) == ["hello world", "again"]
    assert lines_of("one\ntwo three", 5) == ["one", "two", "three"]  # newlines end lines too


def test_a_run_of_tokens_breaks_between_tokens_not_inside_one() -> None:
    tokens = ["level?", "<|end|>", "<|start|>", "assistant", "<|channel|>"]
    text = "".join(tokens)
    starts = [sum(map(len, tokens[:i])) for i in range(len(tokens))]
    assert lines_of(text, 24, starts) == ["level?<|end|><|start|>", "assistant<|channel|>"]
    assert lines_of(text, 24) == ["level?<|end|><|start|>as", "sistant<|channel|>"]  # no bounds


def test_a_word_that_fits_a_line_goes_down_whole_a_longer_one_fills_the_line() -> None:
    assert lines_of("at sea level?<|end|>", 14, [0, 3, 7, 13]) == ["at sea", "level?<|end|>"]
    long_word = "a<|x|>" * 6  # longer than a line: broken at its token boundaries
    starts = [0, 3] + [3 + 6 * i + j for i in range(6) for j in (0, 1) if 3 + 6 * i + j < 39]
    lines = lines_of("go " + long_word, 14, sorted(set(starts)))
    assert lines[0].startswith("go a<|x|>") and all(len(line) <= 14 for line in lines)


def test_a_token_longer_than_the_line_is_cut_at_the_width() -> None:
    assert lines_of("x" * 25, 10, [0]) == ["x" * 10, "x" * 10, "x" * 5]


def test_hanging_indent_keeps_yaml_continuations_under_their_key() -> None:
    yaml_text = "model:\n  description: a long value that wraps\n  id: m"
    assert lines_of(yaml_text, 24, hang=True) == [
        "model:", "  description: a long", "    value that wraps", "  id: m"]


def test_styles_survive_wrapping() -> None:
    text = Text.assemble(("trained ", "green"), ("masked words", "dim"))
    wrapped = wrap_text(text, 10)
    assert wrapped.plain == "trained\nmasked\nwords"
    assert {str(span.style) for span in wrapped.spans} == {"green", "dim"}


def test_soft_wrap_draws_at_the_width_it_is_given() -> None:
    from rich.console import Console

    console = Console(width=12, record=True, color_system=None)
    console.print(SoftWrap(Text("abc<|x|>defghij"), [0, 3, 8]))
    assert console.export_text().splitlines() == ["abc<|x|>", "defghij"]
    assert str(SoftWrap(Text("plain"))) == "plain"


TOKENS = st.lists(st.text(alphabet="ab <|>é\n漢", min_size=1, max_size=9), min_size=1,
                  max_size=40)


@settings(max_examples=200, deadline=None)
@given(tokens=TOKENS, width=st.integers(4, 30))
def test_wrapped_lines_fit_and_break_only_where_allowed(tokens: list[str], width: int) -> None:
    text = "".join(tokens)
    starts = [sum(map(len, tokens[:i])) for i in range(len(tokens))]
    breaks = break_points(text, width, starts)
    for offset, _ in breaks:  # after a space, at a token start, or inside an over-long token
        token = max(i for i, s in enumerate(starts) if s <= offset)
        over_long = cell_len(tokens[token]) > width
        assert text[offset - 1].isspace() or offset in starts or over_long
    for line in wrap_text(Text(text), width, starts).plain.split("\n"):
        assert cell_len(line) <= width or cell_len(line.rstrip()) <= width
    kept = wrap_text(Text(text), width, starts).plain.replace("\n", "")
    assert kept.replace(" ", "") == text.replace("\n", "").replace(" ", "")  # nothing lost


# ----------------------------------------------------------------------------- loss chart


def points(n: int, first: int = 1) -> list[StepPoint]:
    return [StepPoint(s, 4.0 - 3.0 * (s - first) / max(n - 1, 1), 1e-3)
            for s in range(first, first + n)]


def chart_lines(history, evals=(), width: int = 58, height: int = 10) -> list[str]:  # noqa: ANN001
    return loss_chart(history, evals, width, height).plain.split("\n")


@pytest.mark.parametrize("steps", [1, 2, 22, 50, 51, 1000])
def test_the_bars_fill_the_plot_width_for_any_number_of_steps(steps: int) -> None:
    lines = chart_lines(points(steps))
    plot = 58 - AXIS_WIDTH
    bottom = lines[-2][AXIS_WIDTH:]
    assert len(bottom) == plot and " " not in bottom  # every column has a bar
    assert len(lines) == 10 and all(len(line) == 58 for line in lines)
    axis = lines[-1]
    assert axis[AXIS_WIDTH:].startswith("step 1") and axis.endswith(str(steps))  # at the edge


def test_few_steps_share_the_width_equally_and_in_order() -> None:
    top = chart_lines(points(2), width=AXIS_WIDTH + 20, height=4)[0][AXIS_WIDTH:]
    assert top == "█" * 10 + " " * 10  # step 1 (the high loss) the left half, step 2 the right


def test_many_steps_are_averaged_per_column() -> None:
    history = [StepPoint(s, 10.0 if s <= 500 else 0.0, 0.0) for s in range(1, 1001)]
    top = chart_lines(history, width=AXIS_WIDTH + 10, height=3)[0][AXIS_WIDTH:]
    assert top == "█" * 5 + " " * 5


def test_eval_is_a_second_series_in_its_steps_column() -> None:
    history = points(22)
    lines = chart_lines(history, [EvalPoint(11, 5.0), EvalPoint(22, 1.0)])
    marks = [(row, line.index(EVAL_MARK) - AXIS_WIDTH) for row, line in enumerate(lines[:-1])
             if EVAL_MARK in line]
    plot = 58 - AXIS_WIDTH
    assert [col for _, col in marks] == [column_of(10, 22, plot), column_of(21, 22, plot)]
    assert marks[0][0] == 0  # 5.0 is the highest value: the top row
    assert column_span(marks[0][1], 22, plot)[0] == 10
    assert f"{EVAL_MARK} eval" in lines[-1]
    assert EVAL_MARK not in "".join(chart_lines(history, [EvalPoint(40, 1.0)]))  # not in window


@pytest.mark.parametrize(("points_", "columns"), [(22, 50), (1000, 50), (50, 50), (3, 7)])
def test_every_point_has_a_column_that_shows_it(points_: int, columns: int) -> None:
    for index in range(points_):
        lo, hi = column_span(column_of(index, points_, columns), points_, columns)
        assert lo <= index < hi


def test_step_axis_labels_the_ends_and_the_middle_when_there_is_room() -> None:
    axis = step_axis(list(range(1, 23)), 50, with_eval=False)
    assert len(axis) == 50 and axis.startswith("step 1") and axis.endswith("22")
    assert axis.split()[2] == "12"  # the step under the middle column
    assert step_axis([5], 10, with_eval=False).split() == ["step", "5", "5"]
    assert "eval" not in step_axis(list(range(1, 23)), 14, with_eval=False)[6:-2].strip()


def test_no_steps_yet() -> None:
    assert loss_chart([], [], 40, 8).plain == "waiting for the first step…"


# ----------------------------------------------------------------------------- settings


def test_machine_key_names_the_gpus_and_ignores_the_rest() -> None:
    assert machine_key(h100_profile(8)) == "8x NVIDIA H100 80GB HBM3 80 GiB"
    assert machine_key(h100_profile(1)) != machine_key(h100_profile(2))
    assert machine_key(cpu_profile()) == "no GPU"
    busy = h100_profile(1)
    busy.gpus[0].memory_used_gib = 70.0  # what runs on it now is not what the machine is
    assert machine_key(busy) == machine_key(h100_profile(1))


def test_the_preset_is_remembered_per_machine() -> None:
    remembered = Settings(presets={machine_key(h100_profile(1)): "gpt-oss-20b-lora-mxfp4"})
    assert remembered.preset_for(h100_profile(1)) == "gpt-oss-20b-lora-mxfp4"
    assert remembered.preset_for(h100_profile(8)) is None
