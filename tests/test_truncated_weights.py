"""A model file cut short (a download or copy interrupted) is refused in one line that names the
file and the first tensor it lacks, by every loader: the plain `from_pretrained` path, the FSDP
per-rank loader and (tests/test_mxfp4.py) the MXFP4-packed loader. The engine exits 2 with an
`error` event of kind `model`, not with "a bug in osstune"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from osstune.engine.plan.config import validate
from osstune.engine.session.events import read_events
from osstune.engine.trainer.model import (
    ModelError,
    build_meta_model,
    load_model_config,
    load_pretrained,
)
from osstune.engine.trainer.safetensors_read import truncated_tensor
from osstune.engine.trainer.sharded_load import load_local_shards
from osstune.engine.trainer.train import main
from tests.checkpoint_fixtures import write_tiny_checkpoint
from tests.engine_fixtures import tiny_config, write_config

CPU = torch.device("cpu")


def cut_into(folder: Path, file_index: int = 1) -> tuple[str, str]:
    """Cut one shard a byte into its second tensor's data (by offset), so that tensor and every
    one after it run past the end: (file name, the second tensor's name)."""
    path = sorted(folder.glob("*.safetensors"))[file_index]
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    by_offset = sorted((n for n in header if n != "__metadata__"),
                       key=lambda n: header[n]["data_offsets"][0])
    assert len(by_offset) > 2  # several tensors cut: the first of them is the one named
    second = by_offset[1]
    path.write_bytes(data[:8 + size + header[second]["data_offsets"][0] + 1])
    return path.name, second


@pytest.fixture
def cut(tmp_path) -> tuple[Path, str, str]:
    folder = write_tiny_checkpoint(tmp_path / "ckpt", files=2)
    file, tensor = cut_into(folder)
    return folder, file, tensor


def _cfg(tmp_path: Path, folder: Path) -> dict:
    return tiny_config(tmp_path, "run", model={"id": str(folder), "init": "pretrained",
                                               "architecture": {}, "dtype": "float32",
                                               "tokenizer": "openai/gpt-oss-20b"},
                       training={"max_steps": 1})


def test_truncated_tensor_names_the_first_missing_tensor_only(tmp_path, cut):
    folder, file, tensor = cut
    whole = [p for p in folder.glob("*.safetensors") if p.name != file]
    assert truncated_tensor(folder / file) == tensor
    assert [truncated_tensor(p) for p in whole] == [None]
    (tmp_path / "garbage.safetensors").write_bytes(b"\xff" * 12)  # no header: not ours to name
    assert truncated_tensor(tmp_path / "garbage.safetensors") is None


def test_from_pretrained_path_names_the_cut_file(tmp_path, cut):
    folder, file, tensor = cut
    cfg = validate(_cfg(tmp_path, folder), "t")
    with pytest.raises(ModelError, match=rf"^model {folder}: {file}: tensor {tensor} runs past "
                       r"the end of the file \(truncated safetensors"):
        load_pretrained(cfg, load_model_config(cfg, CPU), CPU)


def test_per_rank_loader_names_the_cut_file(tmp_path, cut):
    folder, file, tensor = cut
    cfg = validate(_cfg(tmp_path, folder), "t")
    model = build_meta_model(load_model_config(cfg, CPU), torch.float32)
    model.to_empty(device=CPU)
    with pytest.raises(ModelError, match=rf"^model {folder}: {file}: tensor {tensor} runs past "):
        load_local_shards(model, str(folder), CPU)


def test_the_engine_refuses_a_cut_file_with_exit_2_and_an_error_event(tmp_path, cut, capsys):
    folder, file, _ = cut
    code = main(["--config", str(write_config(tmp_path, _cfg(tmp_path, folder))), "--no-save"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{file}: tensor " in err and "bug in osstune" not in err
    error = next(e for e in read_events(tmp_path / "run") if e["type"] == "error")
    assert error["kind"] == "model" and "truncated safetensors" in error["message"]


def test_a_cut_single_file_model_is_named_by_the_per_rank_loader(tmp_path):
    from safetensors.torch import save_file

    from osstune.engine.trainer.sharded_load import weight_map

    save_file({"a": torch.zeros(64), "b": torch.ones(64)}, str(tmp_path / "model.safetensors"))
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[:-10])
    with pytest.raises(ModelError, match=r"model.safetensors: tensor b runs past the end"):
        weight_map(tmp_path)
