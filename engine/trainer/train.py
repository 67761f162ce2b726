"""The training engine: `python -m engine.trainer.train --config RUN.yaml [--resume [PATH]]
[--output DIR]`.

Runs alone (one process, CPU or one GPU) or under torchrun (one process per GPU; FSDP2). Rank 0
appends events to OUTPUT/events.jsonl (engine/events.py documents them) and a one-line summary
per logged step to stderr; nothing else crosses to the front-ends.

Read top to bottom: arguments -> pre-flight -> process group -> tokenizer and data -> model
(meta device, sharded, each rank materialises its own shard) -> optimizer and schedule -> resume
-> loop (micro-batches, one loss normalisation per optimizer step) -> checkpoint -> export.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from osstune.engine.data.dataset import PAD_ID, DatasetError, PackedRow
from osstune.engine.data.dataset_mix import prepare_training_data, to_rows
from osstune.engine.data.tokenizer import TokenizerError, load_tokenizer
from osstune.engine.plan.config import ConfigError, RunConfig, load_config
from osstune.engine.plan.flops import train_flops_per_token
from osstune.engine.plan.preflight import PreflightError, preflight, uses_gpus
from osstune.engine.session.events import EVENTS_FILE, EventWriter
from osstune.engine.session.lock import RunLocked, claim_for_engine
from osstune.engine.trainer import checkpoint as ckpt
from osstune.engine.trainer import metrics
from osstune.engine.trainer.evaluate import Evaluator
from osstune.engine.trainer.levers import (
    LeverPlan,
    apply_block_levers,
    enable_checkpointing,
    fit_unchecked_after_first_step,
    plan_levers,
)
from osstune.engine.trainer.model import (
    ModelError,
    ModelInfo,
    active_params,
    build_meta_model,
    count_params,
    load_model_config,
    load_pretrained,
    materialize_random,
    reset_rotary,
    torch_dtype,
)
from osstune.engine.trainer.objective import (
    IGNORE_INDEX,
    CausalLMObjective,
    causal_lm,
    shift_labels,
)
from osstune.engine.trainer.offload import merge_micro_batches
from osstune.engine.trainer.optim import build_optimizer, build_scheduler, clip_gradients
from osstune.engine.trainer.tracking import open_event_writer

EXIT_USER_ERROR = 2
EXIT_OUT_OF_MEMORY = 3
EXIT_INTERNAL = 1

HINTS = {
    "config": "fix the key named in the message (osstune presets shows valid recipes)",
    "dataset": "check dataset.path and its format (`osstune inspect` shows what is trained)",
    "tokenizer": "set model.tokenizer to a local folder with tokenizer.json",
    "model": "give model.id as a local folder with config.json and weights, or a GPT-OSS hub id",
    "checkpoint": "resume from another checkpoint (--resume PATH), or start over with --output",
    "preflight": "pick a preset that fits this machine (osstune presets), or --force to run anyway",
    "out_of_memory": "lower training.sequence_len or training.micro_batch_size, keep "
                     "training.gradient_checkpointing on, set distributed.cpu_offload: true, or "
                     "pick a preset for more GPUs (osstune presets)",
    "interrupted": "continue from the last checkpoint with --resume",
    "output_locked": "wait for the live run, stop it, or pick another output directory",
    "internal": "this is a bug in osstune; the log above has the traceback",
}
USER_ERRORS: dict[type[BaseException], str] = {
    ConfigError: "config", DatasetError: "dataset", TokenizerError: "tokenizer",
    ModelError: "model", ckpt.CheckpointError: "checkpoint", PreflightError: "preflight",
    RunLocked: "output_locked",
}


# ----------------------------------------------------------------------------- process setup


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m osstune.engine.trainer.train",
                                description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="run config YAML (or a preset name)")
    p.add_argument("--output", help="output directory (default: output.dir of the config)")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CHECKPOINT",
                   help="continue from the latest checkpoint in OUTPUT, or from CHECKPOINT")
    p.add_argument("--force", action="store_true", help="run despite pre-flight refusals")
    p.add_argument("--no-save", action="store_true",
                   help="benchmarks: no checkpoints and no export (nothing written but events)")
    return p.parse_args(argv)


class StopRequest:
    """SIGINT/SIGTERM: finish the current step, checkpoint, end with status `stopped`.

    A second signal interrupts at once.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def install(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log(f"{signal.Signals(signum).name}: stopping after this step (again to abort)")


@dataclass
class Runtime:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def runtime_for(cfg: RunConfig) -> Runtime:
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if uses_gpus(cfg) and torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return Runtime(rank, world, local, device)


def init_process_group(rt: Runtime, fsdp: bool = False) -> None:
    """FSDP needs a group also on one process; started without torchrun, it gets a local one."""
    if rt.world_size == 1 and not fsdp:
        return
    # gloo beside NCCL: CPU-offloaded shards (grad-norm reduction, checkpoint planning).
    backend = "cuda:nccl,cpu:gloo" if rt.device.type == "cuda" else "gloo"
    if "MASTER_ADDR" not in os.environ and rt.world_size == 1:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    else:
        dist.init_process_group(backend)


def barrier(rt: Runtime) -> None:
    if rt.world_size > 1:
        dist.barrier()


def keep_freed_memory() -> None:
    """CPU runs: stop glibc from returning big freed blocks to the OS after every step.

    Each step allocates and frees the same large tensors; by default each one is a fresh mmap
    whose pages the kernel zeroes again (half the wall time of the tiny demo went to page faults).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 1 << 30)
        libc.mallopt(m_trim_threshold, 1 << 31)
    except (OSError, AttributeError):
        pass


def log(message: str) -> None:
    """One line to stderr, from rank 0 only (the front-ends show stderr as the log tail)."""
    if os.environ.get("RANK", "0") == "0":
        with contextlib.suppress(OSError):  # a closed stderr never ends a run
            print(f"[engine] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- data


class RowStream:
    """Rows in training order across epochs: position p -> row, independent of the world size.

    Epoch 0 keeps the packer's (seeded) order; later epochs reshuffle with seed + epoch. The
    position of the next row is the only data state a checkpoint needs: step x rows per step.
    """

    def __init__(self, rows: list[PackedRow], seed: int, shuffle: bool) -> None:
        if not rows:
            raise DatasetError("no training rows after packing")
        self.rows, self.seed, self.shuffle = rows, seed, shuffle
        self._orders: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            order = list(range(len(self.rows)))
            if epoch and self.shuffle:
                random.Random(self.seed + epoch).shuffle(order)
            self._orders[epoch] = order
        return self._orders[epoch]

    def row(self, position: int) -> PackedRow:
        epoch, index = divmod(position, len(self.rows))
        return self.rows[self._order(epoch)[index]]


@dataclass
class MicroBatch:
    input_ids: torch.Tensor
    position_ids: torch.Tensor
    targets: torch.Tensor
    real_tokens: int  # not padding
    trained_tokens: int


def _real_length(row: PackedRow) -> int:
    n = len(row.input_ids)
    while n and row.input_ids[n - 1] == PAD_ID and row.labels[n - 1] == IGNORE_INDEX:
        n -= 1
    return n


def collate(rows: list[PackedRow]) -> MicroBatch:
    """Pad to the longest row; padding is its own segment (positions restart), never trained."""
    width = max(len(r.input_ids) for r in rows)
    ids, labels, pos = [], [], []
    for r in rows:
        pad = width - len(r.input_ids)
        ids.append(r.input_ids + [PAD_ID] * pad)
        labels.append(r.labels + [IGNORE_INDEX] * pad)
        pos.append(r.position_ids + list(range(pad)))
    input_ids = torch.tensor(ids, dtype=torch.long)
    position_ids = torch.tensor(pos, dtype=torch.long)
    targets = shift_labels(torch.tensor(labels, dtype=torch.long), position_ids)
    return MicroBatch(input_ids, position_ids, targets,
                      real_tokens=sum(_real_length(r) for r in rows),
                      trained_tokens=int((targets != IGNORE_INDEX).sum()))


def micro_batch(stream: RowStream, step: int, micro: int, rt: Runtime, cfg: RunConfig
                ) -> MicroBatch:
    t = cfg.training
    first = ((step * t.gradient_accumulation_steps + micro) * rt.world_size + rt.rank) * \
        t.micro_batch_size
    return collate([stream.row(first + j) for j in range(t.micro_batch_size)])


def training_rows(cfg: RunConfig, rt: Runtime
                  ) -> tuple[list[PackedRow], list[PackedRow], dict, Any]:
    """(rows, validation rows, dataset stats, tokenizer or None): rank 0 tokenizes and packs,
    then broadcasts.

    The other ranks never load the tokenizer or read the dataset (8 ranks each loading a
    200k-token vocabulary and re-rendering the data cost more than the broadcast).
    """
    payload: list[Any] = [None, None, None]
    tokenizer = None
    failure: Exception | None = None
    if rt.is_main:
        try:
            tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.id)
            data = prepare_training_data(cfg, tokenizer)
            t, packing = cfg.training, cfg.dataset.packing
            rows = to_rows(data.train, t.sequence_len, t.seed, packing)
            val_rows = to_rows(data.validation, t.sequence_len, t.seed, packing)
            stats = data.stats.as_dict()
            stats["rows"] = len(rows)
            payload = [rows, val_rows, stats]
        except (DatasetError, TokenizerError) as e:
            failure = e  # every rank raises it, so no rank waits for the others forever
    if rt.world_size > 1:
        box: list[Any] = [failure, payload]
        dist.broadcast_object_list(box, src=0)
        failure, payload = box
    if failure is not None:
        raise failure
    return payload[0], payload[1], payload[2], tokenizer


def total_steps_for(cfg: RunConfig, n_rows: int, world_size: int) -> int:
    t = cfg.training
    if t.max_steps:
        return t.max_steps
    per_step = world_size * t.micro_batch_size * t.gradient_accumulation_steps
    return max(1, math.ceil(t.num_epochs * n_rows / per_step))


# ----------------------------------------------------------------------------- model


@dataclass
class Built:
    lm: torch.nn.Module  # GptOssForCausalLM, or a PeftModel around it
    objective: CausalLMObjective  # the module the loop calls (the FSDP root when sharded)
    config: Any
    info: ModelInfo


def build(cfg: RunConfig, rt: Runtime, config: Any, levers: LeverPlan) -> Built:
    dtype = torch_dtype(cfg.model.dtype)
    fsdp = cfg.distributed.fsdp
    lora = cfg.method == "lora"
    # With CPU offload the sharded parameters live in host memory; FSDP copies each layer in.
    param_device = torch.device("cpu") if cfg.distributed.cpu_offload else rt.device

    if cfg.model.init == "random" or fsdp:
        lm = build_meta_model(config, dtype)
        if cfg.model.experts == "mxfp4":
            from osstune.engine.trainer.mxfp4 import pack_experts

            pack_experts(lm)
    else:
        lm = load_pretrained(cfg, config, rt.device)
        config = lm.config
    if lora:
        from osstune.engine.trainer.lora import apply_lora

        lm = apply_lora(lm, cfg.lora)
    else:
        lm.requires_grad_(True)
    applied = [line for line in [enable_checkpointing(lm, levers)] if line]
    objective = CausalLMObjective(lm, dtype)

    if fsdp:
        from torch.distributed.device_mesh import init_device_mesh

        from osstune.engine.trainer.fsdp import shard_model

        mesh = init_device_mesh(rt.device.type, (rt.world_size,))
        shard_model(objective, causal_lm(lm), dtype, cfg.distributed.cpu_offload, mesh)
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
    applied += apply_block_levers(lm, levers)  # compile, MoE chunks: on the placed model

    total, trainable = count_params(objective)
    info = ModelInfo(id=cfg.model.id, init=cfg.model.init, total_params=total,
                     trainable_params=trainable, active_params=active_params(config, total),
                     attn_implementation=config._attn_implementation,
                     experts_implementation=str(getattr(causal_lm(lm).config,
                                                        "_experts_implementation", "eager")),
                     dtype=cfg.model.dtype, levers=applied)
    return Built(lm, objective, config, info)


# ----------------------------------------------------------------------------- one step


def forward_backward(objective: torch.nn.Module, batches: list[MicroBatch], rt: Runtime,
                     aux_coef: float = 0.0) -> tuple[torch.Tensor, int, int]:
    """Accumulate the gradients of one optimizer step; returns (local loss sum, trained tokens
    of the step over all ranks, real tokens of the step over all ranks).

    One normaliser for the whole step: the trained tokens of all micro-batches on all ranks, so
    the gradient equals that of one large batch (not the mean of per-micro-batch means).
    """
    counts = torch.tensor([sum(b.trained_tokens for b in batches),
                           sum(b.real_tokens for b in batches)], dtype=torch.float64)
    if rt.world_size > 1:
        counts = counts.to(rt.device)
        dist.all_reduce(counts)
    step_trained, step_tokens = (int(x) for x in counts.tolist())
    # FSDP averages gradients over ranks; multiplying by the world size turns that average into
    # the sum that the global token count expects.
    scale = rt.world_size / max(step_trained, 1)
    loss_sum = torch.zeros((), dtype=torch.float32, device=rt.device)
    # FSDP reduce-scatters after every micro-batch (no no-sync accumulation): skipping it would
    # keep unsharded gradients of the whole model on every GPU until the last micro-batch.
    for b in batches:
        part, _, aux = objective(b.input_ids.to(rt.device), b.position_ids.to(rt.device),
                                 b.targets.to(rt.device))
        loss = part * scale
        if aux is not None:
            loss = loss + aux_coef * aux / len(batches)
        loss.backward()
        loss_sum += part.detach()
    return loss_sum, step_trained, step_tokens


# ----------------------------------------------------------------------------- run


class Run:
    """State shared by the loop and the error path (the writer exists on rank 0 only)."""

    def __init__(self) -> None:
        self.writer: EventWriter | None = None
        self.rt: Runtime | None = None
        self.lock: Any = None  # the output folder's lock, held for the process's life

    def emit(self, event_type: str, /, **fields: Any) -> None:
        if self.writer is not None:
            self.writer.emit(event_type, **fields)


def prepare_output(output: Path, rt: Runtime, resume: bool, force: bool) -> None:
    """--force without --resume starts over: old events and checkpoints go (rank 0 only)."""
    if rt.is_main:
        output.mkdir(parents=True, exist_ok=True)
        if force and not resume:
            (output / EVENTS_FILE).unlink(missing_ok=True)
            shutil.rmtree(ckpt.checkpoints_root(output), ignore_errors=True)
    barrier(rt)


def resolve_resume(arg: str | None, output: Path) -> Path | None:
    if arg is None:
        return None
    if arg == "latest":
        found = ckpt.latest_checkpoint(output)
        if found is None:
            raise ckpt.CheckpointError(
                f"--resume: no finished checkpoint in {ckpt.checkpoints_root(output)}")
        return found
    return Path(arg)


def train(args: argparse.Namespace, stop: StopRequest, run: Run) -> int:
    cfg = load_config(args.config)
    output = Path(args.output or cfg.output.dir)
    rt = runtime_for(cfg)
    run.rt = rt
    if rt.is_main:  # before anything in the folder is read for resume, deleted or written
        run.lock = claim_for_engine(output)
        if (stale := run.lock.stale_warning()) is not None:
            log(f"warning: {stale}")
    if rt.device.type == "cpu":
        keep_freed_memory()
    if cfg.distributed.cpu_offload and os.environ.get("OMP_NUM_THREADS") == "1":
        # torchrun's default of one thread would leave the offloaded optimizer step on one core.
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // max(
            int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)))
    # Everything that can refuse cheaply, before anything heavy is loaded.
    resume_dir = resolve_resume(args.resume, output)
    resumed = ckpt.read_trainer_state(resume_dir) if resume_dir else None
    if resumed and resumed.method != cfg.method:
        raise ckpt.CheckpointError(f"checkpoint {resume_dir}: saved by a {resumed.method} run, "
                                   f"this config is {cfg.method}")
    waived = preflight(cfg, output, resume=resume_dir is not None, force=args.force)
    if rt.world_size != cfg.distributed.world_size:
        raise ConfigError(f"{args.config}: distributed asks for {cfg.distributed.world_size} "
                          f"process(es), launched with {rt.world_size}")
    if rt.world_size > 1 and not cfg.distributed.fsdp:
        raise ConfigError(f"{args.config}: distributed.fsdp: more than one process needs FSDP")
    if cfg.method == "lora" and cfg.distributed.fsdp:
        raise ConfigError(f"{args.config}: method lora runs on one process (distributed.fsdp: "
                          "false, gpus <= 1)")

    init_process_group(rt, cfg.distributed.fsdp)
    prepare_output(output, rt, resume_dir is not None, args.force)
    if rt.is_main:
        run.writer = open_event_writer(output, cfg)
    for problem in waived:
        run.emit("warning", message=f"pre-flight (forced): {problem}")

    torch.manual_seed(cfg.training.seed)
    random.seed(cfg.training.seed)
    model_config = load_model_config(cfg, rt.device)  # an unknown model fails here, cheaply
    rows, val_rows, data_stats, tokenizer = training_rows(cfg, rt)
    stream = RowStream(rows, cfg.training.seed, cfg.dataset.shuffle)
    total_steps = total_steps_for(cfg, len(rows), rt.world_size)

    levers = plan_levers(cfg, rt.device, rt.world_size)
    for problem in levers.warnings:
        run.emit("warning", message=problem)
    built = build(cfg, rt, model_config, levers)
    objective, lora = built.objective, cfg.method == "lora"
    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, cfg.training, rt.device,
                                states_on_cpu=cfg.distributed.cpu_offload)
    scheduler = build_scheduler(optimizer, cfg.training, total_steps)

    step, elapsed_before = 0, 0.0
    if resume_dir is not None and resumed is not None:
        ckpt.load_checkpoint(resume_dir, objective, optimizer, lora)
        scheduler.load_state_dict(resumed.scheduler)
        step, elapsed_before = resumed.step, resumed.elapsed_s
        if resumed.total_steps != total_steps:
            run.emit("warning", message=f"resumed from a run planned for {resumed.total_steps} "
                     f"steps; this run has {total_steps} (the schedule follows the new total)")
        log(f"resumed from {resume_dir} at step {step}")

    devices = metrics.gather_devices(rt.device, rt.rank, rt.world_size)
    t = cfg.training
    flops_token = train_flops_per_token(built.config.to_dict(), t.sequence_len)
    run.emit("run_start", config=cfg.model_dump(mode="json"), world_size=rt.world_size,
             gpus=devices, model=built.info.as_dict(), dataset=data_stats,
             total_steps=total_steps, start_step=step, output_dir=str(output),
             resumed_from=str(resume_dir) if resume_dir else None)
    info = built.info
    log(f"{info.total_params / 1e6:.1f}M parameters ({info.trainable_params / 1e6:.1f}M trained), "
        f"{len(rows)} rows, {total_steps} steps, world size {rt.world_size}")
    if info.levers:
        log("levers: " + "; ".join(info.levers))

    metrics.reset_peaks(rt.device)
    objective.train()
    accum = t.gradient_accumulation_steps
    max_norm = t.max_grad_norm if t.max_grad_norm else float("inf")
    started = time.perf_counter()
    last_log_time, last_log_step, tokens_since_log = started, step, 0
    stopping = False
    last_saved: Path | None = None
    peak_reserved, fitted_unchecked = 0.0, None  # run_end carries them (calibration points)
    evaluator = Evaluator(val_rows, t.eval_steps, t.micro_batch_size, rt.rank, rt.world_size,
                          rt.device, collate)

    while step < total_steps and not stopping:
        batches = [micro_batch(stream, step, m, rt, cfg) for m in range(accum)]
        if cfg.distributed.cpu_offload:
            batches = merge_micro_batches(batches)  # one parameter round trip per pass
        loss_sum, step_trained, step_tokens = forward_backward(
            objective, batches, rt, built.config.router_aux_loss_coef)
        grad_norm = clip_gradients(params, max_norm, optimizer)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        fitted = fit_unchecked_after_first_step(built.lm, levers,
                                                t.micro_batch_size * t.sequence_len)
        if fitted is not None:
            fitted_unchecked = fitted
            log(f"unchecked_layers auto: {fitted} of {built.config.num_hidden_layers} layers "
                "keep their activations (fitted to the card after the first step)")
        tokens_since_log += step_tokens

        # Loss and the stop flag travel together: one collective, one CPU-GPU sync per step.
        shared = torch.stack([loss_sum.to(torch.float64),
                              torch.tensor(float(stop.requested), dtype=torch.float64,
                                           device=rt.device)])
        if rt.world_size > 1:
            dist.all_reduce(shared)
        total_loss, stop_votes = shared.tolist()
        stopping = stop_votes > 0 and step < total_steps
        step_loss = total_loss / step_trained if step_trained else 0.0
        if not math.isfinite(step_loss):
            run.emit("warning", message=f"step {step}: loss is {step_loss}")

        if step % t.logging_steps == 0 or step == total_steps or stopping:
            now = time.perf_counter()
            gpus = metrics.gather_memory(rt.device, rt.rank, rt.world_size)
            span = max(now - last_log_time, 1e-9)
            tokens_per_s = tokens_since_log / span
            per_step = (now - started) / max(step - (resumed.step if resumed else 0), 1)
            gn = float(grad_norm)
            fields = dict(
                step=step, total_steps=total_steps,
                epoch=round(step * rt.world_size * t.micro_batch_size * accum / len(rows), 4),
                loss=round(step_loss, 6), lr=lr, grad_norm=gn if math.isfinite(gn) else None,
                trained_tokens=step_trained, tokens_per_s=round(tokens_per_s, 2),
                elapsed_s=round(elapsed_before + now - started, 3),
                eta_s=round(per_step * (total_steps - step), 1), gpus=gpus,
                steps_per_s=round((step - last_log_step) / span, 4),
            )
            mfu = metrics.mfu(tokens_per_s, flops_token, rt.device, rt.world_size)
            if mfu is not None:
                fields["mfu"] = round(mfu, 4)
            run.emit("step", **fields)
            peak_reserved = max([peak_reserved, *(g["device_mem_reserved_gib"] for g in gpus)])
            if rt.is_main:
                mem = max(g["device_mem_reserved_gib"] for g in gpus)
                log(f"step {step}/{total_steps} loss {step_loss:.4f} lr {lr:.3g} "
                    f"grad_norm {gn:.3g} {tokens_per_s:.0f} tok/s mem {mem:.2f} GiB")
            last_log_time, last_log_step, tokens_since_log = now, step, 0

        if not stopping and evaluator.due(step, total_steps):
            result = evaluator.evaluate(objective, step)
            run.emit("eval", **result)
            log(f"eval step {step}: loss {result['loss']:.4f} on {result['rows']} rows")

        if not args.no_save and (stopping or step == total_steps or (
                cfg.output.save_steps and step % cfg.output.save_steps == 0)):
            state = ckpt.TrainerState(
                step=step, total_steps=total_steps, world_size=rt.world_size, method=cfg.method,
                elapsed_s=round(elapsed_before + time.perf_counter() - started, 3),
                scheduler=scheduler.state_dict())
            last_saved = ckpt.save_checkpoint(output, objective, optimizer, state,
                                              cfg.output.keep_last, lora)
            run.emit("checkpoint", path=str(last_saved), step=step)

    outputs: dict[str, str] = {"events": str(output / EVENTS_FILE)}
    if last_saved is not None:
        outputs["checkpoint"] = str(last_saved)
    status = "stopped" if stopping else "completed"
    if status == "completed" and cfg.output.export and not args.no_save:
        outputs.update(export(cfg, built, tokenizer, output, rt, run))
    run.emit("run_end", status=status, outputs=outputs, step=step,
             peak_mem_reserved_gib=round(peak_reserved, 3), host_rss_peak_gib=host_rss_peak_gib(),
             unchecked_layers=fitted_unchecked)
    # Leave together: a rank that tears its process group down while rank 0 is still writing the
    # export can take the others down with it (seen with 8 gloo ranks).
    barrier(rt)
    if rt.is_main:
        log(f"run {status} at step {step}/{total_steps}; outputs: "
            + ", ".join(f"{k}={v}" for k, v in outputs.items()))
    return 0


def host_rss_peak_gib() -> float:
    """This process's peak resident memory (rank 0's on a multi-rank run)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 3)


