"""The training engine: `python -m osstune.engine.trainer.train --config RUN.yaml [--resume [PATH]]
[--output DIR]`.

Runs alone (one process, CPU or one GPU) or under torchrun (one process per GPU; FSDP2). Rank 0
appends events to OUTPUT/events.jsonl (engine/session/events.py documents them) and a one-line
summary per logged step to stderr; nothing else crosses to the front-ends.

A recipe in stages, each in a module of its own (read `Recipe` top to bottom):
- setup: arguments, pre-flight, process group (runtime.py), tokenizer and data (batches.py),
  model on the meta device, sharded, levers, optimizer and schedule (setup.py), resume;
- step: micro-batches, one loss normalisation per optimizer step (step.py);
- log: a `step` event and a stderr line (steplog.py);
- save: the checkpoint manager decides when, checks the disk and writes (checkpointer.py);
- finish: export (export.py), `run_end`.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from osstune.engine.data.dataset import DatasetError
from osstune.engine.data.tokenizer import TokenizerError
from osstune.engine.plan.config import ConfigError, RunConfig, load_config
from osstune.engine.plan.flops import train_flops_per_token
from osstune.engine.plan.packlen import PackLen
from osstune.engine.plan.preflight import PreflightError, preflight
from osstune.engine.plan.units import plural
from osstune.engine.session.events import EVENTS_FILE, EXIT_USER_ERROR, EventWriter
from osstune.engine.session.lock import RunLocked, claim_for_engine
from osstune.engine.session.run_folder import failed_attempt, holds_run
from osstune.engine.trainer import allocator, metrics
from osstune.engine.trainer import checkpoint as ckpt
from osstune.engine.trainer.batches import (  # noqa: F401 - PackedRow, collate: tests
    PackedRow,
    RowStream,
    collate,
    step_batches,
    total_steps_for,
    training_rows,
)
from osstune.engine.trainer.checkpointer import CheckpointManager, Resumed, SaveError
from osstune.engine.trainer.evaluate import Evaluator
from osstune.engine.trainer.export import export_run
from osstune.engine.trainer.levers import fit_unchecked_after_first_step, plan_levers
from osstune.engine.trainer.model import ModelError, load_model_config
from osstune.engine.trainer.offload import merge_micro_batches
from osstune.engine.trainer.runtime import (  # noqa: F401 - Runtime: tests
    Runtime,
    StopRequest,
    barrier,
    init_process_group,
    log,
    runtime_for,
    tune_threads,
)
from osstune.engine.trainer.setup import Built, build, optimization  # noqa: F401 - build: tests
from osstune.engine.trainer.step import forward_backward, train_step  # noqa: F401 - tests
from osstune.engine.trainer.steplog import StepLogger
from osstune.engine.trainer.tracking import open_event_writer

EXIT_OUT_OF_MEMORY = 3
EXIT_INTERNAL = 1

HINTS = {
    "config": "fix the key named in the message (osstune presets shows valid recipes)",
    "dataset": "check dataset.path and its format (`osstune inspect` shows what is trained)",
    "tokenizer": "set model.tokenizer to a local folder with tokenizer.json",
    "model": "give model.id as a local folder with config.json and weights, or a GPT-OSS hub id",
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


class Run:
    """State shared by the stages and the error path (the writer exists on rank 0 only)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.writer: EventWriter | None = None
        self.rt: Runtime | None = None
        self.output: Path | None = None
        self.lock: Any = None  # the output folder's lock, held for the process's life

    def emit(self, event_type: str, /, **fields: Any) -> None:
        if self.writer is not None:
            self.writer.emit(event_type, **fields)

    def warn(self, message: str) -> None:
        self.emit("warning", message=message)

    def resume_command(self) -> str:
        """The `osstune run` line that continues this run (the CLI accepts it as written)."""
        return f"osstune run {self.args.config} --output {self.output} --resume"


def prepare_output(output: Path, rt: Runtime, resume: bool, force: bool) -> None:
    """Without --resume, --force starts over: old events and checkpoints go (rank 0 only); so
    do those of an attempt that left nothing to keep (it failed before its first save)."""
    if rt.is_main:
        output.mkdir(parents=True, exist_ok=True)
        if not resume and (force or failed_attempt(output)):
            (output / EVENTS_FILE).unlink(missing_ok=True)
            shutil.rmtree(ckpt.checkpoints_root(output), ignore_errors=True)
    barrier(rt)


