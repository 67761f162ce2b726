"""`osstune presets NAME --yaml`: a preset as an editable config that `osstune run` takes back;
the wizard's Done screen offers `osstune chat`."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from osstune.engine.plan.config import load_config, load_preset, preset_names, preset_text
from osstune.tui.cli import app
from osstune.tui.screens.done import chat_command, next_commands

runner = CliRunner()


def test_every_preset_prints_as_its_own_file_and_loads_back(tmp_path):
    for name in preset_names():
        result = runner.invoke(app, ["presets", name, "--yaml"])
        assert result.exit_code == 0, result.output
        assert result.stdout == preset_text(name)
        path = tmp_path / f"{name}.yaml"
        path.write_text(result.stdout)
        assert load_config(str(path)) == load_preset(name)


def test_a_config_file_prints_validated_with_defaults_filled(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model: {id: openai/gpt-oss-20b}\ntraining: {max_steps: 7}\n")
    result = runner.invoke(app, ["presets", str(path), "--yaml"])
    assert result.exit_code == 0
    data = yaml.safe_load(result.stdout)
    assert data["training"]["max_steps"] == 7 and data["dataset"]["val_size"] is None
    assert data["report_to"] == [] and data["datasets"] == []


def test_yaml_refusals_are_one_line_exit_2():
    for args, message in ((["presets", "--yaml"], "--yaml needs a preset name"),
                          (["presets", "nope", "--yaml"], "unknown preset 'nope'")):
        result = runner.invoke(app, args)
        assert result.exit_code == 2
        assert message in result.stderr and result.stderr.count("\n") == 1


def test_done_screen_offers_chat_first():
    cfg = load_preset("tiny-cpu-demo")
    steps = next_commands(cfg, {"export": "./outputs/tiny-cpu-demo/export"})
    # nothing to merge first: chat is the first step
    assert steps[0] == ("chat with it (c)", "osstune chat ./outputs/tiny-cpu-demo")
    assert chat_command(cfg) == "osstune chat ./outputs/tiny-cpu-demo"
