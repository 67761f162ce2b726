"""Exports a trained model as Hugging Face files that vLLM, SGLang and transformers load.

Full fine-tunes: safetensors shards + index, `config.json` (architectures always
`["GptOssForCausalLM"]`, never the FSDP-prefixed class name), `generation_config.json`, tokenizer
with a harmony chat template. LoRA: the PEFT adapter directory plus the tokenizer. Everything is
written into a hidden sibling folder and renamed into place, so a failed export never leaves a
folder that looks complete.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from osstune.engine.data.chat_template import CHAT_TEMPLATE
from osstune.engine.data.dataset import PAD_ID
from osstune.engine.plan.config import RunConfig
from osstune.engine.trainer.model import hf_config_dict
from osstune.engine.trainer.objective import causal_lm

MAX_SHARD_SIZE = "5GB"
# The checkpoints' generation config: stop on <|return|>, <|endoftext|> and <|call|>.
GENERATION_CONFIG = {"bos_token_id": 199998, "eos_token_id": [200002, 199999, 200012],
                     "pad_token_id": PAD_ID, "do_sample": True}


@contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """Yield a fresh staging folder; on success it replaces `target` (old copy removed last)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old")
    if target.exists():
        if old.exists():
            shutil.rmtree(old)
        target.rename(old)
    staging.rename(target)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def save_tokenizer(tokenizer: Any, folder: Path) -> None:
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(str(folder))


def _own_storage(t: torch.Tensor) -> torch.Tensor:
    """A tensor that owns exactly its bytes: FSDP's gathered tensors can be views into a padded
    buffer, which safetensors refuses as a shared tensor."""
    t = t.detach().contiguous()
    if t.untyped_storage().nbytes() != t.numel() * t.element_size():
        t = t.clone()
    return t


def save_full_model(state: dict[str, torch.Tensor], config: Any, tokenizer: Any | None,
                    target: Path) -> Path:
    """Safetensors shards of `state` (HF key names) with config, generation config, tokenizer."""
    from huggingface_hub import save_torch_state_dict

    state = {k: _own_storage(v) for k, v in state.items()}
    with staged_dir(target) as folder:
        save_torch_state_dict(state, str(folder), max_shard_size=MAX_SHARD_SIZE)
        cfg = hf_config_dict(config)
        dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
        if dtypes:
            cfg["dtype"] = str(next(iter(dtypes))).removeprefix("torch.")
        (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
        (folder / "generation_config.json").write_text(
            json.dumps(GENERATION_CONFIG, indent=2) + "\n", encoding="utf-8")
        if tokenizer is not None:
            save_tokenizer(tokenizer, folder)
    return Path(target)


def save_adapter(peft_model: Any, tokenizer: Any | None, target: Path) -> Path:
    from osstune.engine.trainer import expert_adapter

    with staged_dir(target) as folder:
        peft_model.save_pretrained(str(folder))
        expert_adapter.save(peft_model, folder)  # packed experts' adapters, if any
        if tokenizer is not None:
            save_tokenizer(tokenizer, folder)
    return Path(target)


def export_run(cfg: RunConfig, lm: torch.nn.Module, config: Any, tokenizer: Any, output: Path,
               is_main: bool, warn: Callable[[str], None]) -> dict[str, str]:
    """The export stage (collective). A failed export is a warning: the checkpoint is intact.

    safetensors and tokenizers report a full disk as a bare `Exception`, hence the wide catch;
    the staging folder is already gone when it lands here.
    """
    try:
        if cfg.method == "lora":
            path = save_adapter(lm, tokenizer, output / "adapter") if is_main else None
            return {"adapter": str(path)} if path else {}
        if cfg.distributed.fsdp:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
            )

            state = get_model_state_dict(causal_lm(lm), options=StateDictOptions(
                full_state_dict=True, cpu_offload=True))
        else:
            state = causal_lm(lm).state_dict()
        path = save_full_model(state, config, tokenizer, output / "export") if is_main else None
        return {"export": str(path)} if path else {}
    except Exception as e:  # noqa: BLE001 - see the docstring
        # merge-sharded-fsdp-weights refuses a LoRA checkpoint (it holds only the adapter); a
        # --resume at the last step skips the loop and exports again.
        retry = "resume the run (--resume)" if cfg.method == "lora" else \
            f"run `osstune merge-sharded-fsdp-weights {output}`"
        warn(f"export failed: {one_line(e)}; the checkpoint is intact, {retry} once there is "
             "room")
        return {}


def one_line(e: BaseException) -> str:
    """The last non-empty line of an error (Rust errors from safetensors span several)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__