def export(cfg: RunConfig, built: Built, tokenizer: Any, output: Path, rt: Runtime,
           run: Run) -> dict[str, str]:
    """Collective. A failed export (e.g. disk full) is a warning: the checkpoint is intact."""
    from osstune.engine.trainer.export import save_adapter, save_full_model

    try:
        if cfg.method == "lora":
            path = save_adapter(built.lm, tokenizer, output / "adapter") if rt.is_main else None
            return {"adapter": str(path)} if path else {}
        if cfg.distributed.fsdp:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
            )

            state = get_model_state_dict(causal_lm(built.lm), options=StateDictOptions(
                full_state_dict=True, cpu_offload=True))
        else:
            state = causal_lm(built.lm).state_dict()
        path = save_full_model(state, built.config, tokenizer, output / "export") \
            if rt.is_main else None
        return {"export": str(path)} if path else {}
    except OSError as e:
        # merge-sharded-fsdp-weights refuses a LoRA checkpoint (it holds only the adapter); a
        # --resume at the last step skips the loop and exports again.
        retry = "resume the run (--resume)" if cfg.method == "lora" else \
            f"run `osstune merge-sharded-fsdp-weights {output}`"
        run.emit("warning", message=f"export failed: {e}; the checkpoint is intact, {retry} "
                 "once there is room")
        return {}


