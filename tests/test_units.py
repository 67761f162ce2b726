"""One format for sizes, counts and durations, used by every command and screen."""

from __future__ import annotations

import pytest

from osstune.engine.plan.units import fmt_bytes, fmt_clock, fmt_duration, fmt_gib, plural


@pytest.mark.parametrize(("value", "text"), [
    (44, "44 GiB"), (23.99, "24.0 GiB"), (0.5, "0.5 GiB"), (1007.5, "1008 GiB"),
    (2800, "2.7 TiB"), (1024, "1.0 TiB"),
])
def test_fmt_gib(value, text):
    assert fmt_gib(value) == text


def test_fmt_bytes_names_the_size_and_the_exact_count():
    assert fmt_bytes(1000) == "1,000 bytes"
    assert fmt_bytes(2048) == "2.0 KiB (2,048 bytes)"
    assert fmt_bytes(3 * 1024**2 + 1) == "3.0 MiB (3,145,729 bytes)"
    assert fmt_bytes(5 * 1024**4) == "5.0 TiB (5,497,558,138,880 bytes)"


def test_durations_estimated_and_on_the_clock():
    seconds = (None, 5, 59 * 60 + 10, 3725, 47 * 3600 + 1800, 60 * 3600)
    assert [fmt_duration(s) for s in seconds] == [
        "-", "1 min", "59 min", "1 h 02 min", "47 h 30 min", "2.5 days"]
    assert [fmt_clock(s) for s in (None, -3, 59.6, 3725)] == ["-", "0:00", "1:00", "1:02:05"]


def test_plural():
    assert [plural(n, "row") for n in (0, 1, 2, 1234)] == ["0 rows", "1 row", "2 rows",
                                                             "1,234 rows"]
    assert plural(1, "match", "matches") == "1 match" and plural(3, "match", "matches") == \
        "3 matches"


def test_presets_screen_and_cli_share_the_size_format():
    from osstune.tui.screens import preset

    assert preset._gib(2800) == fmt_gib(2800) == "2.7 TiB"  # was "2,800 GiB" on the screen