class Recipe:
    """One training run: `setup()`, then `train()` (step, log, save), then `finish()`."""

    def __init__(self, args: argparse.Namespace, stop: StopRequest, run: Run) -> None:
        self.args, self.stop, self.run = args, stop, run

    # ------------------------------------------------------------------------- setup

    def setup(self) -> None:
        args, run = self.args, self.run
        self.cfg = cfg = load_config(args.config)
        run.output = self.output = Path(args.output or cfg.output.dir)
        self.alloc_conf = allocator.apply(cfg.distributed.cpu_offload)  # before CUDA starts
        run.rt = self.rt = rt = runtime_for(cfg)
        if rt.is_main:  # before anything in the folder is read for resume, deleted or written
            run.lock = claim_for_engine(self.output)
            if (stale := run.lock.stale_warning()) is not None:
                log(f"warning: {stale}")
        tune_threads(cfg, rt)
        # Everything that can refuse cheaply, before anything heavy is loaded.
        self.saver = CheckpointManager(cfg, self.output, rt, enabled=not args.no_save,
                                       resume_command=run.resume_command())
        self.resumed: Resumed | None = self.saver.resume_point(args.resume)
        waived = preflight(cfg, self.output, resume=self.resumed is not None, force=args.force)
        if rt.world_size != cfg.distributed.world_size:
            raise ConfigError(f"{args.config}: distributed asks for {cfg.distributed.world_size} "
                              f"process(es), launched with {rt.world_size}")
        init_process_group(rt, cfg.distributed.fsdp)
        prepare_output(self.output, rt, self.resumed is not None, args.force)
        if rt.is_main:
            run.writer = open_event_writer(self.output, cfg)
        for problem in waived:
            run.warn(f"pre-flight (forced): {problem}")
        if cfg.model.trust_remote_code:
            run.warn(f"model.trust_remote_code: true runs Python code shipped with "
                     f"{cfg.model.id}; use it only for a model you trust")
        self._setup_data_and_model(cfg, rt)

    def _setup_data_and_model(self, cfg: RunConfig, rt: Runtime) -> None:
        torch.manual_seed(cfg.training.seed)
        random.seed(cfg.training.seed)
        model_config = load_model_config(cfg, rt.device)  # an unknown model fails here, cheaply
        resumed_len = self.resumed.state.pack_len if self.resumed is not None else None
        rows, val_rows, self.data_stats, self.tokenizer = training_rows(cfg, rt, resumed_len)
        self.pack = PackLen.from_dict(self.data_stats.pop("pack_len"))
        self.saver.pack_len = self.pack.length
        self.stream = RowStream(rows, cfg.training.seed, cfg.dataset.shuffle)
        self.evaluator = Evaluator(val_rows, cfg.training.eval_steps, cfg.training.micro_batch_size,
                                   rt.rank, rt.world_size, rt.device, collate)
        self.total_steps = total_steps_for(cfg, len(rows), rt.world_size)
        self.levers = plan_levers(cfg, rt.device, rt.world_size)
        for problem in self.levers.warnings:
            self.run.warn(problem)
        self.built = build(cfg, rt, model_config, self.levers)
        self.opt = optimization(cfg, rt, self.built, self.total_steps)
        self.step, elapsed_before = 0, 0.0
        self.fitted_unchecked: int | None = None  # run_end carries it (calibration points)
        if self.resumed is not None:
            self.saver.load(self.resumed, self.built.objective, self.opt)
            self.step, elapsed_before = self.resumed.state.step, self.resumed.state.elapsed_s
            if self.resumed.state.total_steps != self.total_steps:
                self.run.warn(f"resumed from a run planned for {self.resumed.state.total_steps} "
                              f"steps; this run has {self.total_steps} (the schedule follows "
                              "the new total)")
        self.logger = StepLogger(cfg, rt, self.run.emit, self.total_steps, len(self.stream),
                                 self.step, elapsed_before,
                                 train_flops_per_token(self.built.config.to_dict(),
                                                       self.pack.length))

    def announce(self) -> None:
        cfg, rt, info = self.cfg, self.rt, self.built.info
        resumed_from = str(self.resumed.folder) if self.resumed else None
        self.run.emit("run_start", config=cfg.model_dump(mode="json"), world_size=rt.world_size,
                      gpus=metrics.gather_devices(rt.device, rt.rank, rt.world_size),
                      model=info.as_dict(), dataset=self.data_stats,
                      total_steps=self.total_steps, start_step=self.step,
                      output_dir=str(self.output), resumed_from=resumed_from,
                      cuda_alloc_conf=self.alloc_conf,
                      pack_len=self.pack.as_dict())
        log(f"{info.total_params / 1e6:.1f}M parameters ({info.trainable_params / 1e6:.1f}M "
            f"trained), {plural(len(self.stream), 'row')}, {plural(self.total_steps, 'step')}, "
            "world size "
            f"{rt.world_size}")
        log(f"pack_len: {self.pack.detail}")
        if info.levers:
            log("levers: " + "; ".join(info.levers))
        if rt.device.type == "cuda":
            log(f"CUDA allocator: {self.alloc_conf['conf']} (set by {self.alloc_conf['set_by']})")

    # ------------------------------------------------------------------------- the loop

    def train(self) -> str:
        """Steps until the total or a stop request; returns the run's end status."""
        cfg, rt, built = self.cfg, self.rt, self.built
        t = cfg.training
        metrics.reset_peaks(rt.device)
        built.objective.train()
        stopping = False
        while self.step < self.total_steps and not stopping:
            batches = step_batches(self.stream, self.step, rt, cfg)
            if cfg.distributed.cpu_offload:
                batches = merge_micro_batches(batches)  # one parameter round trip per pass
            result = train_step(built.objective, self.opt, batches, rt, t.max_grad_norm,
                                built.config.router_aux_loss_coef, self.stop.requested)
            self.step += 1
            fitted = fit_unchecked_after_first_step(built.lm, self.levers,
                                                    t.micro_batch_size * self.pack.length)
            if fitted is not None:
                self.fitted_unchecked = fitted
                log(f"unchecked_layers auto: {fitted} of {built.config.num_hidden_layers} "
                    "layers keep their activations (fitted to the card after the first step)")
            stopping = result.stop_requested and self.step < self.total_steps
            self.logger.after_step(self.step, result, stopping)
            if not stopping and self.evaluator.due(self.step, self.total_steps):
                self.evaluate()
            if self.saver.due(self.step, self.total_steps, stopping):
                saved = self.saver.save(self.step, self.total_steps, self.logger.elapsed_s(),
                                        built.objective, self.opt)
                self.run.emit("checkpoint", path=str(saved), step=self.step)
        return "stopped" if stopping else "completed"

    def evaluate(self) -> None:
        result = self.evaluator.evaluate(self.built.objective, self.step)
        self.run.emit("eval", **result)
        log(f"eval step {self.step}: loss {result['loss']:.4f} on {plural(result['rows'], 'row')}")

    # ------------------------------------------------------------------------- finish

    def finish(self, status: str) -> None:
        outputs: dict[str, str] = {"events": str(self.output / EVENTS_FILE)}
        if self.saver.last_saved is not None:
            outputs["checkpoint"] = str(self.saver.last_saved)
        if status == "completed" and self.cfg.output.export and not self.args.no_save:
            outputs.update(export_run(self.cfg, self.built.lm, self.built.config,
                                      self.tokenizer, self.output, self.rt.is_main,
                                      self.run.warn))
        self.run.emit("run_end", status=status, outputs=outputs, step=self.step,
                      peak_mem_reserved_gib=round(self.logger.peak_reserved_gib, 3),
                      host_rss_peak_gib=host_rss_peak_gib(),
                      unchecked_layers=self.fitted_unchecked)
        # Leave together: a rank that tears its process group down while rank 0 is still
        # writing the export can take the others down with it (seen with 8 gloo ranks).
        barrier(self.rt)
        if self.rt.is_main:
            log(f"run {status} at step {self.step}/{self.total_steps}; outputs: "
                + ", ".join(f"{k}={v}" for k, v in outputs.items()))