# ----------------------------------------------------------------------------- entry


def fail(run: Run, kind: str, message: str) -> None:
    hint = HINTS[kind]
    run.emit("error", kind=kind, message=message, hint=hint)
    run.emit("run_end", status="failed", outputs={})
    rank = run.rt.rank if run.rt else 0
    if rank == 0 or kind == "internal":
        with contextlib.suppress(OSError):
            print(f"osstune: error: {message}\n  hint: {hint}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Read when CUDA initialises (later, in runtime_for). FSDP's gather/scatter buffers on their
    # own streams left 27 GiB reserved for 12 GiB allocated on the 2-GPU offload run without it.
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    stop = StopRequest().install()
    run = Run()
    try:
        return train(args, stop, run)
    except tuple(USER_ERRORS) as e:
        fail(run, next(kind for cls, kind in USER_ERRORS.items() if isinstance(e, cls)), str(e))
        return EXIT_USER_ERROR
    except torch.OutOfMemoryError as e:
        fail(run, "out_of_memory", f"out of GPU memory: {str(e).splitlines()[0]}")
        return EXIT_OUT_OF_MEMORY
    except KeyboardInterrupt:
        fail(run, "interrupted", "interrupted twice: aborted without a new checkpoint")
        return 130
    except Exception as e:
        traceback.print_exc()
        fail(run, "internal", f"{type(e).__name__}: {e}")
        return EXIT_INTERNAL
    finally:
        stop.uninstall()
        if run.writer is not None:
            run.writer.close()
        if run.lock is not None:
            run.lock.release()
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
