"""Per-rank loading of pretrained weights under FSDP: each rank reads only its shard.

FSDP2 shards every parameter on dim 0 (`Shard(0)`): rank r of W holds rows
[r * ceil(n / W), min((r + 1) * ceil(n / W), n)). `load_local_shards` fills each rank's local
shard straight from the safetensors files through `safe_open(...).get_slice`, which reads (mmap)
only those rows: no rank ever holds the whole model, nothing is broadcast, and the peak host memory
per rank is its shard plus one slice being converted. MXFP4 experts (`*_blocks` + `*_scales`, the
hub layout) are sliced along the expert dimension and dequantized per slice with transformers' own
dequantizer, so the values are those of a single-process `from_pretrained(..., dequantize=True)`.

Every rank reads every header and checks names and shapes against the model before reading any
data, so a checkpoint that does not match the config fails with the same one line on every rank;
the ranks then agree on success before going on (no rank is left waiting in a collective).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from osstune.engine.trainer.model import ModelError
from osstune.engine.trainer.mxfp4 import weights_folder
from osstune.engine.trainer.safetensors_read import unreadable_line

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
PACKED_SUFFIXES = ("_blocks", "_scales")


@dataclass
class Source:
    """Where one parameter comes from: a plain tensor, or MXFP4 blocks + scales."""

    name: str
    file: Path
    packed: bool  # MXFP4: `name` is the prefix of NAME_blocks / NAME_scales
    shape: tuple[int, ...]  # the parameter's shape it yields


@dataclass
class LoadStats:
    elements_read: int = 0  # checkpoint elements this rank read (packed bytes count once)
    parameters: int = 0


def weight_map(folder: Path) -> dict[str, Path]:
    """Tensor name -> safetensors file, from the index (sharded) or the single file."""
    index = folder / INDEX_FILE
    if index.is_file():
        try:
            mapping = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (ValueError, KeyError, TypeError) as e:
            raise ModelError(f"{index}: not a safetensors index ({e})") from None
        return {name: folder / file for name, file in mapping.items()}
    single = folder / SINGLE_FILE
    if single.is_file():
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(single), framework="pt") as f:
                return {name: single for name in f.keys()}  # noqa: SIM118 (not iterable)
        except (SafetensorError, OSError) as e:
            raise ModelError(unreadable_line(str(folder), single, e)) from None
    raise ModelError(f"model {folder}: no {INDEX_FILE} or {SINGLE_FILE}")


class _Files:
    """Open safetensors handles, one per file, opened on first use."""

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self._open: dict[Path, Any] = {}

    def slice(self, file: Path, name: str) -> Any:
        if file not in self._open:
            from safetensors import SafetensorError, safe_open

            try:
                self._open[file] = safe_open(str(file), framework="pt")
            except (SafetensorError, OSError) as e:
                raise ModelError(unreadable_line(self.model_id, file, e)) from None
        return self._open[file].get_slice(name)


def _packed_shape(blocks: list[int]) -> tuple[int, ...]:
    """MXFP4 blocks [E, out, G, 16] dequantize to the bf16 parameter [E, in = G * 32, out]."""
    experts, out, groups, half = blocks
    return (experts, groups * half * 2, out)


def plan_sources(model: nn.Module, folder: Path, mapping: dict[str, Path], files: _Files
                 ) -> dict[str, Source]:
    """Match every parameter to the checkpoint and check its shape; raise ModelError."""
    sources: dict[str, Source] = {}
    for name, param in model.named_parameters():
        want = tuple(param.shape)  # DTensor: the global shape
        if name in mapping:
            shape = tuple(files.slice(mapping[name], name).get_shape())
            source = Source(name, mapping[name], False, shape)
        elif all(name + s in mapping for s in PACKED_SUFFIXES):
            blocks = files.slice(mapping[name + "_blocks"], name + "_blocks").get_shape()
            if len(blocks) != 4:
                raise ModelError(f"checkpoint {folder}: {name}_blocks has shape "
                                 f"{tuple(blocks)}, expected 4 dimensions (MXFP4)")
            source = Source(name, mapping[name + "_blocks"], True, _packed_shape(blocks))
        else:
            raise ModelError(f"checkpoint {folder}: no tensor {name} (does it hold this model?)")
        if source.shape != want:
            raise ModelError(f"checkpoint {folder}: {name} has shape {source.shape}, the "
                             f"config gives {want} (model.architecture does not match the "
                             "checkpoint)")
        sources[name] = source
    return sources


def local_rows(param: torch.Tensor) -> tuple[int, int]:
    """The [start, stop) rows of dim 0 this rank's shard holds (all rows when not sharded)."""
    rows = param.shape[0] if param.dim() else 1
    mesh = getattr(param, "device_mesh", None)
    if mesh is None:
        return 0, rows
    world, rank = mesh.size(), mesh.get_local_rank()
    chunk = math.ceil(rows / world)
    start = min(rank * chunk, rows)
    return start, min(start + chunk, rows)


@torch.no_grad()
def fill_local_shards(model: nn.Module, sources: dict[str, Source], files: _Files,
                      scales_files: dict[str, Path]) -> LoadStats:
    stats = LoadStats()
    for name, param in model.named_parameters():
        local = param.to_local() if hasattr(param, "to_local") else param
        source = sources[name]
        start, stop = local_rows(param)
        if stop - start != (local.shape[0] if local.dim() else 1):
            raise ModelError(f"{name}: local shard has {tuple(local.shape)} rows, expected "
                             f"{stop - start} (unexpected sharding)")
        if stop <= start:
            continue
        data = _read_packed(source, start, stop, files, scales_files, local.dtype) \
            if source.packed else files.slice(source.file, name)[start:stop].to(local.dtype)
        local.copy_(data.reshape(local.shape))
        stats.elements_read += data.numel()
        stats.parameters += 1
        del data
    return stats


def _read_packed(source: Source, start: int, stop: int, files: _Files,
                 scales_files: dict[str, Path], dtype: torch.dtype) -> torch.Tensor:
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    blocks = files.slice(source.file, source.name + "_blocks")[start:stop]
    scales = files.slice(scales_files[source.name], source.name + "_scales")[start:stop]
    return convert_moe_packed_tensors(blocks, scales, dtype=dtype)


def agree(ok: bool, device: torch.device) -> bool:
    """True when every rank succeeded (one all-reduce; single process: `ok`)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return ok
    flag = torch.tensor([0.0 if ok else 1.0], device=device)
    dist.all_reduce(flag)
    return flag.item() == 0.0


def load_local_shards(model: nn.Module, model_id: str, device: torch.device) -> LoadStats:
    """Fill `model`'s (materialised, maybe FSDP-sharded) parameters from the checkpoint.

    `device` is where the collective that makes the ranks agree runs (the compute device).
    """
    failure: ModelError | None = None
    stats = LoadStats()
    try:
        folder = weights_folder(model_id)
        files, mapping = _Files(model_id), weight_map(folder)
        sources = plan_sources(model, folder, mapping, files)
        scales_files = {n: mapping[n + "_scales"] for n, s in sources.items() if s.packed}
        stats = fill_local_shards(model, sources, files, scales_files)
    except ModelError as e:
        failure = e
    except (OSError, RuntimeError, ValueError) as e:
        failure = ModelError(f"model {model_id}: cannot load weights: {type(e).__name__}: {e}")
    if not agree(failure is None, device):
        raise failure or ModelError(f"model {model_id}: another rank failed to load its shard "
                                    "(its message is in the log)")
    return stats
