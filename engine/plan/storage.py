"""Disk a run needs, term by term: what it downloads and what it writes.

Torch-free. The model download counts only when the weights are not already in the Hugging Face
cache (looked up on this machine) and not a local folder; checkpoints count `keep_last` + 1 (a
save writes the new one before the oldest is deleted) at their real size: adapter + its AdamW
states for LoRA, bf16 weights + both AdamW states for a full fine-tune; the export only when the
run writes one (a full fine-tune with `output.export`; a LoRA run writes its adapter).
"""

from __future__ import annotations

import json
import math

from osstune.engine.plan.config import RunConfig
from osstune.engine.plan.shapes import ModelShapes, cached_snapshot, is_local_model
from osstune.engine.plan.units import GIB

TOKENIZER_GIB = 0.03  # tokenizer.json + chat template written with every export


def weights_cached(model_id: str) -> bool:
    """True when the HF cache holds every weight file of `model_id` whole: each file its index
    lists is there (an interrupted download leaves a file out: the hub links it into the
    snapshot only once complete) and together they are at least the index's `total_size`."""
    snapshot = cached_snapshot(model_id)
    if snapshot is None:
        return False
    index = snapshot / "model.safetensors.index.json"
    if not index.is_file():
        single = snapshot / "model.safetensors"
        return single.is_file() and single.stat().st_size > 0
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        files = set(data["weight_map"].values())
        total = int((data.get("metadata") or {}).get("total_size") or 0)
        sizes = [(snapshot / f).stat().st_size for f in files]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False  # a file missing (stat fails on it or on a dangling link) or a bad index
    return bool(files) and all(sizes) and sum(sizes) >= total


def cached_models() -> list[str]:
    """Every model whose weights are complete in the local HF cache ('org/name')."""
    from osstune.engine.plan.hardware import hf_cache_dir

    try:
        folders = [p.name for p in hf_cache_dir().iterdir() if p.name.startswith("models--")]
    except OSError:
        return []
    ids = [name.removeprefix("models--").replace("--", "/", 1) for name in sorted(folders)]
    return [model_id for model_id in ids if weights_cached(model_id)]


def download_gib(cfg: RunConfig, shapes: ModelShapes, cached: list[str] | None) -> float:
    """The MXFP4 checkpoint, unless local or listed in `cached` (None: the cache is unknown)."""
    model = cfg.model
    if model.init != "pretrained" or is_local_model(model.id):
        return 0.0
    if cached is not None and model.id in cached:
        return 0.0
    return shapes.mxfp4_checkpoint_bytes() / GIB


def checkpoint_gib(cfg: RunConfig, shapes: ModelShapes, lora_params: int, dtype_bytes: int
                   ) -> float:
    if cfg.method == "lora":
        return lora_params * 12 / GIB  # fp32 adapter + two fp32 AdamW states
    return shapes.total_params() * dtype_bytes * 3 / GIB  # weights + two AdamW states


def saves(cfg: RunConfig, total_steps: int | None) -> int:
    """Checkpoints on disk at the peak: keep_last + 1 while a save replaces the oldest."""
    every = cfg.output.save_steps
    if every is None:
        return 1
    if total_steps is None:
        return cfg.output.keep_last + 1
    return max(1, min(cfg.output.keep_last + 1, math.ceil(total_steps / every)))


def disk_terms(cfg: RunConfig, shapes: ModelShapes, lora_params: int, dtype_bytes: int,
               total_steps: int | None, cached: list[str] | None, on_disk: int = 0
               ) -> dict[str, float]:
    """What the run needs free, term by term (GiB). `on_disk`: finished checkpoints a resumed
    run's folder holds already (taken from the free space already): only the rest of the
    `keep_last` + 1 are still needed, at least the one being written."""
    terms: dict[str, float] = {}
    download = download_gib(cfg, shapes, cached)
    if download:
        terms["model download (not in the HF cache)"] = download
    kind = "adapter" if cfg.method == "lora" else "weights + AdamW"
    count = saves(cfg, total_steps)
    if on_disk:
        count = max(1, count - on_disk)
    more = " more" if on_disk else ""
    terms[f"checkpoints ({count}{more} x {kind})"] = \
        count * checkpoint_gib(cfg, shapes, lora_params, dtype_bytes)
    if cfg.output.export and cfg.method == "lora":
        terms["adapter export"] = lora_params * 4 / GIB + TOKENIZER_GIB
    elif cfg.output.export:
        terms["export (safetensors)"] = shapes.total_params() * dtype_bytes / GIB + TOKENIZER_GIB
    return terms


def split_download(terms: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """(the download terms, which land in the HF cache; the rest, written at the output)."""
    download = {name: gib for name, gib in terms.items() if "download" in name}
    return download, {name: gib for name, gib in terms.items() if name not in download}


def merge_terms(cfg: RunConfig, kind: str, dtype: str = "auto") -> dict[str, float]:
    """Disk `osstune merge-lora` / `merge-sharded-fsdp-weights` write (and, for merge-lora from a
    hub id not in the cache, download): the merged model in the training dtype, or MXFP4 in the
    hub's layout where merge-lora keeps packed experts packed (`model.experts: mxfp4`, `auto`)."""
    from osstune.engine.plan.shapes import model_shapes

    shapes = model_shapes(cfg.model.id, cfg.model.architecture)
    dtype_bytes = 2 if cfg.model.dtype == "bfloat16" else 4
    packed = kind == "lora" and cfg.model.experts == "mxfp4" and dtype == "auto"
    merged = shapes.mxfp4_checkpoint_bytes() if packed else shapes.total_params() * dtype_bytes
    terms = {f"merged model ({'MXFP4 ' if packed else ''}safetensors)": merged / GIB
             + TOKENIZER_GIB}
    if kind == "lora":
        download = download_gib(cfg, shapes, [cfg.model.id] if weights_cached(cfg.model.id)
                                else [])
        if download:
            terms["base model download (not in the HF cache)"] = download
    return terms
