"""Run under torchrun by tests/test_sharded_load.py: build the model the engine's way (FSDP,
`init: pretrained`, per-rank loading), then write the full state (rank 0) and what each rank read.

    python -m torch.distributed.run --nproc-per-node N tests/sharded_load_worker.py RUN.yaml OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed as dist
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from osstune.engine.plan.config import load_config
from osstune.engine.trainer import train
from osstune.engine.trainer.levers import plan_levers
from osstune.engine.trainer.model import load_model_config
from osstune.engine.trainer.objective import causal_lm
from osstune.engine.trainer.sharded_load import load_local_shards


def main(config_path: str, out: str) -> None:
    cfg = load_config(config_path)
    rt = train.runtime_for(cfg)
    train.init_process_group(rt, fsdp=True)
    config = load_model_config(cfg, rt.device)
    built = train.build(cfg, rt, config, plan_levers(cfg, rt.device, rt.world_size))
    lm = causal_lm(built.lm)
    stats = load_local_shards(lm, cfg.model.id, rt.device)  # again, to count what one rank reads
    local = sum(p.to_local().numel() for p in lm.parameters())
    Path(out, f"rank{rt.rank}.json").write_text(json.dumps(
        {"elements_read": stats.elements_read, "local_elements": local}))
    state = get_model_state_dict(lm, options=StateDictOptions(full_state_dict=True,
                                                              cpu_offload=True))
    if rt.is_main:
        save_file({k: v.contiguous() for k, v in state.items()}, str(Path(out, "full.safetensors")))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
