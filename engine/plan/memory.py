"""Peak GPU memory (`device_mem_reserved`) and host RAM of a run, term by term, from its shapes.

Torch-free. Each term is a physical quantity with the few constants below fitted to the project's
measurements (bench/calibration/*.json; tests/test_estimate.py checks every point to +-10 %):

- weights at their dtype; MXFP4-packed experts at 4.25 bits (dequantized one projection at a
  time, in the backward phase below);
- LoRA adapters (fp32: peft upcasts them) with their gradients and two AdamW states;
- FSDP: sharded parameters, gradients and AdamW states (in the parameter dtype), on the GPU or in
  host memory with CPU offload. FSDP's buffers live on CUDA streams of their own, whose cached
  blocks no other stream reuses, so its terms are each stream's peak: gathered parameters (the
  root group with embeddings and lm_head, the running, the prefetched and the kept last layer),
  the root group's reduce-scatter output in the reduce dtype (fp32, or bf16 where
  `distributed.reduce_dtype: auto` picks it) with its cast back, with offload the next layer's
  host-to-GPU copy, with more than one rank a layer of collective buffers; the compute stream
  holds the larger of the activations and the root's gradient with its reduce input (measured on
  the offload proxies: 21.44 GiB reserved for 14.46 allocated with 8 layers and fp32 reduce,
  estimated +6 %; 18.13 for 12.58 with 4 layers and bf16 reduce, estimated -0.5 %);
- CPU offload runs a step's micro-batches as merged passes of up to `OFFLOAD_PASS_TOKENS`
  tokens (engine/trainer/offload.py): the activations are those of a pass;
- activations per token: every checkpointed layer keeps its input (hidden x 2 bytes), every
  unchecked layer keeps what its backward needs (attention + the routed MoE rows), through the
  whole step. On top of them the peak is the larger of two phases that never overlap: the
  chunked loss (one chunk of fp32 logits and their gradient, computed and freed in the forward:
  engine/trainer/ops/loss.py; a full fine-tune's lm_head gradient, accumulated in fp32, then
  scaled and cast in the loss's backward) and a layer's backward (the recompute of one
  checkpointed layer, its MoE part over at most `moe_chunk_tokens` tokens, and with packed
  experts the largest dequantized projection: engine/trainer/ops/moe_lora.py dequantizes one at
  a time); both hold the hidden-state gradient buffers. The terms shown are the larger phase's,
  so they add up;
- a fixed CUDA workspace.
"""

from __future__ import annotations

from dataclasses import dataclass

from osstune.engine.plan.shapes import ModelShapes
from osstune.engine.plan.units import GIB

DEQUANTIZED = "dequantized expert projection (one at a time)"
LM_HEAD_GRAD = "lm_head gradient (fp32, full fine-tune)"
LOSS_CHUNK_TOKENS = 1024  # engine/trainer/ops/loss.py
# Gradient buffers of the backward pass per token and hidden unit (fp32 hidden-state gradients,
# residual and norm gradients); fitted with the per-token activation terms on the 20b H200
# points, bench/calibration/h200-lean-65536.json and h200-lean-131072.json among them.
GRAD_BYTES_PER_HIDDEN = 20
# cuBLAS/compile workspaces inside the caching allocator.
WORKSPACE_GIB = 0.5
# CPU offload: a step's micro-batches run as passes of up to this many tokens (8 rows of 2048);
# engine/trainer/offload.py merges them.
OFFLOAD_PASS_TOKENS = 16384
# Host memory per process: Python, torch, CUDA libraries, tokenizer (a CPU run: no CUDA libraries);
# 3.3 GiB measured: host RSS peak of a packed-experts run, whose load keeps nothing on the host
# (bench/results/2026-11-29-h200-cli-lora-mxfp4-*.events.jsonl).
PROCESS_HOST_GIB = 3.3
CPU_PROCESS_HOST_GIB = 1.5
# CPU offload keeps bf16 parameters, gradients and both AdamW states (8 B/parameter) in pinned
# host memory, whose allocator rounds blocks up to powers of two: 8.4 B/parameter fitted to the
# one-rank proxy with the fused CPU AdamW (64.3 GiB host RSS for 7.74B parameters,
# bench/results/2026-11-29-h200-offload-proxy-8layers.json).
OFFLOAD_HOST_BYTES_PER_PARAM = 8.4
# Loading a pretrained checkpoint without FSDP into bf16 experts (transformers dequantizes the
# MXFP4 checkpoint): host RSS ~ 0.85 x the MXFP4 checkpoint on top of the process (14.1-14.2 GiB
# measured for 20b). Packed experts stream each tensor onto the GPU (engine/trainer/mxfp4.py
# load_packed): nothing is added.
LOAD_HOST_FRACTION = 0.85


