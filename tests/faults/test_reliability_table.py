"""README's Reliability table says what is tried: every test file it names exists, every file of
tests/faults is named there, and the bad-input corpus's figures are the corpus's."""

from __future__ import annotations

import re

import pytest

from tests.engine_fixtures import REPO
from tests.faults.bad_input_cases import CASES

pytestmark = pytest.mark.faults


def _section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("## Reliability")
    end = text.index("\n## ", start + 1) if "\n## " in text[start + 1:] else len(text)
    section = text[start:end]
    return section[:section.index("<!-- section")] if "<!-- section" in section else section


def test_every_named_test_file_exists_and_every_fault_file_is_named():
    section = _section()
    named = set(re.findall(r"`(tests/[\w/]+\.py)`", section))
    assert named, "the table names no test file"
    assert {n for n in named if not (REPO / n).is_file()} == set()
    faults = {f"tests/faults/{p.name}" for p in (REPO / "tests" / "faults").glob("test_*.py")
              if p.name != "test_reliability_table.py"}
    assert faults - named == set(), "fault files the table does not name"


def test_the_corpus_figures_are_the_corpus():
    kinds = len({name.split(" (")[0] for name in CASES})
    section = _section()
    assert f"{kinds} kinds of bad rows" in section and f"({len(CASES)} cases" in section
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"runs {kinds} kinds of bad rows" in readme and f"({len(CASES)} cases)" in readme
