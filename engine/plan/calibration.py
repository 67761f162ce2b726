"""Calibration points: measured runs with their config, and the estimate's error on each.

A point is one JSON file (bench/calibration/*.json):

    {"name": ..., "source": "the file or issue the figures come from",
     "preset": "gpt-oss-20b-lora-1gpu", "set": ["training.sequence_len=8192", ...],
     "hardware": {"gpu": "NVIDIA H200", "memory_total_gib": 139.8, "memory_cap_gib": 79.1,
                  "gpus": 1},
     "dataset": {"tokens_total": ..., "examples": ..., "packing_efficiency": ...} | null,
     "measured": {"peak_mem_gib_per_gpu": ..., "tokens_per_s": ..., "host_ram_gib": ...},
     "superseded": {"by": "commit", "why": "...", "measures": ["tokens_per_s"]},  # optional
     "notes": "..."}

Measured figures may be absent (a bench variant that is not an engine setting keeps only what
compares). A point whose code has since changed what it measured stays in the folder with a
`superseded` block naming the commit and why; its `measures` (all of them when the list is
absent) are shown but no longer checked or fitted.
`point_from_events` turns an engine run's events.jsonl into a point, and bench/bench_train.py
writes the `set` list of each measurement that an engine config can repeat.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osstune.engine.plan.config import load_config
from osstune.engine.plan.estimate import DatasetFacts, Estimate, estimate
from osstune.engine.plan.hardware import GpuInfo, HardwareProfile
from osstune.engine.session.events import EventReader, RunEnd, RunStart, StartGpu, Step

MEASURES = {"peak_mem_gib_per_gpu": "peak_mem_gib_per_gpu", "tokens_per_s": "tokens_per_s",
            "host_ram_gib": "host_ram_gib"}


@dataclass
class PointResult:
    name: str
    measure: str
    measured: float
    estimated: float

    @property
    def error(self) -> float:
        return (self.estimated - self.measured) / self.measured


def point_hardware(hw: dict[str, Any]) -> HardwareProfile:
    gpus = [GpuInfo(i, hw["gpu"], float(hw["memory_total_gib"])) for i in range(hw["gpus"])]
    return HardwareProfile(gpus=gpus, ram_gib=4096.0, ram_available_gib=None, cpu_count=64,
                           disk_free_gib=1e6, hf_cache_free_gib=None, driver_version=None,
                           cuda_version=None, gpu_error=None, source="calibration",
                           output_dir="./outputs")


def estimate_point(point: dict[str, Any]) -> Estimate:
    # Every point so far ran rows of sequence_len (before `pack_len: auto`); a point's own `set`
    # may still name its pack_len.
    cfg = load_config(point["preset"], ["training.pack_len=null", *(point.get("set") or [])])
    hw = point["hardware"]
    facts = DatasetFacts(**point["dataset"]) if point.get("dataset") else None
    return estimate(cfg, point_hardware(hw), dataset=facts,
                    memory_cap_gib=hw.get("memory_cap_gib"))


def superseded_measures(point: dict[str, Any]) -> set[str]:
    """The measures of `point` not checked and not fitted: those later code no longer matches
    (its `superseded` block: all measures, or the ones it names)."""
    block = point.get("superseded")
    return set(block.get("measures") or MEASURES) if block else set()


def check_point(point: dict[str, Any], superseded: bool = False) -> list[PointResult]:
    """The estimate against each measure of `point` that still holds (`superseded=True`: against
    the superseded ones instead, for the record)."""
    est = estimate_point(point)
    old = superseded_measures(point)
    out = []
    for key, attr in MEASURES.items():
        measured = (point.get("measured") or {}).get(key)
        if measured is not None and (key in old) == superseded:
            out.append(PointResult(point["name"], key, float(measured),
                                   float(getattr(est, attr) or 0.0)))
    return out


def load_points(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))]


def point_from_events(path: Path, name: str, preset: str, overrides: list[str]) -> dict[str, Any]:
    """A calibration point from an engine run: its events.jsonl has everything a point needs
    (run_start: config, GPUs, dataset statistics; step: memory and tokens/s; run_end: peaks),
    read through the typed events of engine/session/events.py."""
    events = EventReader(path).poll()
    start = next((e for e in events if isinstance(e, RunStart)), None)
    if start is None:
        raise ValueError(f"{path}: no valid run_start event")
    steps = [e for e in events if isinstance(e, Step)]
    end = next((e for e in events if isinstance(e, RunEnd)), None)
    steady = steps[1:] or steps
    gpu = start.gpus[0] if start.gpus else StartGpu(rank=0, name="cpu", memory_total_gib=0)
    stats = start.dataset
    mem = (end.peak_mem_reserved_gib if end else None) or max(
        (g.device_mem_reserved_gib for e in steps for g in e.gpus), default=None)
    return {
        "name": name, "source": str(path), "preset": preset, "set": overrides,
        "hardware": {"gpu": gpu.name, "memory_total_gib": gpu.memory_total_gib,
                     "gpus": start.config["distributed"]["gpus"]},
        "dataset": {k: stats.get(k) for k in ("tokens_total", "examples", "packing_efficiency")},
        "measured": {
            "peak_mem_gib_per_gpu": mem or None,  # a CPU run reserves none: nothing to compare
            # the median: one slow step (a segment grown, a collection) does not move it
            "tokens_per_s": round(statistics.median(e.tokens_per_s for e in steady), 1)
            if steady else None,
            "host_ram_gib": end.host_rss_peak_gib if end else None,
        },
        "notes": "from events.jsonl; tokens/s: the median of the step events after the first "
                 "(steady state: a one-step stall does not move it)",
    }


def bench_results(node: Any) -> list[dict[str, Any]]:
    """Every result of a bench results file: its `results` list, or the results nested in its
    blocks (bench/mxfp4_parts.py writes one block per question: `a_8192.packed`, ...)."""
    if isinstance(node, list):
        return [r for item in node for r in bench_results(item)]
    if not isinstance(node, dict):
        return []
    if "variant" in node and "status" in node and "seq" in node:
        return [node]
    return [r for value in node.values() for r in bench_results(value)]


def points_from_bench(path: Path) -> list[dict[str, Any]]:
    """Calibration points from a bench/bench_train.py results file (the results that carry an
    `engine` block: the `--set` items that repeat them through the engine)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    points = []
    for r in bench_results(data):
        engine = r.get("engine")
        if r.get("status") != "ok" or not engine or not r.get("card_gib"):
            continue  # (no card: a CPU check of the harness, nothing to compare)
        figures = {"tokens_per_s": r.get("tokens_per_s"),
                   "peak_mem_gib_per_gpu": r.get("peak_reserved_gib")}
        hardware = {"gpu": r["device"], "memory_total_gib": r.get("card_gib"), "gpus": 1}
        if r.get("memory_cap_gib"):
            hardware["memory_cap_gib"] = r["memory_cap_gib"]
        points.append({
            "name": f"{path.stem}-{r['variant']}-{r['seq']}",
            "source": f"{path} (variant {r['variant']}, seq {r['seq']})",
            "preset": engine["preset"], "set": engine["set"], "hardware": hardware,
            "dataset": None,
            "measured": {k: v for k, v in figures.items() if k in engine["measures"]},
            "notes": "bench/bench_train.py: full rows of random tokens, batch 1",
        })
    return points
