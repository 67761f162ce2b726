"""torch.compile for GPT-OSS decoder blocks.

`mlp` compiles each MoE block (router, expert grouped GEMMs and the clamped SwiGLU between them):
its elementwise work runs over 4 rows per token of width 5760, which eager launches as a dozen
memory-bound kernels. Measured on gpt-oss-20b shapes (H200, 8192 tokens): +13 % tokens/s over the
uncompiled block. `layer` compiles whole decoder layers (norms, rotary, attention projections
too); it passes the CPU capture test but has not been timed on a GPU yet.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from osstune.engine.trainer.ops.checkpointing import decoder_layers

CompileTarget = Literal["mlp", "layer"]


def compile_blocks(model: nn.Module, target: CompileTarget = "mlp", backend: str = "inductor",
                   ) -> int:
    """Compile the MoE block (or the whole layer) of every decoder layer in place; returns count.

    `backend`: torch.compile backend ("aot_eager" checks capture without code generation).
    """
    if target not in ("mlp", "layer"):
        raise ValueError(f"compile target must be 'mlp' or 'layer', got {target!r}")
    # headroom for the few graphs a run sees (layer types, row lengths, the last short chunk)
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    layers = decoder_layers(model)
    for layer in layers:
        # static shapes (as measured); past the cache limit a new length runs the block uncompiled,
        # which is slower but exact
        (layer.mlp if target == "mlp" else layer).compile(dynamic=False, backend=backend)
    return len(layers)
