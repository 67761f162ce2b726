"""A hub-layout MXFP4 folder through the engine (`init: pretrained`, `model.experts: mxfp4`) and
`osstune merge-lora` back into the hub's layout (or bf16), on CPU with the tiny fixture."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from osstune.engine.session.events import read_events
from osstune.engine.trainer.hub_layout import INDEX_FILE
from osstune.engine.trainer.train import EXIT_USER_ERROR, main
from osstune.tui.cli import app
from tests.engine_fixtures import TINY_ARCH, last_run_end, tiny_config, write_config
from tests.test_mxfp4 import tiny_hub

IDS = torch.tensor([[200006, 1428, 200008, 12194, 200007, 200006]])


@pytest.fixture(scope="module")
def packed_run(tmp_path_factory):
    from osstune.engine.data.tokenizer import load_offline_tokenizer

    tmp = tmp_path_factory.mktemp("packed")
    hub = tiny_hub(tmp / "hub", seed=4, arch={**TINY_ARCH, "pad_token_id": 199999,
                                              "eos_token_id": 200002})
    load_offline_tokenizer().save_pretrained(str(hub))
    cfg = tiny_config(tmp, "packed", method="lora",
                      model={"id": str(hub), "init": "pretrained", "architecture": {},
                             "experts": "mxfp4"},
                      lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"],
                            "target_parameters": ["mlp.experts.gate_up_proj",
                                                  "mlp.experts.down_proj"]},
                      training={"max_steps": 2, "learning_rate": 5e-2})
    return hub, write_config(tmp, cfg), tmp / "packed"


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=IDS).logits


def _packed_base(folder: Path):
    from tests.test_mxfp4 import load

    return load(folder, "mxfp4")


def _adapted(hub: Path, adapter: Path, experts: bool = True):
    from peft import PeftModel

    from osstune.engine.trainer import expert_adapter

    model = PeftModel.from_pretrained(_packed_base(hub), str(adapter))
    if experts:
        assert expert_adapter.load(model.get_base_model(), adapter)
    return model


@pytest.mark.slow
def test_packed_run_trains_and_merges_back_to_hub_layout(packed_run, tmp_path, capsys):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from osstune.engine.plan.config import load_config
    from osstune.engine.trainer import expert_adapter
    from osstune.engine.trainer.merge import merge_lora

    hub, path, out = packed_run
    assert main(["--config", str(path)]) == 0, capsys.readouterr().err
    assert last_run_end(out)["status"] == "completed"
    start = next(e for e in read_events(out) if e["type"] == "run_start")
    assert 0 < start["model"]["trainable_params"] < start["model"]["total_params"] / 10
    adapter = out / "adapter"
    trained = load_file(str(adapter / expert_adapter.FILE))
    assert any("lora_B_down_proj" in k and v.abs().sum() > 0 for k, v in trained.items())
    expected = _logits(_adapted(hub, adapter))
    assert (expected - _logits(_adapted(hub, adapter, experts=False))).abs().max() > 1e-3

    # expert adapters cannot stay MXFP4: the CLI says so in one line, and --dtype bf16 merges
    result = CliRunner().invoke(app, ["merge-lora", str(path)])
    assert result.exit_code != 0 and "merge with --dtype bf16" in result.output
    result = CliRunner().invoke(app, ["merge-lora", str(path), "--dtype", "bf16"])
    assert result.exit_code == 0, result.output
    merged = out / "merged"
    assert "quantization_config" not in json.loads((merged / "config.json").read_text())
    plain = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
    torch.testing.assert_close(_logits(plain), expected, rtol=1e-4, atol=1e-4)

    # attention adapters only: the hub's layout again, experts untouched
    attention_only = Path(shutil.copytree(adapter, tmp_path / "attention-only"))
    (attention_only / expert_adapter.FILE).unlink()
    merge_lora(load_config(str(path)), out, adapter_dir=attention_only)
    assert json.loads((merged / "config.json").read_text())["quantization_config"][
        "quant_method"] == "mxfp4"
    weight_map = json.loads((merged / INDEX_FILE).read_text())["weight_map"]
    name = "model.layers.1.mlp.experts.gate_up_proj_blocks"
    base_map = json.loads((hub / INDEX_FILE).read_text())["weight_map"]
    assert torch.equal(load_file(str(merged / weight_map[name]))[name],
                       load_file(str(hub / base_map[name]))[name])
    # the hub layout stores the merged attention in bf16: bf16 rounding of the fp32 merge
    attention = _logits(_adapted(hub, attention_only, experts=False))
    torch.testing.assert_close(_logits(_packed_base(merged)), attention, rtol=0, atol=1e-3)
    assert (attention - _logits(_packed_base(hub))).abs().max() > 2e-2  # the adapter matters


def _drop(folder: Path, tensor: str) -> str:
    from safetensors.torch import load_file, save_file

    file = json.loads((folder / INDEX_FILE).read_text())["weight_map"][tensor]
    state = load_file(str(folder / file))
    del state[tensor]
    save_file(state, str(folder / file))
    return f"{file}: tensor {tensor} is listed in {INDEX_FILE} but not in the file"


def _reshape(folder: Path, tensor: str) -> str:
    from safetensors.torch import load_file, save_file

    file = json.loads((folder / INDEX_FILE).read_text())["weight_map"][tensor]
    state = load_file(str(folder / file))
    state[tensor] = state[tensor][:, :-1].contiguous()
    save_file(state, str(folder / file))
    return f"{file}: tensor {tensor} has shape"


def _quant_method(folder: Path, tensor: str) -> str:
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"]["quant_method"] = "gptq"
    (folder / "config.json").write_text(json.dumps(config))
    return "config.json: quantization_config.quant_method 'gptq' is not supported"


def _truncate(folder: Path, tensor: str) -> str:
    from tests.test_mxfp4 import truncate_in

    return f"{truncate_in(folder, tensor)}: tensor {tensor} runs past the end of the file"


@pytest.mark.parametrize("damage", [_drop, _reshape, _quant_method, _truncate],
                         ids=["missing scales", "wrong shape", "unknown quant_method",
                              "truncated"])
def test_bad_hub_folder_fails_with_one_line_and_writes_nothing(packed_run, tmp_path, capsys,
                                                               damage):
    hub, _, _ = packed_run
    broken = Path(shutil.copytree(hub, tmp_path / "broken"))
    expect = damage(broken, "model.layers.0.mlp.experts.gate_up_proj_scales")
    before = {p.name: p.read_bytes() for p in broken.iterdir()}
    cfg = tiny_config(tmp_path, "out", method="lora",
                      model={"id": str(broken), "init": "pretrained", "architecture": {},
                             "experts": "mxfp4"})
    code = main(["--config", str(write_config(tmp_path, cfg))])
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR
    lines = [ln for ln in err.splitlines() if ln.startswith("osstune: error:")]
    assert len(lines) == 1 and expect in lines[0], err[-2000:]
    assert "Traceback" not in err
    assert {p.name: p.read_bytes() for p in broken.iterdir()} == before  # the input untouched
    out = tmp_path / "out"
    assert not any((out / name).exists() for name in ("checkpoints", "adapter", "export"))
