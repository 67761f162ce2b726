"""The log stage: a `step` event and one stderr line every `logging_steps` (and at the end)."""

from __future__ import annotations

import math
import time
from typing import Any

from osstune.engine.plan.config import RunConfig
from osstune.engine.trainer import metrics
from osstune.engine.trainer.runtime import Runtime, log
from osstune.engine.trainer.step import StepResult


class StepLogger:
    """Throughput over the span since the previous log; ETA from the steps of this attempt."""

    def __init__(self, cfg: RunConfig, rt: Runtime, emit: Any, total_steps: int, rows: int,
                 start_step: int, elapsed_before: float, flops_per_token: float) -> None:
        self.cfg, self.rt, self.emit = cfg, rt, emit
        self.total_steps, self.rows, self.flops_per_token = total_steps, rows, flops_per_token
        self.start_step, self.elapsed_before = start_step, elapsed_before
        self.started = time.perf_counter()
        self.last_time, self.last_step, self.tokens = self.started, start_step, 0
        self.peak_reserved_gib = 0.0  # over all logged steps and ranks (run_end carries it)

    def elapsed_s(self) -> float:
        return round(self.elapsed_before + time.perf_counter() - self.started, 3)

    def after_step(self, step: int, result: StepResult, stopping: bool) -> None:
        self.tokens += result.real_tokens
        if not math.isfinite(result.loss):
            self.emit("warning", message=f"step {step}: loss is {result.loss}")
        if step % self.cfg.training.logging_steps == 0 or step == self.total_steps or stopping:
            self._log(step, result)

    def _fields(self, step: int, result: StepResult, now: float) -> dict[str, Any]:
        t, rt = self.cfg.training, self.rt
        span = max(now - self.last_time, 1e-9)
        tokens_per_s = self.tokens / span
        per_step = (now - self.started) / max(step - self.start_step, 1)
        gn = float(result.grad_norm)
        rows_done = step * rt.world_size * t.micro_batch_size * t.gradient_accumulation_steps
        fields: dict[str, Any] = dict(
            step=step, total_steps=self.total_steps, epoch=round(rows_done / self.rows, 4),
            loss=round(result.loss, 6), lr=result.lr,
            grad_norm=gn if math.isfinite(gn) else None,
            trained_tokens=result.trained_tokens, tokens_per_s=round(tokens_per_s, 2),
            elapsed_s=round(self.elapsed_before + now - self.started, 3),
            eta_s=round(per_step * (self.total_steps - step), 1),
            gpus=metrics.gather_memory(rt.device, rt.rank, rt.world_size),
            steps_per_s=round((step - self.last_step) / span, 4),
        )
        mfu = metrics.mfu(tokens_per_s, self.flops_per_token, rt.device, rt.world_size)
        if mfu is not None:
            fields["mfu"] = round(mfu, 4)
        return fields

    def _log(self, step: int, result: StepResult) -> None:
        now = time.perf_counter()
        fields = self._fields(step, result, now)
        self.emit("step", **fields)
        mem = max(g["device_mem_reserved_gib"] for g in fields["gpus"])
        self.peak_reserved_gib = max(self.peak_reserved_gib, mem)
        if self.rt.is_main:
            on_gpu = self.rt.device.type == "cuda"  # a CPU run has no device memory to report
            log(f"step {step}/{self.total_steps} loss {result.loss:.4f} lr {result.lr:.3g} "
                f"grad_norm {float(result.grad_norm):.3g} "
                f"{fields['tokens_per_s']:.0f} tok/s" + (f" mem {mem:.2f} GiB" if on_gpu else ""))
        self.last_time, self.last_step, self.tokens = now, step, 0
