"""Fakes and fixed inputs for the wizard tests: a fixed hardware profile and a scripted engine."""

from __future__ import annotations

import threading
from collections import deque
from pathlib import Path
from typing import Any

from osstune.engine.plan.hardware import GpuInfo, HardwareProfile
from osstune.engine.session.events import EventWriter


def h100_profile(gpus: int = 1) -> HardwareProfile:
    return HardwareProfile(
        gpus=[
            GpuInfo(
                index=i,
                name="NVIDIA H100 80GB HBM3",
                memory_total_gib=79.65,
                memory_used_gib=0.5,
                utilization_pct=0.0,
                compute_capability="9.0",
                nvlink=gpus > 1,
            )
            for i in range(gpus)
        ],
        ram_gib=225.0,
        ram_available_gib=200.0,
        cpu_count=26,
        disk_free_gib=880.0,
        hf_cache_free_gib=None,
        driver_version="550.54.15",
        cuda_version="12.4",
        gpu_error=None,
        source="tests/profiles (fixed)",
        output_dir="./outputs",
    )


def cpu_profile() -> HardwareProfile:
    return HardwareProfile(
        gpus=[],
        ram_gib=16.0,
        ram_available_gib=12.0,
        cpu_count=2,
        disk_free_gib=100.0,
        hf_cache_free_gib=None,
        driver_version=None,
        cuda_version=None,
        gpu_error="no NVIDIA driver (NVML library not found)",
        source="fixed CPU profile",
        output_dir="./outputs",
    )


def step_event(step: int, total: int, gpus: int, loss: float | None = None) -> dict[str, Any]:
    return dict(
        step=step,
        total_steps=total,
        epoch=step / total,
        loss=loss or 4.0 / step,
        lr=1e-3,
        grad_norm=1.0,
        trained_tokens=512 * step,
        tokens_per_s=1000.0,
        elapsed_s=float(step),
        eta_s=float(total - step),
        gpus=[
            {
                "rank": r,
                "device_mem_reserved_gib": 20.0 + r + step % 3,
                "mem_allocated_gib": 10.0,
                "mem_active_gib": 9.0,
            }
            for r in range(gpus)
        ],
    )


class ScriptedProcess:
    """Stands in for engine.session.launch.TrainingProcess: the test writes the events file
    itself."""

    def __init__(self, output_dir: Path, gpus: int = 1, finish_on_stop: bool = True) -> None:
        self.writer = EventWriter(output_dir)
        self.gpus = gpus
        self.finish_on_stop = finish_on_stop
        self.exit: int | None = None
        self.stderr: deque[str] = deque(["engine: starting"], maxlen=400)  # like TrainingProcess
        self.stopped = threading.Event()
        self.stop_calls = 0
        self.killed = False

    def run_start(self, total: int) -> None:
        self.writer.emit(
            "run_start",
            config={},
            world_size=self.gpus,
            model={},
            dataset={},
            total_steps=total,
            gpus=[
                {"rank": r, "name": "NVIDIA H100 80GB HBM3", "memory_total_gib": 79.65}
                for r in range(self.gpus)
            ],
        )

    def step(self, step: int, total: int, loss: float | None = None) -> None:
        self.writer.emit("step", **step_event(step, total, self.gpus, loss))
        self.stderr.append(f"step {step}/{total}")

    def finish(self, status: str = "completed", code: int = 0) -> None:
        self.writer.emit("run_end", status=status, outputs={"export": "out/export"})
        self.writer.close()
        self.exit = code

    # the TrainingProcess surface
    def poll(self) -> int | None:
        return self.exit

    def stderr_tail(self, n: int = 50) -> list[str]:
        return list(self.stderr)[-n:]

    def stop(self) -> None:
        self.stop_calls += 1
        self.stopped.set()
        if self.exit is None and self.finish_on_stop:
            self.finish("stopped", 0)

    def kill(self) -> None:
        self.killed = True
        self.exit = -9


class ScriptedLauncher:
    """A session Launcher that hands out one ScriptedProcess and records how it was called.

    Its pre-flight finds nothing wrong unless `preflight` (the real one, say) is given."""

    def __init__(self, gpus: int = 1, finish_on_stop: bool = True, preflight=None) -> None:  # noqa: ANN001
        self.gpus = gpus
        self.finish_on_stop = finish_on_stop
        self.calls: list[tuple[str, bool, bool]] = []
        self.process: ScriptedProcess | None = None
        self.started = threading.Event()
        self._preflight = preflight

    def preflight(self, cfg, output_dir: Path, *, resume: bool, force: bool, profile):  # noqa: ANN001, ANN201
        if self._preflight is None:
            return []
        return self._preflight(cfg, output_dir, resume=resume, force=force, profile=profile)

    def spawn(self, cfg, output_dir: Path, *, resume: bool, force: bool, lock) -> ScriptedProcess:  # noqa: ANN001
        self.calls.append((cfg.output.dir, resume, force))
        self.process = ScriptedProcess(Path(output_dir), self.gpus, self.finish_on_stop)
        self.started.set()
        return self.process


def run_async(test):  # noqa: ANN001, ANN201
    """Run an async test with asyncio.run (no async plugin is among the dev dependencies)."""
    import asyncio
    import functools

    @functools.wraps(test)
    def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        return asyncio.run(test(*args, **kwargs))

    return wrapper


async def wait_until(pilot, predicate, timeout: float = 30.0, what: str = "condition") -> None:  # noqa: ANN001
    """Let the app run until `predicate()` holds (workers and subprocesses take real time)."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await pilot.pause(0.05)


def screen_name(app) -> str:  # noqa: ANN001
    return type(app.screen).__name__


async def to_presets(pilot) -> None:  # noqa: ANN001
    """From the start to the Preset screen, once the hardware probe has answered."""
    await wait_until(pilot, lambda: pilot.app.plan.recommendation is not None, what="the probe")
    await pilot.press("enter")
    await wait_until(pilot, lambda: screen_name(pilot.app) == "PresetScreen")


async def open_training(pilot, preset: str, config=None, launcher=None):  # noqa: ANN001, ANN201
    """The Training screen for `preset` (its config, or `config`), pushed once the probe has
    answered and the preset is the chosen one (and, given `launcher`, once it started the run);
    returns the screen."""
    from osstune.engine.plan.config import load_config
    from osstune.tui.screens.training import TrainingScreen

    app = pilot.app
    await wait_until(pilot, lambda: app.plan.recommendation is not None, what="the probe")
    app.plan.choose_preset(preset)
    await app.push_screen(TrainingScreen(config or load_config(preset)))
    if launcher is not None:
        await wait_until(pilot, launcher.started.is_set, what="the launch")
    return app.screen