def host_rss_peak_gib() -> float:
    """This process's peak resident memory (rank 0's on a multi-rank run)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 3)


def train(args: argparse.Namespace, stop: StopRequest, run: Run) -> int:
    recipe = Recipe(args, stop, run)
    recipe.setup()
    recipe.announce()
    recipe.finish(recipe.train())
    return 0


# ----------------------------------------------------------------------------- entry


def fail(run: Run, kind: str, message: str, hint: str | None = None) -> None:
    hint = hint or HINTS[kind]
    refused_resume = kind == "checkpoint" and run.args.resume is not None
    # the folder is ours already; a folder holding an earlier run keeps that run's log as it is
    refused_here = kind == "preflight" and run.lock is not None and (
        run.args.resume is not None or not holds_run(run.output))
    if run.writer is None and run.output is not None and (run.rt is None or run.rt.is_main) \
            and (refused_resume or refused_here):
        # Refusals before the writer opens (--resume, the engine's own pre-flight) still reach
        # the front-end following the events as what they are (nothing else is touched).
        run.writer = EventWriter(run.output)
    run.emit("error", kind=kind, message=message, hint=hint)
    run.emit("run_end", status="failed", outputs={})
    rank = run.rt.rank if run.rt else 0
    if rank == 0 or kind == "internal":
        with contextlib.suppress(OSError):
            print(f"osstune: error: {message}\n  hint: {hint}", file=sys.stderr, flush=True)


def checkpoint_hint(run: Run, message: str) -> str:
    """A refused checkpoint: set it aside, then the CLI line that resumes from the one before."""
    folder = message.removeprefix("checkpoint ").split(": ", 1)[0]
    if run.output is None or not message.startswith("checkpoint "):
        return "start over in a new folder with --output, or --resume a finished checkpoint"
    return (f"move {folder} out of {ckpt.checkpoints_root(run.output)}, then "
            f"`{run.resume_command()}` continues from the checkpoint before it (or start "
            "over with --output NEW_DIR)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop = StopRequest().install()
    run = Run(args)
    try:
        return train(args, stop, run)
    except SaveError as e:
        fail(run, e.kind, str(e), e.hint)
        return EXIT_USER_ERROR
    except ckpt.CheckpointError as e:
        fail(run, "checkpoint", str(e), checkpoint_hint(run, str(e)))
        return EXIT_USER_ERROR
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