@dataclass(frozen=True)
class MemoryInputs:
    shapes: ModelShapes
    dtype_bytes: int
    packed_experts: bool
    lora_params: int  # 0 for a full fine-tune
    fsdp: bool
    offload: bool
    world_size: int
    tokens: int  # per micro-batch: micro_batch_size x sequence_len
    checkpointing: bool
    compiled: bool
    moe_chunk: int | None
    pretrained: bool
    processes_per_node: int
    reduce_bytes: int = 4  # FSDP's reduce dtype: fp32, or the parameter dtype
    pass_tokens: int | None = None  # tokens per forward pass when larger than `tokens` (offload)
    lora_targets: tuple[str, ...] | None = None  # LoRA's attention modules (None: full fine-tune)
    expert_adapters: bool = False  # LoRA on the experts (`lora.target_parameters`)

    @property
    def frozen_experts(self) -> bool:
        return self.lora_targets is not None and not self.expert_adapters


def lora_input_bytes_per_token(s: ModelShapes, lora_targets: tuple[str, ...] | None) -> int:
    """The inputs one layer's attention projections keep for backward, per token. LoRA (frozen
    base weights): peft casts each adapted projection's input to the adapters' fp32 and keeps
    that copy (4 bytes x in_features per targeted module); the frozen base keeps nothing.
    Full fine-tune (None): the base linears keep their bf16 inputs (the normed hidden state
    shared by q/k/v, and o_proj's input)."""
    if lora_targets is None:
        return 2 * (s.hidden + s.attn_width)
    widths = {"q_proj": s.hidden, "k_proj": s.hidden, "v_proj": s.hidden, "o_proj": s.attn_width}
    return sum(4 * widths[t] for t in lora_targets if t in widths)


def attention_bytes_per_token(s: ModelShapes, dtype_bytes: int = 2,
                              lora_targets: tuple[str, ...] | None = None) -> int:
    """What one layer's attention half keeps for backward, per token: the two RMSNorms' fp32
    inputs, the projections' inputs (`lora_input_bytes_per_token`), q, k, v and the attention
    output that flex attention keeps, and the output's fp32 copy that the sink rescale keeps
    (engine/trainer/ops/attention.py). 20b LoRA on q/k/v/o: 108.7 KB; measured ~112 KB per
    unchecked layer on 20,480-token rows whose MoE blocks run chunked (bench/calibration/
    h200-cli-lora-1gpu-auto20480.json)."""
    b = dtype_bytes
    flex = b * (2 * s.attn_width + 2 * s.kv_width) + 4 * s.attn_width
    return 2 * 4 * s.hidden + lora_input_bytes_per_token(s, lora_targets) + flex


def moe_bytes_per_token(s: ModelShapes, dtype_bytes: int = 2, compiled: bool = True,
                        frozen_experts: bool = True) -> int:
    """What one layer's MoE block keeps for backward, per token, over its routed rows: the
    gate/up output (the SwiGLU's backward) and the down output (the routing weights' gradient);
    trainable experts also keep the rows' input and the activation (their weights' gradients);
    uncompiled, three more SwiGLU intermediates."""
    per_row = dtype_bytes * (2 * s.intermediate + s.hidden)
    if not frozen_experts:
        per_row += dtype_bytes * (s.hidden + s.intermediate)
    if not compiled:
        per_row += dtype_bytes * 3 * s.intermediate
    return s.experts_per_tok * per_row


def moe_chunked(tokens: int, moe_chunk: int | None) -> bool:
    """Rows longer than `moe_chunk_tokens` run every MoE block as checkpointed chunks
    (engine/trainer/ops/checkpointing.py chunk_moe): unchecked layers keep only the block's
    input."""
    return moe_chunk is not None and tokens > moe_chunk


