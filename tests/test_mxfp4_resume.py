"""Expert LoRA on packed MXFP4 experts (ops/moe_lora.py through engine/trainer/expert_adapter.py)
survives a stop and `--resume`: a real subprocess run killed right after its step-2 checkpoint,
then resumed, logs the same losses as an uninterrupted run (1e-6, CPU fp32) and ends with the
same adapters, expert adapters included."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from osstune.engine.trainer import checkpoint as ckpt
from tests.engine_fixtures import (
    REPO,
    TINY_ARCH,
    engine_env,
    last_run_end,
    step_losses,
    tiny_config,
    write_config,
)
from tests.test_mxfp4 import tiny_hub

pytestmark = pytest.mark.slow

STOP_AFTER_SAVE = textwrap.dedent('''
    import os, signal, sys
    from osstune.engine.trainer import checkpoint as ckpt, train

    stop_at, real_save = int(sys.argv[1]), ckpt.save_checkpoint
    def save(output_dir, model, optimizer, trainer, keep_last, lora):
        folder = real_save(output_dir, model, optimizer, trainer, keep_last, lora)
        if trainer.step == stop_at:  # the checkpoint is whole: stop as hard as possible
            os.kill(os.getpid(), signal.SIGKILL)
        return folder
    ckpt.save_checkpoint = save
    sys.exit(train.main(sys.argv[2:]))
''')


def _run(args: list[str], killer: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", STOP_AFTER_SAVE, "2"] if killer else \
        [sys.executable, "-m", "osstune.engine.trainer.train"]
    return subprocess.run(cmd + args, cwd=REPO, env=engine_env(), capture_output=True,
                          text=True, timeout=300)


def _config(tmp: Path, hub: Path, name: str) -> Path:
    cfg = tiny_config(tmp, name, method="lora",
                      model={"id": str(hub), "init": "pretrained", "architecture": {},
                             "experts": "mxfp4"},
                      lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"],
                            "target_parameters": ["mlp.experts.gate_up_proj",
                                                  "mlp.experts.down_proj"]},
                      training={"max_steps": 4, "learning_rate": 5e-2},
                      output={"save_steps": 2, "keep_last": 2})
    return write_config(tmp, cfg)


def _adapters(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    from osstune.engine.trainer import expert_adapter

    adapter = out / "adapter"
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    experts = load_file(str(adapter / expert_adapter.FILE))
    assert experts, "no expert adapters were saved"
    return {**tensors, **{f"experts/{k}": v for k, v in experts.items()}}


def test_expert_lora_on_packed_experts_resumes_the_same_run(tmp_path):
    from osstune.engine.data.tokenizer import load_offline_tokenizer

    hub = tiny_hub(tmp_path / "hub", seed=4, arch={**TINY_ARCH, "pad_token_id": 199999,
                                                   "eos_token_id": 200002})
    load_offline_tokenizer().save_pretrained(str(hub))

    whole = _run(["--config", str(_config(tmp_path, hub, "whole"))])
    assert whole.returncode == 0, whole.stderr[-3000:]
    baseline = step_losses(tmp_path / "whole")
    assert sorted(baseline) == [1, 2, 3, 4]

    path = _config(tmp_path, hub, "stopped")
    out = tmp_path / "stopped"
    stopped = _run(["--config", str(path)], killer=True)
    assert stopped.returncode == -9, stopped.stderr[-3000:]
    assert [p.name for p in ckpt.complete_checkpoints(out)] == ["step-000002"]
    assert sorted(step_losses(out)) == [1, 2]
    resumed = _run(["--config", str(path), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert last_run_end(out)["status"] == "completed"

    losses = step_losses(out)
    assert losses.keys() == baseline.keys()
    for step, loss in baseline.items():
        assert losses[step] == pytest.approx(loss, abs=1e-6), step
    assert losses[4] != pytest.approx(losses[1], abs=1e-3)  # it trained
    expected, got = _adapters(tmp_path / "whole"), _adapters(out)
    assert got.keys() == expected.keys()
    assert any("lora_B_down_proj" in k and v.abs().sum() > 0 for k, v in got.items())
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=1e-6, msg=name)
