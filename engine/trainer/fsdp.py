"""FSDP2 sharding: one `fully_shard` group per decoder layer, then the root.

Parameters keep the model dtype (bf16 for the real models: the presets size memory that way);
gradients are reduced in fp32. With `cpu_offload` the sharded parameters, gradients and optimizer
states live in pinned host memory and each layer is copied in just before it runs.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.fsdp import (
    CPUOffloadPolicy,
    MixedPrecisionPolicy,
    OffloadPolicy,
    fully_shard,
)

from osstune.engine.trainer.ops.checkpointing import decoder_layers


def shard_model(root: nn.Module, lm: nn.Module, param_dtype: torch.dtype, cpu_offload: bool,
                mesh: object | None = None) -> nn.Module:
    """Shard `lm`'s decoder layers, then `root` (which owns embeddings, final norm and lm_head)."""
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    offload = (CPUOffloadPolicy(pin_memory=torch.cuda.is_available()) if cpu_offload
               else OffloadPolicy())
    kwargs = {"mp_policy": mp, "offload_policy": offload}
    if mesh is not None:
        kwargs["mesh"] = mesh
    layers = decoder_layers(lm)
    for i, layer in enumerate(layers):
        # The last layer's parameters are needed again first in backward: keep them gathered.
        fully_shard(layer, reshard_after_forward=i < len(layers) - 1, **kwargs)
    fully_shard(root, **kwargs)
    return root