def unchecked_kept_bytes_per_token(s: ModelShapes, dtype_bytes: int = 2, compiled: bool = True,
                                   lora_targets: tuple[str, ...] | None = None,
                                   chunked: bool = False, frozen_experts: bool | None = None
                                   ) -> int:
    """What one unchecked layer keeps for backward, per token (`frozen_experts`: by default,
    frozen under LoRA, trained in a full fine-tune)."""
    attn = attention_bytes_per_token(s, dtype_bytes, lora_targets)
    if chunked:  # the chunks' checkpoints keep the block's input
        return attn + dtype_bytes * s.hidden
    frozen = lora_targets is not None if frozen_experts is None else frozen_experts
    return attn + moe_bytes_per_token(s, dtype_bytes, compiled, frozen)


def unchecked_extra_bytes_per_token(s: ModelShapes, dtype_bytes: int = 2, compiled: bool = True,
                                    lora_targets: tuple[str, ...] | None = None,
                                    chunked: bool = False, frozen_experts: bool | None = None
                                    ) -> int:
    """Extra memory per token of one layer left unchecked instead of checkpointed (what
    `unchecked_layers: auto` spends; the engine's fit uses this too)."""
    kept = unchecked_kept_bytes_per_token(s, dtype_bytes, compiled, lora_targets, chunked,
                                          frozen_experts)
    return kept - dtype_bytes * s.hidden


def _gib(value: float) -> float:
    return value / GIB


def weight_terms(m: MemoryInputs) -> dict[str, float]:
    s = m.shapes
    terms: dict[str, float] = {}
    if m.fsdp:
        shard = s.total_params() / m.world_size
        on_gpu = 0.0 if m.offload else 1.0
        terms["sharded parameters"] = _gib(shard * m.dtype_bytes) * on_gpu
        terms["sharded gradients"] = _gib(shard * m.dtype_bytes) * on_gpu
        terms["AdamW states (sharded)"] = _gib(2 * shard * m.dtype_bytes) * on_gpu
        return terms
    terms["weights"] = _gib(s.weight_bytes(m.dtype_bytes, m.packed_experts))
    if m.lora_params:
        terms["adapters + gradients + AdamW"] = _gib(m.lora_params * 16)
    else:  # full fine-tune in one process
        terms["gradients"] = _gib(s.total_params() * m.dtype_bytes)
        terms["AdamW states"] = _gib(2 * s.total_params() * m.dtype_bytes)
    return terms


def fsdp_terms(m: MemoryInputs) -> dict[str, float]:
    """FSDP's buffers, by the CUDA stream whose cache holds them (a stream's cached blocks serve
    no other stream, so reserved memory is about the sum of each stream's own peak)."""
    if not m.fsdp:
        return {}
    s, b, r, w = m.shapes, m.dtype_bytes, m.reduce_bytes, m.world_size
    layer, root = s.layer_params(), s.root_params()
    terms = {
        # all-gather stream: the root group (embeddings, lm_head) stays gathered through the pass,
        # the running layer, the prefetched one and the last layer kept for the backward
        "FSDP gathered parameters (root + 3 layers)": _gib((root + 3 * layer) * b),
        # reduce-scatter stream: the root group's reduced gradient (plus its cast back to the
        # parameter dtype when the reduce runs in fp32), the largest group it reduces
        "FSDP reduce-scatter output (root group)": _gib(
            root * r / w + (root * b / w if r != b else 0)),
    }
    if m.offload:  # the next layer's shards copied in before the all-gather
        terms["FSDP host-to-GPU copy (one layer)"] = _gib(layer * b / w)
    if w > 1:
        terms["FSDP collective buffers"] = _gib(layer * r)
    return terms


