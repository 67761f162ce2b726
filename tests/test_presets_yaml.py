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


def test_config_is_presets_yaml_and_writes_a_new_file(tmp_path):
    for name in ("tiny-cpu-demo", "gpt-oss-20b-lora-1gpu"):
        result = runner.invoke(app, ["config", name])
        assert result.exit_code == 0, result.output
        assert result.stdout == runner.invoke(app, ["presets", name, "--yaml"]).stdout
    path = tmp_path / "mine.yaml"
    written = runner.invoke(app, ["config", "tiny-cpu-demo", "-o", str(path)])
    assert written.exit_code == 0, written.output
    assert f"wrote {path}: edit it, then `osstune run {path}`" in written.stdout
    assert path.read_text() == preset_text("tiny-cpu-demo")
    assert load_config(str(path)) == load_preset("tiny-cpu-demo")
    path.write_text("# edited\n")
    again = runner.invoke(app, ["config", "tiny-cpu-demo", "-o", str(path)])
    assert again.exit_code == 2 and "already exists" in again.stderr
    assert again.stderr.count("\n") == 1 and path.read_text() == "# edited\n"
    nowhere = runner.invoke(app, ["config", "tiny-cpu-demo", "-o", str(tmp_path / "no" / "x")])
    assert nowhere.exit_code == 2 and "cannot write it" in nowhere.stderr


def test_set_and_dataset_apply_to_the_printed_config():
    for command in (["config", "tiny-cpu-demo"], ["presets", "tiny-cpu-demo", "--yaml"]):
        result = runner.invoke(app, [*command, "--set", "max_steps=3", "--dataset", "d.jsonl"])
        assert result.exit_code == 0, result.output
        data = yaml.safe_load(result.stdout)
        assert data["training"]["max_steps"] == 3 and data["dataset"]["path"] == "d.jsonl"
    bad = runner.invoke(app, ["config", "tiny-cpu-demo", "--set", "training.nope=1"])
    assert bad.exit_code == 2 and "training.nope: unknown key" in bad.stderr
