"""Static config rules live in the schema: `osstune run` refuses an inconsistent layout before
any process starts (one line naming the key, exit 2, nothing written)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from osstune.engine.plan.config import ConfigError, load_config
from osstune.tui.cli import app

CASES = {
    "more processes without fsdp": (["gpus=4"], "distributed: 4 processes (gpus x nnodes) need "
                                                "fsdp: true"),
    "more nodes without fsdp": (["distributed.nnodes=2"], "distributed: 2 processes"),
    "lora under fsdp": (["method=lora", "distributed.fsdp=true"],
                        "method lora runs on one process"),
    "lora on two gpus": (["method=lora", "gpus=2", "distributed.fsdp=true"],
                         "method lora runs on one process"),
    "offload without fsdp": (["distributed.cpu_offload=true"],
                             "distributed.cpu_offload needs distributed.fsdp: true"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_schema_refuses_inconsistent_layouts(name):
    sets, message = CASES[name]
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config("tiny-cpu-demo", sets)


@pytest.mark.parametrize("name", ["more processes without fsdp", "lora under fsdp"])
def test_osstune_run_refuses_before_any_process_starts(tmp_path, name):
    sets, message = CASES[name]
    out = tmp_path / "never"
    argv = ["run", "tiny-cpu-demo", "--output", str(out)]
    for item in sets:
        argv += ["--set", item]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not out.exists()  # no config written, no engine started


def test_consistent_layouts_still_validate():
    assert load_config("tiny-cpu-demo", ["gpus=2", "distributed.fsdp=true"]).distributed.fsdp
    assert load_config("gpt-oss-20b-lora-1gpu").method == "lora"
