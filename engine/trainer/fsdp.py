"""FSDP2 sharding: one `fully_shard` group per decoder layer, then the root.

Parameters keep the model dtype (bf16 for the real models: the presets size memory that way);
gradients are reduced in fp32, except on offloaded runs of one or two ranks (`reduce_dtype`).
With `cpu_offload` the sharded parameters, gradients and optimizer states live in pinned host
memory and each layer is copied in just before it runs.
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


def reduce_dtype(param_dtype: torch.dtype, in_param_dtype: bool) -> torch.dtype:
    """The dtype FSDP reduce-scatters gradients in: fp32, or `param_dtype` where that is exact
    (`DistributedConfig.reduces_in_param_dtype`: `distributed.reduce_dtype: auto` on an
    offloaded run of one or two ranks).

    The reduced gradient is cast back to the parameters' dtype either way (the host gradient of
    an offloaded run is bf16). With one rank nothing is summed; with two, a bf16 all-reduce
    (NCCL averages in fp32 and rounds once) gives the same bits as the fp32 reduce-then-cast. So
    there the fp32 buffers buy nothing and cost much: FSDP builds each group's fp32 reduce input
    on the compute stream and its output plus a bf16 cast on the reduce-scatter stream, whose
    cached blocks the compute stream cannot reuse (the root group's embeddings and lm_head
    alone: 4.6 GB of fp32 input, 4.6 GB of output and 2.3 GB of cast for gpt-oss-20b on one
    rank). More ranks keep fp32: a ring of bf16 partial sums rounds once per hop.
    """
    return param_dtype if in_param_dtype else torch.float32


def shard_model(root: nn.Module, lm: nn.Module, param_dtype: torch.dtype, cpu_offload: bool,
                mesh: object | None = None, reduce_in_param_dtype: bool = False) -> nn.Module:
    """Shard `lm`'s decoder layers, then `root` (which owns embeddings, final norm and lm_head)."""
    mp = MixedPrecisionPolicy(param_dtype=param_dtype,
                              reduce_dtype=reduce_dtype(param_dtype, reduce_in_param_dtype))
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
