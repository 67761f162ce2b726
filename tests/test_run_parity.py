"""Both front-ends show the same numbers for the same events: one recorded events.jsonl (a real
tiny-cpu-demo run, tests/runs/) replayed into `osstune run`'s live panel and plain lines and into
the wizard's Training screen, through the one run session."""

from __future__ import annotations

import re
from pathlib import Path

from rich.console import Console
from tui_fixtures import cpu_profile, run_async, wait_until

from osstune.engine.plan.config import load_config
from osstune.engine.session.events import read_typed
from osstune.engine.session.run_session import RunSession
from osstune.tui import output
from osstune.tui.app import OsstuneApp
from osstune.tui.commands.run import follow
from osstune.tui.render.run import event_line
from osstune.tui.screens.training import TrainingScreen

RECORDED = Path(__file__).parent / "runs" / "tiny-cpu-demo.events.jsonl"


class Replay:
    """A launcher whose engine has already written the recorded events and exited 0."""

    def preflight(self, cfg, output_dir, **_):  # noqa: ANN001, ANN003, ANN201
        return []

    def spawn(self, cfg, output_dir: Path, **_):  # noqa: ANN001, ANN003, ANN201
        with open(output_dir / "events.jsonl", "ab") as fh:
            fh.write(RECORDED.read_bytes())
        return self

    def poll(self) -> int:
        return 0

    def stderr_tail(self, n: int = 20) -> list[str]:
        return ["[engine] replayed"]

    def stop(self) -> None: ...

    def kill(self) -> None: ...


def _numbers(text: str) -> dict[str, str]:
    """The figures both show, read off the rendered text."""
    found = {
        "step": re.search(r"step\s+(\d+/\d+)", text),
        "loss": re.search(r"loss\s+([\d.]+)", text),
        "lr": re.search(r"lr\s+([\d.e+-]+)", text),
        "tok/s": re.search(r"tok(?:ens)?/s\s+([\d,]+)", text),
        "ETA": re.search(r"ETA\s+([\d:-]+)", text),
    }
    return {k: m.group(1) for k, m in found.items() if m}


def _config(tmp_path: Path, name: str):  # noqa: ANN202
    return load_config("tiny-cpu-demo", [f"output.dir={tmp_path / name}"])


def test_cli_plain_lines_are_the_recorded_events(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    session = RunSession(_config(tmp_path, "cli"), Replay())
    session.start()
    snap = follow(session, "tiny-cpu-demo", live=False)
    assert snap.status == "completed" and snap.step == 6 and snap.exit_code == 0
    lines = capsys.readouterr().out.splitlines()
    expected = [event_line(e) for e in read_typed(RECORDED.parent, RECORDED.name)]
    assert lines == [part for line in expected if line is not None for part in line.splitlines()]
    # the recording skipped 5 rows: said after run_start, naming the dataset, rows from 1
    assert lines[1] == ("  builtin:osstune-sample: 5 of 36 rows skipped (longer than sequence_len: "
                        "5); first (rows count from 1): row 21: 275 tokens, longer than "
                        "sequence_len 256")
    assert sum(line.startswith("step ") for line in lines) == 6
    assert not any("GiB" in line for line in lines)  # a CPU run: no GPU memory figure


@run_async
async def test_both_front_ends_show_the_same_numbers(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)
    console = Console(width=100, record=True, color_system=None)
    monkeypatch.setattr(output, "console", lambda stderr=False: console)
    session = RunSession(_config(tmp_path, "cli"), Replay())
    session.start()
    follow(session, "tiny-cpu-demo", live=True)
    cli = _numbers(console.export_text())

    profile = cpu_profile()
    app = OsstuneApp(lambda: profile, Replay(), tmp_path / "wizard.json")
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.plan.recommendation is not None)
        await app.push_screen(TrainingScreen(_config(tmp_path, "wizard")))
        screen = app.screen
        await wait_until(pilot, lambda: screen.session is not None and not screen.running)
        wizard = _numbers(str(screen.query_one("#run-stats").render()))
        chart = [p.step for p in screen.query_one("LossChart").history]
    assert cli == wizard and len(cli) == 5, (cli, wizard)
    assert chart == [1, 2, 3, 4, 5, 6]
