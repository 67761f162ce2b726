"""The setup stage: the model (built on the meta device, sharded, each rank filling its own
shard), its levers, and the optimizer with its schedule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from osstune.engine.plan.config import RunConfig
from osstune.engine.trainer.levers import LeverPlan, apply_levers
from osstune.engine.trainer.model import (
    ModelInfo,
    active_params,
    build_meta_model,
    count_params,
    load_pretrained,
    materialize_random,
    reset_rotary,
    torch_dtype,
)
from osstune.engine.trainer.objective import CausalLMObjective, causal_lm
from osstune.engine.trainer.optim import build_optimizer, build_scheduler
from osstune.engine.trainer.runtime import Runtime


@dataclass
class Built:
    lm: torch.nn.Module  # GptOssForCausalLM, or a PeftModel around it
    objective: CausalLMObjective  # the module the loop calls (the FSDP root when sharded)
    config: Any
    info: ModelInfo


@dataclass
class Optimization:
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any


def _initial_model(cfg: RunConfig, rt: Runtime, config: Any) -> tuple[torch.nn.Module, Any]:
    """(model, its config): on the meta device when it is sharded or random, else loaded."""
    if cfg.model.init == "random" or cfg.distributed.fsdp:
        lm = build_meta_model(config, torch_dtype(cfg.model.dtype))
        if cfg.model.experts == "mxfp4":
            from osstune.engine.trainer.mxfp4 import pack_experts

            pack_experts(lm)
        return lm, config
    lm = load_pretrained(cfg, config, rt.device)
    return lm, lm.config


def _place(cfg: RunConfig, rt: Runtime, lm: torch.nn.Module, objective: CausalLMObjective
           ) -> None:
    """Shard (FSDP), then give every parameter its values on its device."""
    fsdp = cfg.distributed.fsdp
    # With CPU offload the sharded parameters live in host memory; FSDP copies each layer in.
    param_device = torch.device("cpu") if cfg.distributed.cpu_offload else rt.device
    if fsdp:
        from torch.distributed.device_mesh import init_device_mesh

        from osstune.engine.trainer.fsdp import shard_model

        mesh = init_device_mesh(rt.device.type, (rt.world_size,))
        shard_model(objective, causal_lm(lm), torch_dtype(cfg.model.dtype),
                    cfg.distributed.cpu_offload, mesh,
                    cfg.distributed.reduces_in_param_dtype)
    if cfg.model.init == "random":
        materialize_random(causal_lm(lm), param_device, cfg.training.seed, rt.rank,
                           fill_device=rt.device)
        if cfg.model.experts == "mxfp4":
            from osstune.engine.trainer.mxfp4 import fill_random_packed

            fill_random_packed(causal_lm(lm), cfg.training.seed)
    elif fsdp:
        from osstune.engine.trainer.sharded_load import load_local_shards

        # Each rank reads only its shard's slices of the checkpoint (no broadcast, no full copy).
        causal_lm(lm).to_empty(device=param_device)
        reset_rotary(causal_lm(lm), rt.device)
        load_local_shards(causal_lm(lm), cfg.model.id, rt.device)
    if not fsdp:
        objective.to(rt.device)


def build(cfg: RunConfig, rt: Runtime, config: Any, levers: LeverPlan) -> Built:
    lm, config = _initial_model(cfg, rt, config)
    if cfg.method == "lora":
        from osstune.engine.trainer.lora import apply_lora

        lm = apply_lora(lm, cfg.lora)
    else:
        lm.requires_grad_(True)
    applied = apply_levers(lm, levers, stage="structure")  # before sharding
    objective = CausalLMObjective(lm, torch_dtype(cfg.model.dtype))
    _place(cfg, rt, lm, objective)
    applied += apply_levers(lm, levers, stage="placed")  # compile, MoE chunks

    total, trainable = count_params(objective)
    info = ModelInfo(id=cfg.model.id, init=cfg.model.init, total_params=total,
                     trainable_params=trainable, active_params=active_params(config, total),
                     attn_implementation=config._attn_implementation,
                     experts_implementation=str(getattr(causal_lm(lm).config,
                                                        "_experts_implementation", "eager")),
                     dtype=cfg.model.dtype, levers=applied)
    return Built(lm, objective, config, info)


def optimization(cfg: RunConfig, rt: Runtime, built: Built, total_steps: int) -> Optimization:
    params = [p for p in built.objective.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, cfg.training, rt.device,
                                states_on_cpu=cfg.distributed.cpu_offload)
    return Optimization(params, optimizer, build_scheduler(optimizer, cfg.training, total_steps))