def offload_pass_tokens(tokens: int, micro_batches: int) -> int:
    """Tokens of one merged pass (engine/trainer/offload.py merge_micro_batches): as many whole
    micro-batches of the step as fit in OFFLOAD_PASS_TOKENS, at least one."""
    return tokens * max(1, min(micro_batches, OFFLOAD_PASS_TOKENS // max(tokens, 1)))


def activation_terms(m: MemoryInputs, unchecked: int) -> dict[str, float]:
    s, b, t = m.shapes, m.dtype_bytes, m.pass_tokens or m.tokens
    layers = s.layers if not m.checkpointing else min(unchecked, s.layers)
    checked = s.layers - layers
    chunked = moe_chunked(t, m.moe_chunk)
    attn = attention_bytes_per_token(s, b, m.lora_targets)
    moe = moe_bytes_per_token(s, b, m.compiled, m.frozen_experts)
    kept = unchecked_kept_bytes_per_token(s, b, m.compiled, m.lora_targets, chunked,
                                          m.frozen_experts)
    held = {  # through the whole step
        "checkpointed layer inputs": _gib(checked * t * b * s.hidden),
        "unchecked layer activations": _gib(layers * t * kept),
    }
    grads = {"backward gradient buffers": _gib(t * GRAD_BYTES_PER_HIDDEN * s.hidden)}
    loss = {**grads,
            "loss chunk (fp32 logits + grad)": _gib(min(t, LOSS_CHUNK_TOKENS) * s.vocab * 8)}
    if not m.lora_params:  # a full fine-tune trains lm_head: its gradient is accumulated in fp32
        # beside each chunk (with a product in the parameter dtype); the loss's backward then
        # scales it (a second fp32 copy) and casts it, the chunk gone: the larger moment counts
        head = s.vocab * s.hidden
        if loss["loss chunk (fp32 logits + grad)"] > _gib(head * 4):
            loss[LM_HEAD_GRAD] = _gib(head * (4 + b))
        else:
            loss = {**grads, LM_HEAD_GRAD: _gib(head * (4 + 4 + b))}
    layer = dict(grads)
    if checked:
        layer["recompute of one layer"] = _gib(t * attn)
    if checked or chunked:  # the MoE block recomputed, over at most one chunk
        chunk = t if m.moe_chunk is None else min(t, m.moe_chunk)
        layer["MoE chunk (recompute)"] = _gib(chunk * moe)
    if m.packed_experts:
        layer[DEQUANTIZED] = _gib(s.largest_expert_projection() * b)
    phase = layer if sum(layer.values()) > sum(loss.values()) else loss
    return {**held, **phase, "CUDA workspace": WORKSPACE_GIB}


def gpu_terms(m: MemoryInputs, unchecked: int) -> dict[str, float]:
    """Peak reserved memory per GPU, term by term (GiB)."""
    activations = activation_terms(m, unchecked)
    terms = {**weight_terms(m), **fsdp_terms(m), **activations}
    if m.fsdp:
        # The compute stream's cache holds the larger of its two peaks: the layers' activations,
        # or, at the end of backward, the root group's gradient and its reduce input.
        root = _gib(m.shapes.root_params() * (m.dtype_bytes + m.reduce_bytes))
        layer_phase = sum(v for k, v in activations.items() if k != "CUDA workspace")
        if root > layer_phase:
            terms["FSDP root gradient + reduce input (beyond the activations)"] = \
                root - layer_phase
    return terms


def unchecked_layer_gib(m: MemoryInputs) -> float:
    return _gib(m.tokens * unchecked_extra_bytes_per_token(
        m.shapes, m.dtype_bytes, m.compiled, m.lora_targets, moe_chunked(m.tokens, m.moe_chunk),
        m.frozen_experts))


def host_terms(m: MemoryInputs, on_gpu: bool) -> dict[str, float]:
    """Host RAM of the whole node (every process), term by term (GiB)."""
    s = m.shapes
    base = PROCESS_HOST_GIB if on_gpu else CPU_PROCESS_HOST_GIB
    terms = {"processes (Python, torch, CUDA)": base * m.processes_per_node}
    if not on_gpu:  # a CPU run trains in host memory, every process its share
        cpu = MemoryInputs(**{**m.__dict__, "compiled": False})
        per_process = sum(gpu_terms(cpu, 0).values()) - WORKSPACE_GIB
        terms["training in host memory"] = per_process * m.processes_per_node
    if m.offload:
        share = m.processes_per_node / m.world_size
        terms["offloaded parameters, gradients, AdamW"] = _gib(
            s.total_params() * OFFLOAD_HOST_BYTES_PER_PARAM * share)
    if m.pretrained and not m.offload:  # (offloaded states, 10 B/param, outgrow the load)
        if m.fsdp:  # rank 0 loads the whole model in the training dtype, then broadcasts
            terms["checkpoint loading (rank 0, whole model)"] = _gib(
                s.weight_bytes(m.dtype_bytes, False))
        elif not m.packed_experts:
            terms["checkpoint loading"] = _gib(s.mxfp4_checkpoint_bytes()) * LOAD_HOST_FRACTION
    return terms
