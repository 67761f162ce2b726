"""Offline merges into OUTPUT/merged: a LoRA adapter into its base, or the last sharded (DCP)
checkpoint of a full fine-tune into Hugging Face safetensors (when the automatic export failed,
e.g. on a full disk). One process, host memory, no GPU needed.
"""

from __future__ import annotations

from pathlib import Path

import torch

from osstune.engine.data.tokenizer import load_tokenizer
from osstune.engine.plan.config import RunConfig
from osstune.engine.session.events import EXIT_USER_ERROR
from osstune.engine.session.run_folder import recoverable_checkpoints
from osstune.engine.trainer import checkpoint as ckpt
from osstune.engine.trainer.export import one_line, save_full_model
from osstune.engine.trainer.model import (
    build_meta_model,
    load_model_config,
    load_pretrained,
    materialize_random,
    reset_rotary,
    torch_dtype,
)
from osstune.engine.trainer.objective import CausalLMObjective

MERGED_DIR = "merged"
CPU = torch.device("cpu")


class MergeError(RuntimeError):
    """Nothing to merge, or the inputs do not belong together; names the folder."""


def base_model(cfg: RunConfig) -> torch.nn.Module:
    config = load_model_config(cfg, CPU)
    if cfg.model.init == "random":
        # Same seed, same generator stream as the single-process training run.
        model = build_meta_model(config, torch_dtype(cfg.model.dtype))
        materialize_random(model, CPU, cfg.training.seed, 0)
        return model
    return load_pretrained(cfg, config, CPU)


def merge_lora(cfg: RunConfig, output_dir: Path, adapter_dir: Path | None = None,
               dtype: str = "auto") -> Path:
    """Base + adapter into OUTPUT/merged. Packed experts (`model.experts: mxfp4`) stay MXFP4 in
    the hub's layout (`dtype: auto`) or are dequantized into a bf16 export (`dtype: bf16`)."""
    from osstune.engine.trainer.lora import load_adapter

    adapter = Path(adapter_dir or Path(output_dir) / "adapter")
    if not (adapter / "adapter_config.json").is_file():
        raise MergeError(f"{adapter}: no LoRA adapter here (adapter_config.json missing)")
    merged = load_adapter(base_model(cfg), adapter).merge_and_unload()
    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.id)
    target = Path(output_dir) / MERGED_DIR
    if cfg.model.experts == "mxfp4":
        from osstune.engine.trainer import expert_adapter
        from osstune.engine.trainer.mxfp4 import packed_state, save_hub_model

        has_experts = expert_adapter.load(merged, adapter)
        if dtype == "auto" and not has_experts:
            return save_hub_model(merged, tokenizer, target)
        if dtype == "auto":
            raise MergeError(f"{adapter}: the run trained expert adapters, and W + BA is not an "
                             "MXFP4 weight: merge with --dtype bf16")
        state = packed_state(merged, dequantized=True)
        state.update(expert_adapter.merged_expert_weights(merged))
        state = {k: v for k, v in state.items() if ".osstune_lora." not in k}
        return _write(state, merged.config, tokenizer, target)
    return _write(merged.state_dict(), merged.config, tokenizer, target)


def merge_sharded_checkpoint(cfg: RunConfig, output_dir: Path,
                             checkpoint: Path | None = None) -> Path:
    folder = checkpoint or _newest_checkpoint(Path(output_dir))
    if folder is None:
        raise MergeError(f"{ckpt.checkpoints_root(Path(output_dir))}: no finished checkpoint")
    state = ckpt.read_trainer_state(folder)
    if state.method != "full":
        raise MergeError(f"checkpoint {folder}: a {state.method} run's checkpoint holds only the "
                         "adapter; use `osstune merge-lora`")
    config = load_model_config(cfg, CPU)
    lm = build_meta_model(config, torch_dtype(cfg.model.dtype))
    objective = CausalLMObjective(lm, torch_dtype(cfg.model.dtype))
    lm.to_empty(device=CPU)
    reset_rotary(lm, CPU)
    ckpt.load_model_weights(folder, objective)
    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.id)
    return _write(lm.state_dict(), config, tokenizer, Path(output_dir) / MERGED_DIR)


def _newest_checkpoint(output_dir: Path) -> Path | None:
    """The newest finished checkpoint; a newer finished one that a kill left mid-publish is not
    merged in its place silently, nor renamed here (a live run may be publishing it): said."""
    folder = ckpt.latest_checkpoint(output_dir)
    newer = [p for p in recoverable_checkpoints(output_dir)
             if folder is None or p.name.split("-", 1)[1] > folder.name]
    if newer:
        raise MergeError(f"{newer[-1]}: a newer finished checkpoint that a stopped run left "
                         "mid-publish; `osstune run ... --resume` puts it back under its name "
                         "(or give the checkpoint folder to merge)")
    return folder


def _write(state: dict[str, torch.Tensor], config: object, tokenizer: object, target: Path
           ) -> Path:
    """save_full_model, with a full disk as one line: safetensors and tokenizers raise a bare
    `Exception` (the staging folder is removed before it gets here)."""
    try:
        return save_full_model(state, config, tokenizer, target)
    except Exception as e:  # noqa: BLE001 - see the docstring
        raise MergeError(f"cannot write {target}: {one_line(e)}") from None


def main(argv: list[str] | None = None) -> int:
    """`python -m osstune.engine.trainer.merge {lora|sharded} CONFIG OUTPUT_DIR`: the merge
    commands' process (the CLI never imports torch). Prints the merged folder on stdout, or one
    `osstune: error: ...` line on stderr with exit 1."""
    import argparse
    import sys

    from osstune.engine.data.tokenizer import TokenizerError
    from osstune.engine.plan.config import ConfigError, load_config
    from osstune.engine.trainer.model import ModelError

    p = argparse.ArgumentParser(prog="python -m osstune.engine.trainer.merge")
    p.add_argument("kind", choices=("lora", "sharded"))
    p.add_argument("config")
    p.add_argument("output_dir", type=Path)
    p.add_argument("--dtype", choices=("auto", "bf16"), default="auto",
                   help="lora: auto keeps packed MXFP4 experts packed; bf16 dequantizes them")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config)
        if args.kind == "lora":
            merged = merge_lora(cfg, args.output_dir, dtype=args.dtype)
        else:
            merged = merge_sharded_checkpoint(cfg, args.output_dir)
    except (MergeError, ckpt.CheckpointError, ModelError, TokenizerError, ConfigError) as e:
        print(f"osstune: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as e:
        print(f"osstune: error: cannot write {args.output_dir / MERGED_DIR}: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(merged)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
