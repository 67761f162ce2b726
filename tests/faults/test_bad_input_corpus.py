"""A generated corpus of bad input, each case through the real CLI.

Bad rows (with `dataset.invalid_rows: fail`, so the row itself is the error), bad datasets, bad
configs and `--set` values, bad hardware profiles; run through `inspect`, `run` (refusals before
any engine starts), `presets` and `doctor --hardware`. Every case must give: exit 2, exactly one
line on stderr that names the input, no traceback, and no file changed - neither the inputs nor
an output folder that already holds a run. In-process through Typer's CliRunner (faithful: the
same `main` code path minus the interpreter), plus a few through a real `osstune` subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import osstune.engine.data.dataset_cache as cache_mod
from osstune.tui.cli import app
from tests.faults.bad_input_cases import CASES, Case, U

# --------------------------------------------------------------------------- running a case


def _fill(text: str, names: dict[str, str]) -> str:
    for key, value in names.items():
        text = text.replace("{" + key + "}", value)
    return text


def _prepare(case: Case, root: Path) -> tuple[list[str], str]:
    names = {"dir": str(root)}
    for name, content in case.files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", newline="")
        names[name] = str(path)
    if case.out_run:  # a previous run that nothing may touch
        out = root / "out"
        (out / "checkpoints" / "step-2").mkdir(parents=True)
        (out / "config.yaml").write_text("name: previous\n")
        (out / "events.jsonl").write_text('{"event": "run_start"}\n')
        (out / "checkpoints" / "step-2" / "COMPLETE").write_text("")
    return ([_fill(a, names) for a in case.args], _fill(case.expect, names),
            _fill(case.where, names))


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _check(code: int, stderr: str, stdout: str, expect: str, where: str) -> None:
    assert code == 2, f"exit {code}; stderr: {stderr[:500]}"
    assert "Traceback" not in stderr + stdout
    lines = stderr.splitlines()
    assert len(lines) == 1, f"{len(lines)} lines on stderr: {stderr[:1000]}"
    assert lines[0].startswith("osstune: error: " + where), lines[0][:500]
    assert expect in lines[0], lines[0][:500]
    assert len(lines[0]) < 1000  # huge inputs are not echoed whole
    for raw in ("\x1b", "\x00"):
        assert raw not in stderr + stdout


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    folder = tmp_path_factory.mktemp("dataset-cache")
    monkeypatch.setattr(cache_mod, "cache_dir", lambda: folder)


def test_the_corpus_is_large_enough():
    kinds = {name.split(" (")[0] for name in CASES}
    assert len(kinds) >= 40 and len(CASES) >= 100


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_in_process(name, tmp_path, tokenizer):
    case = CASES[name]
    root = tmp_path / "case"
    root.mkdir()
    args, expect, where = _prepare(case, root)
    before = _snapshot(root)
    result = CliRunner().invoke(app, args)
    _check(result.exit_code, result.stderr, result.stdout, expect, where)
    assert _snapshot(root) == before  # no input changed, nothing written into `out`


SUBPROCESS_CASES = ["row: nested 100,000 deep", "config: --set unclosed list (run)",
                    "profile: NaN RAM (run)", "run dataset: empty file"]


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_bad_input_through_the_real_command(name, tmp_path, tokenizer):
    root = tmp_path / "case"
    root.mkdir()
    args, expect, where = _prepare(CASES[name], root)
    before = _snapshot(root)
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.run([sys.executable, "-m", "osstune.tui.cli", *args], capture_output=True,
                          text=True, env=env, timeout=120, cwd=root)
    _check(proc.returncode, proc.stderr, proc.stdout, expect, where)
    assert _snapshot(root) == before


@pytest.mark.slow
def test_dataset_refused_by_the_engine_exits_2(tmp_path):
    """Rows that only the full read can judge: the engine refuses them; `run` still exits 2."""
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [U()]}) + "\n")
    proc = subprocess.run([sys.executable, "-m", "osstune.tui.cli", "run", "tiny-cpu-demo",
                           "--dataset", str(data), "--output", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "NO_COLOR": "1"})
    _check(proc.returncode, proc.stderr, proc.stdout,
           f"{data}: no usable examples (1 row read; skipped by reason: no assistant message: 1)",
           "")


FIFO_COMMANDS = {
    "inspect": ["inspect", "{fifo}"],
    "run": ["run", "tiny-cpu-demo", "--dataset", "{fifo}", "--output", "{out}"],
    "run config": ["run", "{fifo}", "--output", "{out}"],
    "hardware": ["--hardware", "{fifo}", "presets"],
}


@pytest.mark.parametrize("command", list(FIFO_COMMANDS))
def test_a_fifo_is_refused_without_reading_it(tmp_path, command):
    """Opening a FIFO for reading blocks until a writer comes: it must not even be opened."""
    fifo = tmp_path / ("c.yaml" if command == "run config" else "rows.jsonl")
    os.mkfifo(fifo)
    args = [a.replace("{fifo}", str(fifo)).replace("{out}", str(tmp_path / "out"))
            for a in FIFO_COMMANDS[command]]
    proc = subprocess.run([sys.executable, "-m", "osstune.tui.cli", *args], capture_output=True,
                          text=True, env={**os.environ, "NO_COLOR": "1"}, timeout=60,
                          cwd=tmp_path)
    _check(proc.returncode, proc.stderr, proc.stdout, "not a regular file", f"{fifo}: ")
    assert not (tmp_path / "out").exists()
